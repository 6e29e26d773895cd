"""The agent: a policy (prompt -> action through the sampler), where its weights start (a stage, another run,
imported weights), and the episode runner that evaluation, exploration and RL share."""

from ee_jax.agent.episodes import Episode, run_episodes
from ee_jax.agent.policy import Policy, load_policy
from ee_jax.agent.weights import initial_params, pretrained_spec

__all__ = ["Episode", "Policy", "initial_params", "load_policy", "pretrained_spec", "run_episodes"]
