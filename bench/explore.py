"""Exploration benchmark: branches/s of ``ee-jax collect explore``, and where its time goes.

Usage::

    python bench/explore.py                                    # household, 32 tasks, K=8, ee-1m policy
    python bench/explore.py --env shop --tasks 64 --k 4 --preset ee-4m

Collects expert data for ``--tasks`` train tasks, then runs the explore stage twice in fresh run
directories with the same expert data: ``uniform`` alternatives, and ``policy`` alternatives from an
untrained ``--preset`` model (the policy's speed does not depend on its training). Prints one JSON line
per strategy:

* ``branches_per_s``: executed alternatives / wall time of the whole stage (reading shards, policy
  calls, branching, validating and writing records);
* ``env_share`` / ``policy_share``: the shares of that wall time spent executing branches in the
  environment and sampling proposals (the rest is record building, validation and I/O);
* ``policy_first_shard_s``: the first shard's policy time, which includes compiling the sampler.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from ee_jax import runtime  # noqa: E402

runtime.configure()

from bench.machine import Section, machine_info  # noqa: E402
from ee_jax.config import load_config  # noqa: E402
from ee_jax.experience.expert import collect_expert  # noqa: E402
from ee_jax.experience.explore import collect_explore  # noqa: E402
from ee_jax.records.store import finished_shards  # noqa: E402


def run(args, strategy: str, root: str, expert_dir: str) -> dict:
    run_dir = os.path.join(root, strategy)
    shutil.copytree(expert_dir, run_dir)
    cfg = load_config(None, [f"run_dir={run_dir}", f"env.name={args.env}", f"experience.tasks.train={args.tasks}",
                             "experience.tasks.valid=0", f"experience.tasks_per_shard={args.per_shard}",
                             f"experience.explore.k={args.k}", f"experience.explore.strategy={strategy}",
                             f"model.preset={args.preset}", f"tokenizer.vocab_size={args.vocab}",
                             f"experience.explore.batch_states={args.batch_states}", f"seed={args.seed}"])
    with Section() as sec:
        section = collect_explore(cfg, progress=False)
    t = section["timing"]
    shards = finished_shards(os.path.join(run_dir, "data"), "transition")
    first = shards[min(shards)]["counters"].get("policy_s", 0.0)
    return {
        "bench": "explore", "env": args.env, "strategy": strategy, "k": args.k, "tasks": args.tasks,
        "states": section["counters"]["states"], "branches": t["branches"],
        "wall_s": round(t["wall_s"], 3), "branches_per_s": round(t["branches_per_s"], 1),
        "env_s": round(t["env_s"], 3), "policy_s": round(t["policy_s"], 3),
        "env_share": round(t["env_s"] / t["wall_s"], 4), "policy_share": round(t["policy_s"] / t["wall_s"], 4),
        "policy_first_shard_s": round(first, 3),
        "policy": None if strategy == "uniform" else {"preset": args.preset, "vocab": args.vocab,
                                                      "proposals_per_state": section["counters"]["proposals"]
                                                      // max(1, section["counters"]["states"])},
        **sec.report(),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--env", default="household")
    p.add_argument("--tasks", type=int, default=32)
    p.add_argument("--per-shard", type=int, default=8)
    p.add_argument("--k", type=int, default=8)
    p.add_argument("--preset", default="ee-1m")
    p.add_argument("--vocab", type=int, default=512)
    p.add_argument("--batch-states", type=int, default=64)
    p.add_argument("--strategies", default="uniform,policy")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    root = tempfile.mkdtemp(prefix="ee_jax_bench_explore_")
    try:
        expert_dir = os.path.join(root, "expert")
        cfg = load_config(None, [f"run_dir={expert_dir}", f"env.name={args.env}",
                                 f"experience.tasks.train={args.tasks}", "experience.tasks.valid=0",
                                 f"experience.tasks_per_shard={args.per_shard}", f"seed={args.seed}"])
        collect_expert(cfg, progress=False)
        info = machine_info()
        for strategy in args.strategies.split(","):
            print(json.dumps({**run(args, strategy, root, expert_dir), "machine": info}), flush=True)
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
