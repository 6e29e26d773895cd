"""``ee-jax data show | stats``: look at what a run's pipelines train on.

``show`` renders the first records of an objective exactly as the pipeline does and marks the tokens
the loss covers (ANSI colour on a terminal, ``[[ ... ]]`` otherwise); ``stats`` lists the store's
record counts per kind and split and the dataset size of every objective.
"""

from __future__ import annotations

import dataclasses
import itertools
import os
import sys

from ee_jax.cli.common import emit, positive_int
from ee_jax.config import load_config
from ee_jax.data.examples import OBJECTIVES, render_record, sources_for
from ee_jax.data.experience_dataset import dataset_sizes, read_selected, select_records
from ee_jax.data.tokenizer_corpus import ensure_tokenizer
from ee_jax.records.schema import KINDS
from ee_jax.records.store import finished_shards, load_manifest
from ee_jax.rundir import RunDir

_ON, _OFF = "\x1b[1;32m", "\x1b[0m"


def _load_cfg(args):
    path = RunDir(args.run_dir).config
    if not os.path.exists(path):
        raise FileNotFoundError(f"{args.run_dir!r} has no config.yaml: not an ee-jax run directory")
    cfg = load_config(path, list(args.override or []))
    return dataclasses.replace(cfg, run_dir=args.run_dir)  # the run may have been moved


def _pieces(tokenizer, ids, mask) -> list[tuple[str, bool]]:
    """``(text, trained)`` runs of the sequence; EOS ids (which decode to nothing) are shown as text."""
    eos = tokenizer.eos_id
    eos_text = tokenizer.id_to_token(eos) if eos >= 0 else ""
    out = []
    pairs = zip((int(i) for i in ids), (bool(m) for m in mask))
    for (is_eos, trained), group in itertools.groupby(pairs, key=lambda p: (p[0] == eos, p[1])):
        run = [i for i, _ in group]
        out.append((eos_text * len(run) if is_eos else tokenizer.decode(run), trained))
    return out


def _highlight(pieces: list[tuple[str, bool]], color: bool) -> str:
    on, off = (_ON, _OFF) if color else ("[[", "]]")
    runs = [(trained, "".join(text for text, _ in group))
            for trained, group in itertools.groupby(pieces, key=lambda p: p[1])]
    return "".join(on + text + off if trained else text for trained, text in runs)


def cmd_show(args) -> None:
    """``data show``: the first ``--n`` records of each kind of the objective, rendered as trained."""
    cfg = _load_cfg(args)
    tok = ensure_tokenizer(cfg)
    data_dir = RunDir(cfg.run_dir).data
    color = sys.stdout.isatty() and not args.no_color
    max_len = cfg.train.seq_len + 1
    lines, examples = [], []
    for kind, weight in sources_for(args.objective, cfg).items():
        if weight <= 0:
            continue
        sel = select_records(data_dir, kind, args.split, cfg.data.include_dropped_reflections)
        if not len(sel):
            lines.append(f"(no {kind} records in split {args.split!r} of {data_dir})")
            continue
        for rec in read_selected(sel, range(min(args.n, len(sel)))):
            ex = render_record(rec, args.objective, tok, cfg.tokenizer.template, cfg.prompt, max_len)
            head = f"=== {args.objective} | {kind} | traj {rec['traj_id']} step {rec['step']}"
            if ex is None:
                lines.append(f"{head} | dropped: the target is longer than train.seq_len+1={max_len} tokens ===")
                examples.append({"kind": kind, "traj_id": rec["traj_id"], "step": rec["step"], "dropped": True,
                                 "prompt_text": None, "target_text": None, "tokens": 0, "trained_tokens": 0})
                continue
            trained = int(ex.loss_mask.sum())
            lines.append(f"{head} | {len(ex.ids)} tokens, {trained} trained ===")
            lines.append(_highlight(_pieces(tok, ex.ids, ex.loss_mask), color))
            m = ex.loss_mask > 0
            examples.append({"kind": kind, "traj_id": rec["traj_id"], "step": rec["step"], "dropped": False,
                             "prompt_text": tok.decode(ex.ids[~m]), "target_text": tok.decode(ex.ids[m]),
                             "tokens": len(ex.ids), "trained_tokens": trained})
    emit(args, "\n".join(lines), {"objective": args.objective, "split": args.split, "examples": examples})


def cmd_stats(args) -> None:
    """``data stats``: records per kind and split (manifest, else sidecars) and every objective's sizes."""
    cfg = _load_cfg(args)
    data_dir = RunDir(cfg.run_dir).data
    manifest = load_manifest(data_dir)
    kinds = {}
    for kind in KINDS:
        if kind in manifest:
            sec = manifest[kind]
            kinds[kind] = {"from": "manifest", "shards": sec["shards"], "records": sec["records"],
                           "by_split": sec["by_split"], "counters": sec.get("counters", {})}
            continue
        metas = list(finished_shards(data_dir, kind).values())
        if metas:  # a stage still running (or interrupted): its finished shards so far
            by_split: dict[str, int] = {}
            for m in metas:
                for s, n in m.get("by_split", {}).items():
                    by_split[s] = by_split.get(s, 0) + n
            kinds[kind] = {"from": "sidecars", "shards": len(metas), "records": sum(m["records"] for m in metas),
                           "by_split": by_split}
    splits = sorted({s for k in kinds.values() for s in k["by_split"]})
    sizes = {obj: {s: dataset_sizes(cfg, obj, s, data_dir) for s in splits} for obj in OBJECTIVES}
    lines = [f"data dir {data_dir}"]
    if not kinds:
        lines.append("  (no records)")
    for kind, k in kinds.items():
        per = ", ".join(f"{s} {n}" for s, n in sorted(k["by_split"].items()))
        lines.append(f"  {kind:<12} {k['records']:>8} records in {k['shards']} shard(s) ({per}) [{k['from']}]")
    for obj, per_split in sizes.items():
        for s, per_kind in per_split.items():
            lines.append(f"  {obj:<4} {s:<6} " + ", ".join(f"{kind} {n}" for kind, n in per_kind.items()))
    emit(args, "\n".join(lines), {"data_dir": data_dir, "kinds": kinds, "sizes": sizes})


def add_parser(sub) -> None:
    """Register ``ee-jax data show`` and ``ee-jax data stats``."""
    data = sub.add_parser("data", help="show rendered training examples, store statistics")
    ds = data.add_subparsers(dest="data_command", required=True)

    def common(p) -> None:
        p.add_argument("run_dir")
        p.add_argument("-o", "--override", action="append", metavar="KEY=VALUE",
                       help="config override, e.g. -o train.seq_len=512; repeatable")
        p.add_argument("--json", action="store_true", help="print one JSON object as the last line")

    sh = ds.add_parser("show", help="the first examples of an objective, trained tokens highlighted")
    common(sh)
    sh.add_argument("--objective", required=True, choices=OBJECTIVES)
    sh.add_argument("--n", type=positive_int, default=3, help="examples per record kind")
    sh.add_argument("--split", default="train")
    sh.add_argument("--no-color", action="store_true", help="mark trained tokens with [[ ]] even on a terminal")
    sh.set_defaults(func=cmd_show)

    st = ds.add_parser("stats", help="records per kind and split; dataset size of every objective")
    common(st)
    st.set_defaults(func=cmd_stats)
