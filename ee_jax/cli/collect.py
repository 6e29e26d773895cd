"""``ee-jax collect expert | explore | reflect | all``: build the run's experience store.

Each stage reads the previous one's shards from ``RUN/data`` and writes its own; rerunning a stage
resumes it (finished shards are kept), and changed settings are refused unless ``--overwrite``.
"""

from __future__ import annotations

import argparse

from ee_jax.cli.common import emit, load_run_config
from ee_jax.experience.collect import STAGES, run_stage
from ee_jax.rundir import RunDir


def _load(args):
    return load_run_config(args.config)


def _summary(stage: str, section: dict) -> tuple[str, dict]:
    c = section.get("counters", {})
    payload = {k: v for k, v in section.items() if k != "files"}
    head = (f"{stage:<8} {section.get('records', 0):>7} records in {section.get('shards', 0)} shard(s)  "
            f"by split {section.get('by_split', {})}")
    lines = [head]
    if stage == "expert":
        lines.append(f"         trajectories {c.get('trajectories', 0)} (won {c.get('won', 0)}, not won "
                     f"{c.get('not_won', 0)}), oracle failures {c.get('failed', 0)}, duplicates "
                     f"{c.get('duplicates', 0)}, skipped lines {len(section.get('skipped_lines', []))}, "
                     f"replay errors {len(c.get('replay_errors', []))}")
    elif stage == "explore":
        t = section.get("timing", {})
        lines.append(f"         states {c.get('states', 0)}, branches {c.get('branches', 0)} {c.get('by_source', {})}, "
                     f"invalid {c.get('invalid', 0)}, replaced {c.get('replaced', 0)}, topped up "
                     f"{c.get('topped_up', 0)}" + (f", {t['branches_per_s']:.0f} branches/s" if t else ""))
    else:
        lines.append(f"         verdicts {c.get('verdict', {})}, dropped by reason {c.get('dropped_reasons', {})}")
    return "\n".join(lines), payload


def cmd_collect(args) -> None:
    cfg = _load(args)
    stages = STAGES if args.stage == "all" else (args.stage,)
    human, payload = [], {"run_dir": cfg.run_dir}
    for stage in stages:
        text, section = _summary(stage, run_stage(cfg, stage, overwrite=args.overwrite,
                                                  progress=not args.no_progress))
        human.append(text)
        payload[stage] = section
    human.append(f"data     {RunDir(cfg.run_dir).data}")
    emit(args, "\n".join(human), payload)


def add_parser(sub) -> None:
    p = sub.add_parser("collect", help="collect expert steps, explore alternatives, write reflections",
                       formatter_class=argparse.RawDescriptionHelpFormatter,
                       description="expert:  expert trajectories (environment oracle or a JSONL file)\n"
                                   "explore: K alternative actions at every expert state, executed\n"
                                   "reflect: reflections comparing the expert action with the alternatives\n"
                                   "all:     the three in order")
    p.add_argument("stage", choices=(*STAGES, "all"))
    p.add_argument("config", nargs="*", help="[CONFIG.yaml] [key=value ...], e.g. experience.explore.k=4")
    p.add_argument("--overwrite", action="store_true", help="delete shards written with other settings and redo them")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--json", action="store_true", help="print one JSON object as the last line")
    p.set_defaults(func=cmd_collect)
