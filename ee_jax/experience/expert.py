"""Expert collection (``ee-jax collect expert``): oracle episodes or user trajectories -> expert steps.

Either source is replayed in the real environment, so every expert step carries what the agent
actually saw there (observation, admissible actions, history) and later stages can branch from it.
Trajectories are deduplicated by (task, actions); shards are split-pure, so exploration shard ``i``
and reflection shard ``i`` come from expert shard ``i``.
"""

from __future__ import annotations

import hashlib
import json
import os

from ee_jax.config import Config
from ee_jax.envs.base import Env, EnvError, Task
from ee_jax.envs.pool import EnvPool
from ee_jax.envs.registry import make_env_from_config
from ee_jax.records.schema import State, Step, make_record
from ee_jax.records.store import chunk_units, run_sharded_stage
from ee_jax.records.trajectories import read_trajectories
from ee_jax.rundir import RunDir

KIND = "expert_step"


def traj_id(task_id: str, actions: list[str]) -> str:
    """``TASK#HASH``: one id per distinct action sequence on a task (the dedup key)."""
    h = hashlib.sha256(json.dumps([task_id, list(actions)]).encode()).hexdigest()[:10]
    return f"{task_id}#{h}"


class ReplayError(ValueError):
    """A trajectory that does not replay in the environment (invalid action, different observation)."""


def play_trajectory(env: Env, task: Task, actions: list[str] | None, source: str,
                    observations: list[str] | None = None) -> tuple[list[dict], dict]:
    """Play ``actions`` (or the oracle's, when None) on ``task``; returns (expert-step records, info).

    ``observations`` (reset observation first), when given, must match what the environment shows.
    """
    obs = env.reset(task)
    if observations is not None and observations[0] != obs:
        raise ReplayError(f"the reset observation differs from the environment's: {obs[:120]!r}")
    history: list[Step] = []
    steps: list[dict] = []
    won = False
    played: list[str] = []
    limit = env.max_steps
    while len(played) < limit:
        if actions is not None and len(played) == len(actions):
            break
        admissible = env.admissible_actions()
        action = env.oracle_action() if actions is None else actions[len(played)]
        if action is None:
            break
        result = env.step(action)
        info = result.info
        if not info["valid"] and actions is not None:
            raise ReplayError(f"action {len(played) + 1} {action!r} is not valid in the environment: "
                              f"{result.observation[:120]!r}")
        i = len(played)
        if observations is not None and i + 1 < len(observations) and observations[i + 1] != result.observation:
            raise ReplayError(f"the observation after action {i + 1} {action!r} differs from the environment's: "
                              f"expected {observations[i + 1][:120]!r}, got {result.observation[:120]!r}")
        state = State(task.goal, tuple(history), obs, None if admissible is None else tuple(admissible))
        steps.append(dict(state=state, action=action, next_observation=result.observation,
                          reward=float(result.reward), done=bool(result.done), valid=bool(info["valid"]),
                          won=bool(info["won"]), score=float(info["score"])))
        history.append(Step(action, result.observation))
        played.append(action)
        obs = result.observation
        won = bool(info["won"])
        if result.done:
            break
    if actions is not None and len(played) < len(actions):
        raise ReplayError(f"the episode ended after {len(played)} of {len(actions)} actions")
    tid = traj_id(task.id, played)
    records = [make_record(KIND, env=env.name, task_id=task.id, split=task.split, traj_id=tid, step=i,
                           task=task.to_json(), source=source, **s) for i, s in enumerate(steps)]
    return records, {"won": won, "steps": len(played), "traj_id": tid}


def expert_item(env: Env, item: dict) -> dict:
    """Pool work function: one task (oracle) or one user trajectory -> records, or the error."""
    task = Task.from_json(item["task"])
    try:
        records, info = play_trajectory(env, task, item.get("actions"), item["source"], item.get("observations"))
    except (ReplayError, EnvError) as e:
        return {"error": str(e), "line": item.get("line")}
    return {"records": records, **info}


