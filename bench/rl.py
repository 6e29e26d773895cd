"""RL step throughput: rollout tokens/s, environment steps/s, and the rollout / update split.

Usage::

    python bench/rl.py                # household d1, ee-1m from a short imitation run, GRPO, 4 steps
    python bench/rl.py --steps 6 --tasks 16 --group 8 --step-groups

Builds a run in a temporary directory (expert data, exploration, tokenizer, a 2-epoch ``il``
checkpoint: a weak policy, so episodes are long), then runs ``train_rl`` and reads its per-step
metrics. The first step includes compilation and is reported separately. The last stdout line is one
JSON object: per-step means over steps 2.. of ``rollout_s``, ``update_s``, ``sample_s``, ``env_s``,
``rollout_tokens_per_s`` (generated tokens / sampler time), ``env_steps_per_s`` (environment steps /
environment time), ``env_share`` (environment time / rollout time), plus ``first_step_s`` and ``machine``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from bench.machine import machine_info  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--tasks", type=int, default=8, help="rl.tasks_per_step")
    ap.add_argument("--group", type=int, default=8, help="rl.group_size")
    ap.add_argument("--step-groups", action="store_true", help="also branch 4 expert states per step")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()

    from ee_jax.config import load_config
    from ee_jax.data.tokenizer_corpus import ensure_tokenizer
    from ee_jax.experience.collect import run_stage
    from ee_jax.rl.trainer import train_rl
    from ee_jax.train.recipes import train_method

    machine = machine_info()
    with tempfile.TemporaryDirectory() as tmp:
        cfg = load_config(None, [
            f"run_dir={tmp}/run", "model.preset=ee-1m", "model.max_seq_len=1024", "tokenizer.vocab_size=768",
            "env.name=household", "env.difficulty=1", "experience.tasks.train=32", "experience.tasks.valid=8",
            "experience.explore.k=4", "prompt.history_window=2", "train.batch_size=8", "train.seq_len=640",
            "optimizer.lr=3e-3", "recipe.epochs=2", "recipe.valid_tasks=0", "recipe.select=last",
            "eval.max_new_tokens=48", "rl.max_turns=15", f"rl.steps={args.steps}", f"rl.tasks_per_step={args.tasks}",
            f"rl.group_size={args.group}", "rl.micro_rows=8", "rl.minibatches=2", "rl.eval_every=0",
            "rl.checkpoint_every=100", f"rl.step_groups.enabled={str(args.step_groups).lower()}",
        ])
        for stage in ("expert", "explore"):
            run_stage(cfg, stage, progress=False)
        ensure_tokenizer(cfg)
        train_method(cfg, "il", progress=False)
        t0 = time.perf_counter()
        rec = train_rl(cfg, init="il", progress=False)
        total = time.perf_counter() - t0
    hist = rec["history"]
    steady = hist[1:] or hist
    mean = lambda k: sum(h[k] for h in steady) / len(steady)  # noqa: E731
    out = {
        "steps": args.steps, "tasks_per_step": args.tasks, "group_size": args.group,
        "step_groups": args.step_groups, "first_step_s": hist[0]["rollout_s"] + hist[0]["update_s"],
        "total_s": total, "episodes_per_step": mean("episodes"), "turns_per_step": mean("turns"),
        "rollout_s": mean("rollout_s"), "update_s": mean("update_s"), "sample_s": mean("sample_s"),
        "env_s": mean("env_s"),
        "rollout_tokens_per_s": sum(h["generated_tokens"] for h in steady) / sum(h["sample_s"] for h in steady),
        "env_steps_per_s": sum(h["env_steps"] for h in steady) / max(sum(h["env_s"] for h in steady), 1e-9),
        "env_share": sum(h["env_s"] for h in steady) / sum(h["rollout_s"] for h in steady),
        "update_rows_per_step": mean("rows"), "reply_tokens_per_step": mean("reply_tokens"),
        "machine": machine,
    }
    if not args.json:
        for k, v in out.items():
            print(f"{k:>24}: {v}")
    print(json.dumps(out))


if __name__ == "__main__":
    main()
