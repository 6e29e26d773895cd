"""Oracle episodes and environment health checks (``ee-jax envs check``, tests, benchmarks)."""

from __future__ import annotations

import dataclasses
import statistics
import time

from ee_jax.envs.base import Env, Task


@dataclasses.dataclass
class Episode:
    task_id: str
    actions: list[str]
    observations: list[str]  # reset observation first, then one per action
    rewards: list[float]
    won: bool
    score: float
    invalid: int
    admissible_counts: list[int]


def run_oracle(env: Env, task: Task, max_steps: int | None = None) -> Episode:
    """Play ``task`` following ``env.oracle_action()`` until done, the step limit, or no oracle action."""
    obs = env.reset(task)
    ep = Episode(task.id, [], [obs], [], False, 0.0, 0, [])
    limit = max_steps or env.max_steps
    done = False
    while not done and len(ep.actions) < limit:
        admissible = env.admissible_actions()
        ep.admissible_counts.append(len(admissible) if admissible is not None else 0)
        action = env.oracle_action()
        if action is None:
            break
        obs, reward, done, info = env.step(action)
        ep.actions.append(action)
        ep.observations.append(obs)
        ep.rewards.append(reward)
        ep.invalid += not info["valid"]
        ep.won, ep.score = bool(info["won"]), float(info["score"])
    return ep


def check_env(env: Env, split: str, n: int, difficulty: int | None = None, start: int = 0,
              progress: bool = False) -> dict:
    """Oracle success rate, mean steps, observation lengths and steps/s on ``n`` tasks of ``split``."""
    from tqdm import tqdm

    t0 = time.perf_counter()
    tasks = env.make_tasks(split, n, start=start, difficulty=difficulty)
    t_tasks = time.perf_counter() - t0
    episodes = []
    t0 = time.perf_counter()
    for task in tqdm(tasks, desc=f"{env.name} {split}", disable=not progress, unit="task"):
        episodes.append(run_oracle(env, task))
    elapsed = time.perf_counter() - t0
    steps = [len(e.actions) for e in episodes]
    obs_len = [len(o) for e in episodes for o in e.observations]
    failed = [e.task_id for e in episodes if not e.won]
    return {
        "env": env.name, "split": split, "n": len(tasks), "difficulty": tasks[0].difficulty if tasks else difficulty,
        "oracle_success": sum(e.won for e in episodes) / max(1, len(episodes)),
        "failed_tasks": failed[:20],
        "mean_steps": statistics.fmean(steps) if steps else 0.0, "max_steps": max(steps, default=0),
        "mean_obs_chars": statistics.fmean(obs_len) if obs_len else 0.0, "max_obs_chars": max(obs_len, default=0),
        "mean_admissible": statistics.fmean(c for e in episodes for c in e.admissible_counts)
        if env.action_space == "closed" and any(e.admissible_counts for e in episodes) else None,
        "invalid_oracle_actions": sum(e.invalid for e in episodes),
        "steps_per_s": sum(steps) / elapsed if elapsed > 0 else None,
        "task_gen_s": t_tasks,
    }
