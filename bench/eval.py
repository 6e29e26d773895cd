"""Evaluation throughput: household test episodes per second with an ee-1m imitation policy.

Usage::

    python bench/eval.py --run /tmp/ee-bench-eval            # builds the run there once, then evaluates
    python bench/ab.py --base HEAD~3 -- bench/eval.py --run /tmp/ee-bench-eval --batches 16,64
    python bench/eval.py --run /tmp/ee-bench-eval-append --history-mode append   # prompts that extend

The run is the quickstart's model and prompt settings (ee-1m, 1024-token context, 2 history steps, replies of
up to 192 tokens) on household (difficulty 1): expert trajectories of 32 training tasks, a tokenizer, and a
2-epoch imitation checkpoint (a weak policy: some episodes are won, many end on invalid actions or the step
limit). It is built on the first call and reused afterwards, so two versions of ee_jax (bench/ab.py) evaluate
the same weights. Each batch size is evaluated twice: ``cold`` includes compilation, ``warm`` is the steady
state. The last stdout line is one JSON object: per batch size, episodes, policy turns, seconds and
``episodes_per_s`` (cold and warm), success, and the engine's counters where the version has an engine.
"""

from __future__ import annotations

import argparse
import dataclasses
import inspect
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from bench.machine import machine_info  # noqa: E402

SETTINGS = ["model.preset=ee-1m", "model.max_seq_len=1024", "tokenizer.vocab_size=768", "env.name=household",
            "env.difficulty=1", "experience.tasks.train=32", "experience.tasks.valid=8", "prompt.history_window=2",
            "train.batch_size=8", "train.seq_len=640", "optimizer.lr=3e-3", "recipe.epochs=2", "recipe.valid_tasks=0",
            "recipe.select=last", "eval.max_new_tokens=192", "eval.max_invalid=5", "seed=0"]


def build(run_dir: str, extra: list[str]) -> None:
    """Expert data, tokenizer and the ``il`` checkpoint in ``run_dir`` (skipped when it is there)."""
    from ee_jax.config import load_config, save_config
    from ee_jax.data.tokenizer_corpus import ensure_tokenizer
    from ee_jax.experience.collect import run_stage
    from ee_jax.train.recipes import train_method

    cfg = load_config(None, [f"run_dir={run_dir}", *SETTINGS, *extra])
    os.makedirs(run_dir, exist_ok=True)
    save_config(cfg, os.path.join(run_dir, "config.yaml"))
    if os.path.isfile(os.path.join(run_dir, "bench-built")):
        return
    run_stage(cfg, "expert", progress=False)
    ensure_tokenizer(cfg)
    train_method(cfg, "il", progress=False)
    with open(os.path.join(run_dir, "bench-built"), "w") as f:
        f.write("ok\n")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--run", required=True, help="run directory (built on first use)")
    ap.add_argument("--tasks", type=int, default=48, help="test tasks")
    ap.add_argument("--batches", default="16,64", help="eval.batch_size values")
    ap.add_argument("--history-mode", default="", help="prompt.history_mode of the run (sliding | append; "
                    "only versions that have it; use a run directory of its own)")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()

    build(args.run, [f"prompt.history_mode={args.history_mode}"] if args.history_mode else [])
    from ee_jax.agent.episodes import run_episodes
    from ee_jax.agent.policy import load_policy

    has_engine = "engine_stats" in inspect.signature(run_episodes).parameters
    policy = load_policy(args.run, stage="il", overrides=[f"eval.tasks={args.tasks}"])
    sampler = policy.sampler()
    out = {"machine": machine_info(), "tasks": args.tasks, "engine": has_engine}
    for b in [int(x) for x in args.batches.split(",")]:
        cfg = dataclasses.replace(policy.cfg, eval=dataclasses.replace(policy.cfg.eval, batch_size=b))
        row = {}
        for phase in ("cold", "warm"):
            stats: dict = {}
            kw = {"engine_stats": stats} if has_engine else {}
            t0 = time.perf_counter()
            eps = run_episodes(policy, cfg, "test", sampler=sampler, progress=False, **kw)
            sec = time.perf_counter() - t0
            row[phase] = {"seconds": round(sec, 2), "episodes_per_s": round(len(eps) / sec, 3)}
            if stats:
                row[phase]["engine"] = stats
        row.update(episodes=len(eps), turns=sum(e["steps"] for e in eps),
                   success=round(sum(e["won"] for e in eps) / len(eps), 4),
                   ended={k: sum(e["ended"] == k for e in eps) for k in ("won", "done", "max_steps", "max_invalid")})
        out[f"batch{b}"] = row
        print(f"batch {b}: {row['warm']['episodes_per_s']} episodes/s warm ({row['turns']} turns)", file=sys.stderr)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
