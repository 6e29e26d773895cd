"""``ee-jax train`` (methods on a collected run) and ``ee-jax run`` (the whole experiment)."""

from __future__ import annotations

import os

from ee_jax.cli.common import emit, load_run_config
from ee_jax.pipeline.experiment import run_experiment
from ee_jax.rundir import RunDir
from ee_jax.train.recipes import train_method


def cmd_train(args) -> None:
    cfg = load_run_config(args.config)
    methods = [m for m in cfg.recipe.methods if m != "rl"] if args.method == "all" else [args.method]
    payload, lines = {"run_dir": cfg.run_dir, "methods": {}}, []
    for method in methods:
        rec = train_method(cfg, method, overwrite=args.overwrite, progress=not args.no_progress)
        payload["methods"][method] = rec
        if rec.get("stopped_at") is not None:
            lines.append(f"{method:<4} {rec['stage']:<7} stopped at step {rec['stopped_at']} of {rec['steps']} "
                         "(train.stop_after_steps): run the same command again to resume")
            break
        for st in rec["stages"]:
            sel = st["selection"]
            how = f"{sel['rule']}" + (f" by valid {sel['metric']}" if sel["rule"] == "best" else "")
            lines.append(f"{method:<4} {st['stage']:<7} {st['steps']:>6} steps"
                         + (f" ({st['epochs']:.2f} epochs)" if st.get("epochs") else "")
                         + f"  reported step {st['selected_step']} ({how})" + ("  [done before]" if rec.get("skipped")
                                                                                else ""))
    lines.append(f"checkpoints  {RunDir(cfg.run_dir).ckpt()}  (evaluate: ee-jax eval {cfg.run_dir} --stage il)")
    emit(args, "\n".join(lines), payload)


def cmd_run(args) -> None:
    cfg = load_run_config(args.config, default="quickstart")
    summary = run_experiment(cfg, overwrite=args.overwrite, progress=not args.no_progress)
    human = ""
    if os.path.exists(summary["report"]):
        with open(summary["report"], encoding="utf-8") as f:
            human = f.read()
    if summary.get("stopped"):
        st = summary["stopped"]
        human = (f"seed {st['seed']} {st['method']}: {st['stage']} stopped at step {st['stopped_at']} of {st['steps']} "
                 "(train.stop_after_steps): run the same command again to resume")
    else:
        human += f"\nreport  {summary['report']}  ({summary['seconds'] / 60:.1f} min)"
    emit(args, human, summary)


def add_parsers(sub) -> None:
    t = sub.add_parser("train", help="train il / il_matched / iwm / sr on a run's collected experience")
    t.add_argument("config", nargs="*", help="[CONFIG.yaml] [key=value ...], e.g. recipe.epochs=3")
    t.add_argument("--method", default="all", choices=("il", "il_matched", "iwm", "sr", "all"),
                   help="one method, or all of recipe.methods (default)")
    t.add_argument("--overwrite", action="store_true", help="retrain a method whose settings changed")
    t.add_argument("--no-progress", action="store_true", help="no progress bars")
    t.add_argument("--json", action="store_true", help="print one JSON object as the last line")
    t.set_defaults(func=cmd_train)
    r = sub.add_parser("run", help="the whole experiment: collect, train il/iwm/sr per seed, evaluate, report")
    r.add_argument("config", nargs="*", help="[CONFIG.yaml] [key=value ...] (default: configs/quickstart.yaml)")
    r.add_argument("--overwrite", action="store_true", help="redo stages whose settings changed")
    r.add_argument("--no-progress", action="store_true", help="no progress bars")
    r.add_argument("--json", action="store_true", help="print one JSON object as the last line")
    r.set_defaults(func=cmd_run)
