"""Does the estimator matter? GRPO vs GRPO + step groups vs PPO on the RL learning test's setting.

Usage::

    python bench/rl_variants.py                      # 3 variants x 2 seeds, 40 steps each
    python bench/rl_variants.py --seeds 0 1 2 --steps 60 --json

The start is the weak imitation checkpoint of ``tests/test_rl_learning.py`` (a 64-wide decoder, 55
epochs on 4 household tasks: greedy it solves them, sampled at temperature 1 it wins about 15%). Each
variant continues from that same checkpoint with the test's GRPO settings (1 task, 16 rollouts per
step, lr 2e-4, an invalid action ends the episode) and changes one thing:

- ``grpo``: as the test;
- ``grpo+step``: plus step-level groups from 2 explored expert states per step (their K+1 branches
  are extra episodes, ω = 1);
- ``ppo``: a critic and GAE instead of group normalisation (same lr for the critic).

Reported per variant and seed: mean rollout success over the first 10 steps and over the last half,
their difference, and the rollout episodes per step. The measure is the learning test's: the success
of the RL task's own rollouts (``success`` never counts step-group branch episodes, which start from
expert states). The last stdout line with ``--json`` is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from bench.machine import machine_info  # noqa: E402
from tests.test_recipes import AGENT  # noqa: E402
from tests.test_rl_learning import GRPO, WEAK_IL  # noqa: E402

VARIANTS = {
    "grpo": [],
    "grpo+step": ["rl.step_groups.enabled=true", "rl.step_groups.states=2"],
    "ppo": ["rl.algorithm=ppo", "rl.critic_lr=2e-4"],
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()

    import numpy as np

    from ee_jax.config import load_config
    from ee_jax.data.tokenizer_corpus import ensure_tokenizer
    from ee_jax.experience.collect import run_stage
    from ee_jax.rl.trainer import train_rl
    from ee_jax.train.recipes import train_method

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        base = os.path.join(tmp, "base")
        cfg = load_config(None, AGENT + WEAK_IL + GRPO + [f"run_dir={base}"])
        for stage in ("expert", "explore"):
            run_stage(cfg, stage, progress=False)
        ensure_tokenizer(cfg)
        train_method(cfg, "il", progress=False)
        for name in args.variants:
            for seed in args.seeds:
                run = os.path.join(tmp, f"{name}-{seed}")
                shutil.copytree(base, run, symlinks=True)
                vcfg = load_config(None, AGENT + WEAK_IL + GRPO + VARIANTS[name] + [
                    f"run_dir={run}", f"seed={seed}", f"rl.steps={args.steps}"])
                t0 = time.perf_counter()
                history = train_rl(vcfg, init="il", progress=False)["history"]
                success = np.array([h["success"] for h in history])
                early, late = float(success[:10].mean()), float(success[args.steps // 2:].mean())
                rows.append({"variant": name, "seed": seed, "early": early, "late": late, "gain": late - early,
                             "episodes_per_step": float(np.mean([h["episodes"] for h in history])),
                             "max_kl": float(max(h["kl"] for h in history)), "seconds": time.perf_counter() - t0})
                print(f"{name:10s} seed {seed}: success {100 * early:5.1f}% (steps 1-10) -> {100 * late:5.1f}% "
                      f"(steps {args.steps // 2 + 1}-{args.steps}), {rows[-1]['seconds']:.0f} s", flush=True)
    summary = {}
    for name in args.variants:
        gains = [r["gain"] for r in rows if r["variant"] == name]
        summary[name] = {"gain_mean": float(np.mean(gains)), "gain_min": float(min(gains)),
                         "gain_max": float(max(gains))}
        print(f"{name:10s} gain {100 * summary[name]['gain_mean']:+.1f} points (seeds: "
              + ", ".join(f"{100 * g:+.1f}" for g in gains) + ")")
    if args.json:
        print(json.dumps({"rows": rows, "summary": summary, "steps": args.steps, "machine": machine_info()}))


if __name__ == "__main__":
    main()
