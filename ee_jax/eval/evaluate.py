"""``evaluate_policy``: episodes on each held-out split plus world-model metrics, written under ``eval/``.

Files (relative to ``out_dir``, normally the run directory)::

    eval/STAGE.json           the summary: settings, per-split metrics, world-model metrics
    eval/STAGE/SPLIT.jsonl    one episode per line (its transcript included)

Both are written atomically (a temporary file renamed into place), so a reader never sees half a file
and an interrupted evaluation leaves the previous one intact.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import os

from ee_jax.agent.episodes import eval_difficulty, run_episodes
from ee_jax.config import Config
from ee_jax.envs.registry import env_class
from ee_jax.eval.metrics import summarize_episodes
from ee_jax.eval.world_model import world_model_metrics
from ee_jax.files import atomic_write_text
from ee_jax.rundir import RunDir


def _atomic_write(path: str, text: str) -> None:
    import jax

    if jax.process_index() == 0:  # every host computes the same episodes; one writes them
        atomic_write_text(path, text)


def write_episodes(path: str, episodes: list[dict]) -> None:
    """``episodes`` as JSON lines at ``path`` (atomically)."""
    _atomic_write(path, "".join(json.dumps(ep, ensure_ascii=False) + "\n" for ep in episodes))


def read_episodes(path: str) -> list[dict]:
    """The episodes of an ``eval/STAGE/SPLIT.jsonl`` file."""
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def _difficulty(cfg: Config) -> int:
    d = eval_difficulty(cfg)
    return env_class(cfg.env.name).default_difficulty if d is None else d


def evaluate_policy(policy, cfg: Config, *, stage: str, out_dir: str, splits: list[str] | None = None,
                    n_tasks: int | None = None, progress: bool = True, sampler=None) -> dict:
    """Evaluate ``policy`` on ``splits`` (default ``eval.splits``) and write ``out_dir/eval/STAGE*``.

    Args:
        policy: the :class:`~ee_jax.agent.policy.Policy`; its ``source`` is recorded.
        cfg: the run's config (``eval``, ``env``, ``prompt``, ``seed``; ``run_dir/data`` for the
            world-model metrics).
        stage: names the files (``il``, ``iwm``, ``sr``, ``init``, ...).
        out_dir: where ``eval/`` goes.
        n_tasks: tasks per split (default ``eval.tasks``).
        sampler: a Sampler to reuse (default ``policy.sampler()``, built once for all splits).

    Returns:
        The summary written to ``eval/STAGE.json``.
    """
    if not stage or os.sep in stage or stage in (".", ".."):
        raise ValueError(f"stage {stage!r} cannot name an evaluation file")
    splits = list(cfg.eval.splits if splits is None else splits)
    sampler = policy.sampler() if sampler is None else sampler
    result: dict = {"stage": stage, "source": policy.source, "seed": cfg.seed, "env": cfg.env.name,
                    "difficulty": _difficulty(cfg),
                    "settings": {**dataclasses.asdict(cfg.eval), "tasks": cfg.eval.tasks if n_tasks is None
                                 else int(n_tasks), "splits": splits, "max_steps": cfg.env.max_steps or None,
                                 "env_options": dict(cfg.env.options), "prompt": dataclasses.asdict(cfg.prompt)},
                    "splits": {}}
    for split in splits:
        engine: dict = {}
        episodes = run_episodes(policy, cfg, split, n_tasks=n_tasks, sampler=sampler, progress=progress,
                                engine_stats=engine)
        path = RunDir(out_dir).episodes(stage, split)
        rel = os.path.relpath(path, out_dir)  # eval/STAGE/SPLIT.jsonl: the run moves with its records
        write_episodes(path, episodes)
        result["splits"][split] = {**summarize_episodes(episodes, cfg.eval.pass_k), "episodes_file": rel,
                                   "engine": engine}
    result["world_model"] = world_model_metrics(policy, cfg)
    result["created"] = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
    _atomic_write(RunDir(out_dir).eval_record(stage), json.dumps(result, indent=2) + "\n")
    return result
