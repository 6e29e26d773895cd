"""Environment benchmark: steps/s and K-alternative branches/s for every environment.

Usage::

    python bench/envs.py                                   # every environment that is installed
    python bench/envs.py --envs household,shop --tasks 20 --k 8

Prints one JSON line per environment. Per environment, on ``--tasks`` train tasks at ``--difficulty``
(default: the environment's own):

* ``oracle_steps_per_s``: oracle episodes (reset, ``admissible_actions``, ``oracle_action`` and ``step``
  at every state), environment steps / wall time. ``oracle_success`` is the fraction won.
* ``replay_steps_per_s``: replaying the recorded oracle actions from reset (what replay branching
  costs per step), steps / wall time.
* ``branches_per_s``: ``branch_trajectory`` with ``K`` alternatives at every expert state; closed action
  spaces sample them uniformly from the admissible list without the expert action; open ones (tools)
  use other states' expert calls. Snapshot environments restore before each branch; replay ones
  reset and replay the prefix. ``branch_ms`` is the mean wall time per branch.

Java-backed environments run their JVM in a child process whose CPU ``Section`` counts as "others";
``idle_frac_others`` is therefore only meaningful for the pure-Python environments.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import random
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench.machine import Section, machine_info  # noqa: E402
from ee_jax.envs import branch_trajectory, list_envs, make_env, reach, run_oracle  # noqa: E402
from ee_jax.envs.registry import ADAPTERS  # noqa: E402

# Adapters are slow: benchmark them on fewer tasks and a subset of their games / tasks.
ADAPTER_DEFAULTS = {
    "twx": {"tasks": 8, "options": {}},
    "scienceworld": {"tasks": 3, "options": {"tasks": ["find-animal", "boil", "test-conductivity"]}},
    "textworld": {"tasks": 4, "options": {}},
}


def _alternatives(env, task, actions, k, rng, pool):
    """K alternatives per expert state: admissible minus expert (closed) or other expert calls (open)."""
    out = []
    env.reset(task)
    for a in actions:
        admissible = env.admissible_actions()
        cands = [x for x in (admissible if admissible is not None else pool) if x != a]
        out.append(rng.sample(cands, min(k, len(cands))))
        env.step(a)
    return out


def bench_env(name: str, n_tasks: int, k: int, seed: int, options: dict, difficulty: int | None = None) -> dict:
    env = make_env(name, **options)
    try:
        t0 = time.perf_counter()
        tasks = env.make_tasks("train", n_tasks, difficulty=difficulty)
        task_gen_s = time.perf_counter() - t0
        with Section() as s_oracle:
            episodes = [run_oracle(env, t) for t in tasks]
        oracle_steps = sum(len(e.actions) for e in episodes)
        with Section() as s_replay:
            for t, e in zip(tasks, episodes):
                reach(env, t, e.actions)
        pool = sorted({a for e in episodes for a in e.actions})
        rng = random.Random(seed)
        alts = [_alternatives(env, t, e.actions, k, rng, pool) for t, e in zip(tasks, episodes)]
        n_branches = sum(len(x) for row in alts for x in row)
        with Section() as s_branch:
            for t, e, a in zip(tasks, episodes, alts):
                branch_trajectory(env, t, e.actions, a, e.observations)
        return {
            "bench": "envs", "env": name, "difficulty": tasks[0].difficulty, "branching": env.branching,
            "tasks": len(tasks), "k": k,
            "oracle_success": sum(e.won for e in episodes) / len(episodes),
            "mean_gold_steps": oracle_steps / len(episodes),
            "oracle_steps_per_s": round(oracle_steps / s_oracle.wall, 1),
            "replay_steps_per_s": round(oracle_steps / s_replay.wall, 1),
            "branches": n_branches,
            "branches_per_s": round(n_branches / s_branch.wall, 1),
            "branch_ms": round(1000 * s_branch.wall / max(n_branches, 1), 3),
            "task_gen_s": round(task_gen_s, 2),
            "idle_frac_others": round(min(s.idle_frac_others for s in (s_oracle, s_replay, s_branch)), 3),
            "options": options,
        }
    finally:
        env.close()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--envs", default="", help="comma-separated names (default: every installed environment)")
    p.add_argument("--tasks", type=int, default=20, help="train tasks per built-in environment")
    p.add_argument("--k", type=int, default=8)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--difficulty", type=int, default=None, help="default: each environment's default")
    args = p.parse_args()
    names = args.envs.split(",") if args.envs else [
        n for n in list_envs() if n not in ADAPTERS or importlib.util.find_spec(ADAPTERS[n])]
    info = machine_info()
    for name in names:
        d = ADAPTER_DEFAULTS.get(name, {"tasks": args.tasks, "options": {}})
        n = d["tasks"] if name in ADAPTERS else args.tasks
        row = bench_env(name, n, args.k, args.seed, d["options"], args.difficulty)
        row["machine"] = {"cpu": info.get("cpu"), "cores": info.get("cores")}
        print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
