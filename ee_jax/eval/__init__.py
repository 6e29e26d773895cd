"""Evaluation: the policy acting on fixed held-out task lists, and world-model metrics (``ee-jax eval``).

See ``docs/evaluation.md`` for what is measured and the file formats.
"""

from ee_jax.agent.episodes import run_episodes
from ee_jax.eval.evaluate import evaluate_policy, read_episodes, write_episodes
from ee_jax.eval.metrics import pass_at_k, summarize_episodes, wilson_interval
from ee_jax.eval.world_model import world_model_metrics

__all__ = ["evaluate_policy", "pass_at_k", "read_episodes", "run_episodes", "summarize_episodes",
           "wilson_interval", "world_model_metrics", "write_episodes"]
