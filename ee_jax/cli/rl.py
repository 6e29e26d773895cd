"""``ee-jax rl``: GRPO / PPO from a checkpoint on a run's training tasks."""

from __future__ import annotations

from ee_jax.cli.common import emit, load_run_config
from ee_jax.rl.trainer import train_rl
from ee_jax.rundir import RunDir


def cmd_rl(args) -> None:
    cfg = load_run_config(args.config)
    rec = train_rl(cfg, init=args.start, stage=args.stage, overwrite=args.overwrite, progress=not args.no_progress)
    payload = {k: v for k, v in rec.items() if k != "history"}
    payload["final"] = rec["history"][-1] if rec.get("history") else None
    if rec.get("stopped_at") is not None:
        human = f"{rec['policy_stage']}: stopped at step {rec['stopped_at']} of {rec['steps']} (run again to resume)"
    else:
        sel = rec["stages"][0]["selection"]
        last = payload["final"] or {}
        human = (f"{rec['policy_stage']}: {rec['algorithm']} from {rec['init']} ({rec['init_source']}), "
                 f"{rec['updates']} steps" + ("  [done before]" if rec.get("skipped") else "")
                 + (f"\nlast step: success {last['success']:.3f}  reward {last['reward']:.3f}  kl {last['kl']:.4f}  "
                    f"clip {last['clip_fraction']:.3f}  entropy {last['entropy']:.3f}" if last else "")
                 + f"\nreported step {sel['step']} ({sel['rule']})"
                 + f"\ncheckpoints  {RunDir(cfg.run_dir).ckpt(rec['policy_stage'])}  "
                   f"(evaluate: ee-jax eval {cfg.run_dir} --stage {rec['policy_stage']})")
    emit(args, human, payload)


def add_parser(sub) -> None:
    p = sub.add_parser("rl", help="RL continuation (GRPO / PPO) from a checkpoint of a collected run")
    p.add_argument("config", nargs="*", help="[CONFIG.yaml] [key=value ...], e.g. rl.steps=50 rl.algorithm=ppo")
    p.add_argument("--from", dest="start", default=None,
                   help="where the policy starts: a stage of this run (il, iwm, sr), RUN_DIR:STAGE, init (untrained), "
                        "safetensors:FILE or hf:DIR (default: rl.init)")
    p.add_argument("--stage", default=None, help="checkpoint stage to write (default: ALGORITHM_from_START)")
    p.add_argument("--overwrite", action="store_true", help="retrain a stage whose settings changed")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument("--json", action="store_true", help="print one JSON object as the last line")
    p.set_defaults(func=cmd_rl)
