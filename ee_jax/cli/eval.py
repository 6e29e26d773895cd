"""``ee-jax eval RUN_DIR --stage STAGE``: a checkpoint acting on the held-out task lists, and its
world-model metrics; writes ``RUN_DIR/eval/STAGE.json`` and ``RUN_DIR/eval/STAGE/SPLIT.jsonl``.

Under ``jax.distributed`` every host runs the same episodes on the sharded model (process 0 writes the
files) and the world-model transitions are split between hosts."""

from __future__ import annotations

import dataclasses
import os

from ee_jax.agent.policy import load_policy
from ee_jax.cli.common import emit, positive_int
from ee_jax.config import ConfigError, load_config
from ee_jax.envs.base import check_split
from ee_jax.eval import evaluate_policy
from ee_jax.parallel import initialize_distributed


def _table(result: dict) -> str:
    """A small human-readable summary of an evaluation result."""
    lines = [f"stage {result['stage']}  ({result['source']})  env {result['env']} d{result['difficulty']}"]
    ks = [k for k in next(iter(result["splits"].values()), {}) if k.startswith("pass@")]
    head = f"{'split':<6} {'episodes':>8} {'success':>8} {'95% CI':>15} {'score':>6} {'invalid':>8} {'steps':>6}"
    lines.append(head + "".join(f" {k:>7}" for k in ks) + "  ended")
    for split, s in result["splits"].items():
        lo, hi = s["success_ci95"]
        ended = ", ".join(f"{r} {n}" for r, n in s["ended"].items() if n)
        lines.append(f"{split:<6} {s['episodes']:>8} {s['success']:>8.3f} {f'[{lo:.3f}, {hi:.3f}]':>15} "
                     f"{s['score']:>6.3f} {s['invalid_rate']:>8.3f} {s['steps']:>6.1f}"
                     + "".join(f" {s[k]:>7.3f}" for k in ks) + f"  {ended}")
    wm = result.get("world_model")
    if wm:
        lines.append(f"world model ({wm['split']}, {wm['transitions']} transitions): token accuracy "
                     f"{wm['token_accuracy']:.3f}, exact match {wm['exact_match']:.3f}, loss {wm['loss']:.4f}")
    else:
        lines.append("world model: no held-out transitions (or eval.wm_transitions=0)")
    lines.append(f"files  {os.path.join('eval', result['stage'] + '.json')}, "
                 + ", ".join(s["episodes_file"] for s in result["splits"].values()))
    return "\n".join(lines)


def _initialize_distributed(overrides: list[str]) -> None:
    """Join ``jax.distributed`` as this invocation says (its ``distributed.*`` overrides, or cluster
    auto-detection), never as the run's ``config.yaml`` says: that records how training was launched
    (another coordinator, other process ids), not how this evaluation is."""
    initialize_distributed(load_config(None, [o for o in overrides if o.startswith("distributed.")]).distributed)


def cmd_eval(args) -> None:
    overrides = list(args.config)
    bad = [o for o in overrides if "=" not in o]
    if bad:
        raise ConfigError(f"unexpected argument {bad[0]!r}: ee-jax eval takes RUN_DIR, then key=value overrides")
    if not os.path.isdir(args.run_dir):
        raise FileNotFoundError(f"run directory {args.run_dir!r} does not exist")
    if args.n is not None and args.n < 1:
        raise ValueError(f"--n must be >= 1, got {args.n}")
    splits = [s.strip() for s in args.split.split(",") if s.strip()] if args.split else None
    if args.split is not None and not splits:
        raise ValueError(f"--split {args.split!r} names no split; e.g. --split test,ood")
    if splits is not None:
        for s in splits:
            check_split(s)
    _initialize_distributed(overrides)
    policy = load_policy(args.run_dir, stage=args.stage, overrides=overrides)
    # the run directory may have moved since its config.yaml was written: its data is where it is now
    cfg = dataclasses.replace(policy.cfg, run_dir=args.run_dir)
    result = evaluate_policy(policy, cfg, stage=args.stage, out_dir=args.run_dir, splits=splits, n_tasks=args.n,
                             progress=not args.no_progress)
    emit(args, _table(result), result)


def add_parser(sub) -> None:
    ev = sub.add_parser("eval", help="evaluate a run's policy on held-out tasks (success, pass@k, world model)")
    ev.add_argument("run_dir", help="run directory (its config.yaml, tokenizer, checkpoints and data)")
    ev.add_argument("config", nargs="*", help="key=value overrides of the run's config, e.g. eval.tasks=50")
    ev.add_argument("--stage", required=True, help="checkpoint stage (il, iwm, sr, ...); init: the untrained model")
    ev.add_argument("--split", default=None, help="comma-separated splits (default: eval.splits, e.g. test,ood)")
    ev.add_argument("--n", type=positive_int, default=None, help="tasks per split (default: eval.tasks)")
    ev.add_argument("--no-progress", action="store_true", help="no progress bar")
    ev.add_argument("--json", action="store_true", help="print one JSON object as the last line")
    ev.set_defaults(func=cmd_eval)
