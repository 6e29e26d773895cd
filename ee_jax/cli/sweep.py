"""``ee-jax sweep SWEEP.yaml``: the main job over model sizes x data fractions (x methods x seeds),
then the scaling report (``RUN/scaling.md``)."""

from __future__ import annotations

import os
import shlex
import subprocess

from ee_jax.cli.common import emit, split_config_args
from ee_jax.sweep import build_scaling_report, export_results, launch_commands, load_sweep, run_sweep
from ee_jax.sweep.spec import sweep_points


def _summary(report: dict) -> str:
    lines = [f"scaling report  {os.path.join(report['sweep']['run_dir'], 'scaling.md')}"]
    for a in report["efficiency"]["answers"]:
        c = a["answer"]
        lines.append(f"data {a['fraction']:g} {a['method']}: " + (
            "matches no larger imitation model" if c is None else
            f"{c['size']} matches IL at {c['il_size']} ({100 * c['difference']['mean']:+.1f} points"
            + (", established)" if c["established"] else ", not established)")))
    if report.get("missing_points"):
        lines.append(f"points without a report yet: {', '.join(report['missing_points'])}")
    return "\n".join(lines)


def cmd_sweep(args) -> None:
    path, overrides = split_config_args(args.config)
    if path is None:
        raise SystemExit("ee-jax sweep: give a sweep file, e.g. configs/sweeps/scaling.yaml")
    sweep = load_sweep(path, overrides)
    if args.launch:
        extra = shlex.split(args.launch_args) + (["--dry-run"] if args.dry_run else [])
        cmds = launch_commands(sweep, args.launch, extra)
        results = []
        for cmd in cmds:
            rc = subprocess.run(cmd, check=False).returncode
            results.append({"command": shlex.join(cmd), "returncode": rc})
        failed = [r for r in results if r["returncode"]]
        emit(args, f"{len(cmds)} point(s) handed to launch/{args.launch}.py, {len(failed)} failed"
              + ("" if args.dry_run else f"; when they finish: ee-jax sweep {path} --report-only"),
              {"launched": results, "failed": len(failed)})
        if failed:
            raise SystemExit(1)
        return
    if args.dry_run:
        points = sweep_points(sweep)
        lines = [f"ee-jax run {sweep.base} {shlex.join(p.overrides)}" for p in points]
        emit(args, "\n".join(lines), {"points": [{"name": p.name, "run_dir": p.run_dir,
                                                   "overrides": list(p.overrides)} for p in points]})
        return
    if args.export_results:
        out = export_results(sweep, args.export_results)
        done = sum(p["finished"] for p in out["points"])
        emit(args, f"{len(out['points'])} point(s) ({done} finished) exported to {out['out_dir']} "
              f"({out['bytes'] / 1e6:.1f} MB, no checkpoints); resume from it by copying it to "
              f"{sweep.run_dir} and running the sweep again", out)
        return
    if args.report_only:
        report = build_scaling_report(sweep)
    else:
        report = run_sweep(sweep, progress=not args.no_progress, overwrite=args.overwrite)
    stopped = report.get("stopped")
    note = (f"\npoint {stopped['point']} stopped at step {stopped['stopped_at']} (train.stop_after_steps): "
            "run the same command again to resume") if stopped else ""
    if "rows" not in report:
        emit(args, note.strip(), {"stopped": stopped})
        return
    emit(args, _summary(report) + note, {k: report.get(k) for k in ("rows", "efficiency", "planning", "plots",
                                                                     "missing_points", "privileged",
                                                                     "data_efficiency")}
          | {"report": os.path.join(sweep.run_dir, "scaling.md"), "stopped": stopped})


def add_parser(sub) -> None:
    p = sub.add_parser("sweep", help="the main job over model sizes x data fractions, then the scaling report")
    p.add_argument("config", nargs="*", help="SWEEP.yaml [key=value ...], e.g. 'seeds=[0]' 'sizes=[ee-1m,ee-4m]'")
    p.add_argument("--report-only", action="store_true", help="only (re)build the scaling report from the points")
    p.add_argument("--export-results", metavar="DIR", default=None,
                   help="copy the sweep's results (configs, ledgers, evaluations, episode logs, reports, the "
                        "collected data; no checkpoints) to DIR: to commit, or to resume the sweep elsewhere")
    p.add_argument("--launch", choices=("slurm", "tpu"), default=None,
                   help="hand each point to launch/slurm.py or launch/tpu.py instead of running here")
    p.add_argument("--launch-args", default="", help="options for the launcher, e.g. '--nodes 2 --partition gpu'")
    p.add_argument("--dry-run", action="store_true",
                   help="print each point's command (with --launch: the launcher's commands) and run nothing")
    p.add_argument("--overwrite", action="store_true", help="redo stages whose settings changed")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument("--json", action="store_true", help="print one JSON object as the last line")
    p.set_defaults(func=cmd_sweep)
