"""TextWorldExpress experts: the searched shortest path (``expert=search``) vs TWX's own gold (``expert=twx``).

Usage::

    python bench/twx_expert.py                                  # coin, mapreader, twc at difficulties 1-3
    python bench/twx_expert.py --games coin --difficulties 1 --tasks 20

Prints one JSON line per (game, difficulty, expert): the wall time to make ``--tasks`` train tasks (the
expert path is made with the task), seconds per task, the fraction of tasks whose expert was found by
the search (the rest fell back to TWX's gold: over ``search_states``), and the mean expert length.
Each expert runs in its own JVM, started (and its game loaded once) before the clock starts.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench.machine import machine_info  # noqa: E402
from ee_jax.envs import make_env  # noqa: E402


def bench(game: str, difficulty: int, expert: str, n: int, search_states: int) -> dict:
    env = make_env("twx", games=game, expert=expert, search_states=search_states)
    try:
        env.make_tasks("valid", 1, difficulty=difficulty)  # start the JVM outside the timing
        t0 = time.perf_counter()
        tasks = env.make_tasks("train", n, difficulty=difficulty)
        wall = time.perf_counter() - t0
    finally:
        env.close()
    return {"bench": "twx_expert", "game": game, "difficulty": difficulty, "expert": expert, "tasks": n,
            "search_states": search_states, "wall_s": round(wall, 2), "s_per_task": round(wall / n, 3),
            "searched_frac": round(sum(t.param("expert") == "search" for t in tasks) / n, 3),
            "mean_expert_steps": round(sum(len(t.gold) for t in tasks) / n, 2)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--games", default="coin,mapreader,twc")
    p.add_argument("--difficulties", default="1,2,3")
    p.add_argument("--tasks", type=int, default=10)
    p.add_argument("--search-states", type=int, default=500)
    args = p.parse_args()
    cpu = machine_info().get("cpu")
    for game in args.games.split(","):
        for d in (int(x) for x in args.difficulties.split(",")):
            for expert in ("search", "twx"):
                row = bench(game, d, expert, args.tasks, args.search_states)
                print(json.dumps({**row, "cpu": cpu}), flush=True)


if __name__ == "__main__":
    main()