def _expert_units(cfg: Config, env: Env) -> tuple[list[dict], dict, list[dict]]:
    """Work items, settings and skipped-line reports for the configured source."""
    x = cfg.experience
    base = {"env": cfg.env.name, "env_options": cfg.env.options, "difficulty": cfg.env.difficulty,
            "max_steps": cfg.env.max_steps, "source": x.source, "tasks_per_shard": x.tasks_per_shard}
    if x.source == "oracle":
        items = []
        for split, n in x.tasks.items():
            if n:
                tasks = env.make_tasks(split, n, difficulty=cfg.env.difficulty or None)
                items += [{"task": t.to_json(), "source": "oracle"} for t in tasks]
        return items, {**base, "tasks": dict(x.tasks)}, []
    trajectories, skipped = read_trajectories(x.trajectories, env, on_bad_line=x.on_bad_line)
    with open(x.trajectories, "rb") as f:
        file_hash = hashlib.sha256(f.read()).hexdigest()
    items = [{"task": t.task.to_json(), "actions": t.actions, "observations": t.observations,
              "source": f"jsonl:{os.path.basename(x.trajectories)}:{t.line}", "line": t.line} for t in trajectories]
    return items, {**base, "trajectories": os.path.abspath(x.trajectories), "file_sha256": file_hash}, skipped


def collect_expert(cfg: Config, *, overwrite: bool = False, progress: bool = True) -> dict:
    """Collect expert steps into ``cfg.run_dir/data``; returns the manifest section."""
    data_dir = RunDir(cfg.run_dir).data
    env = make_env_from_config(cfg.env)
    try:
        items, settings, skipped = _expert_units(cfg, env)
        split_order = {s: i for i, s in enumerate(dict.fromkeys(Task.from_json(it["task"]).split for it in items))}
        items.sort(key=lambda it: split_order[it["task"]["split"]])  # stable: file / task order within a split
        chunks = chunk_units(items, cfg.experience.tasks_per_shard, key=lambda it: it["task"]["split"])
        pool = EnvPool.from_config(cfg.env) if cfg.env.pool_workers else None

        def work(chunk: list[dict], index: int) -> tuple[list[dict], dict]:
            results = pool.map("ee_jax.experience.expert:expert_item", chunk) if pool else [
                expert_item(env, it) for it in chunk]
            return _gather(results, cfg.experience.on_bad_line, cfg.experience.source)

        try:
            section = run_sharded_stage(data_dir, KIND, chunks, settings, work, overwrite=overwrite,
                                        progress=progress, desc=f"expert {cfg.env.name}",
                                        unit_name="traj", extra={"skipped_lines": skipped},
                                        barrier_timeout_s=cfg.distributed.barrier_timeout_s)
        finally:
            if pool is not None:
                pool.close()
    finally:
        env.close()
    return section


def _gather(results: list[dict], on_bad_line: str, source: str) -> tuple[list[dict], dict]:
    records: list[dict] = []
    seen: set[str] = set()
    counters = {"trajectories": 0, "won": 0, "not_won": 0, "duplicates": 0, "failed": 0, "replay_errors": [],
                "trajectories_by_split": {}}
    for r in results:
        if "error" in r:
            if source == "oracle":
                counters["failed"] += 1  # an oracle that cannot finish: reported, not fatal
                continue
            if on_bad_line == "fail":
                raise ReplayError(f"trajectory file line {r['line']}: {r['error']} (experience.on_bad_line=skip "
                                  f"skips such lines)")
            counters["replay_errors"].append({"line": r["line"], "error": r["error"]})
            continue
        if r["traj_id"] in seen:
            counters["duplicates"] += 1
            continue
        if source == "oracle" and not r["won"]:
            counters["failed"] += 1  # only successful oracle episodes are expert data
            continue
        seen.add(r["traj_id"])
        counters["trajectories"] += 1
        counters["won" if r["won"] else "not_won"] += 1
        split = r["records"][0]["split"]
        counters["trajectories_by_split"][split] = counters["trajectories_by_split"].get(split, 0) + 1
        records += r["records"]
    return records, counters

