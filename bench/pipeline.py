"""Experience-pipeline benchmark: batches/s out of the Grain pipelines vs what the train step consumes.

Usage::

    python bench/pipeline.py                          # household store, seq 512, batch 16, ee-1m
    python bench/pipeline.py --tasks 32 --batches 20 --no-train

The last stdout line is one JSON object. What is measured:

(a) ``store``: a household experience store written by the collect stages themselves: oracle
    trajectories on ``--tasks`` train tasks, ``--k`` uniform alternatives per expert state, one
    ``template`` reflection per state (with its filter verdict); shards of ``--tasks-per-shard`` tasks.
(b) ``tokenizer``: the run's tokenizer trained from the store (``ensure_tokenizer``, ``tokenizer.vocab_size``).
(c) ``pipeline.<objective>``: ``experience_batches(cfg, objective, tok)`` (shuffled, repeated, packed
    unless ``--no-packing``), ``--batches`` batches timed after one untimed batch. Reported: batches/s,
    ``row_tokens_per_s`` (rows x seq_len tokens per second: what one train step consumes per batch),
    ``tokens_per_s`` (real, non-padding tokens), ``target_tokens_per_s``, ``examples_per_s``, packing fill.
    Single process, ``data.read_threads`` (default 0: reads in the calling thread).
(d) ``train``: the train step of ``--preset`` (vocabulary = the tokenizer's) exactly as the trainer
    builds it (``create_train_state`` + ``make_train_step``, one device), on a real pipeline batch:
    ``--warmup`` untimed then ``--steps`` timed steps; tokens/s = batch x seq_len / median step time.
(e) ``ratio``: pipeline row tokens/s / train-step tokens/s per objective, and the minimum (target >= 10).

The pipeline and the train step are timed one after the other in the same process, each in a
:class:`~bench.machine.Section` (``idle_frac_others``: share of the machine other processes left us).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from ee_jax import runtime  # noqa: E402

runtime.configure()  # the framework's process defaults (ee_jax/runtime.py), before JAX starts

from bench.machine import Section, machine_info, wait_idle  # noqa: E402

# ------------------------------------------------------------------------------------------ store


def build_store(cfg) -> dict:
    """The store of (a), written by the real collect stages; returns record counts and the build time."""
    from ee_jax.experience.collect import run_stage

    t0 = time.perf_counter()
    records = {kind: run_stage(cfg, stage, progress=False)["records"]
               for stage, kind in (("expert", "expert_step"), ("explore", "transition"), ("reflect", "reflection"))}
    return {"tasks": cfg.experience.tasks["train"], "k": cfg.experience.explore.k, "records": records,
            "build_s": round(time.perf_counter() - t0, 2)}


# ------------------------------------------------------------------------------------------ pipeline


def bench_pipeline(cfg, objective: str, tok, n_batches: int, args) -> tuple[dict, dict]:
    """Throughput of one objective's iterator; returns (report, one batch for the train step)."""
    from ee_jax.data.experience_dataset import experience_batches

    t0 = time.perf_counter()
    it = experience_batches(cfg, objective, tok)
    build_s = time.perf_counter() - t0
    first = next(it)  # untimed: opens the shards, fills the first packing round
    before = it.stats()
    wait_idle(args.idle_threshold, args.max_wait, f"pipeline {objective}")
    with Section() as sec:
        for _ in range(n_batches):
            next(it)
    after = it.stats()
    d = {k: after[k] - before[k] for k in ("batches", "rows", "tokens", "target_tokens")}
    examples = sum(after["examples"].values()) - sum(before["examples"].values())
    row_tokens = d["rows"] * cfg.train.seq_len
    return {
        "build_s": round(build_s, 3), "batches": d["batches"], "batches_per_s": round(d["batches"] / sec.wall, 2),
        "row_tokens_per_s": round(d["batches"] * cfg.train.batch_size * cfg.train.seq_len / sec.wall),
        "tokens_per_s": round(d["tokens"] / sec.wall), "target_tokens_per_s": round(d["target_tokens"] / sec.wall),
        "examples_per_s": round(examples / sec.wall, 1), "packing_fill": round(d["tokens"] / max(row_tokens, 1), 3),
        "examples_per_row": round(examples / max(d["rows"], 1), 2),
        "dropped_too_long": after["dropped_too_long"], "epochs": {k: round(v, 3) for k, v in after["epochs"].items()},
        "sizes": after["sizes"], **sec.report(),
    }, first


# ------------------------------------------------------------------------------------------ train step


def bench_train(cfg, item: dict, args) -> dict:
    import jax

    from ee_jax.data.batch import batch_sharding
    from ee_jax.data.experience_dataset import to_train_batch
    from ee_jax.models.accounting import param_count
    from ee_jax.parallel import single_device_mesh
    from ee_jax.parallel.rules import use_mesh
    from ee_jax.train.optimizer import make_optimizer
    from ee_jax.train.state import create_train_state
    from ee_jax.train.step import make_train_step

    mesh = single_device_mesh()
    tx = make_optimizer(cfg.optimizer, 1000)
    gdef, state, sh = create_train_state(cfg, tx, mesh)
    step = make_train_step(gdef, tx, sh, mesh)
    bs = batch_sharding(mesh)
    batch = {k: jax.device_put(v, bs) for k, v in to_train_batch(item).items()}
    with use_mesh(mesh):
        t0 = time.perf_counter()
        compiled = step.jitted.lower(state, batch).compile()
        compile_s = time.perf_counter() - t0
    for _ in range(args.warmup):
        state, m = compiled(state, batch)
    jax.block_until_ready(m if args.warmup else state)
    wait_idle(args.idle_threshold, args.max_wait, "train step")
    times = []
    with Section() as sec:
        for _ in range(args.steps):
            t = time.perf_counter()
            state, m = compiled(state, batch)
            jax.block_until_ready(m)
            times.append(time.perf_counter() - t)
    med = statistics.median(times)
    tokens = cfg.train.batch_size * cfg.train.seq_len
    return {"preset": args.preset, "params": param_count(cfg.model), "device": str(jax.devices()[0].device_kind),
            "compile_s": round(compile_s, 2), "step_median_s": round(med, 4),
            "step_times_s": [round(t, 4) for t in times], "tokens_per_s": round(tokens / med), **sec.report()}


# ------------------------------------------------------------------------------------------ main


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--tasks", type=int, default=64, help="household train tasks in the store")
    p.add_argument("--k", type=int, default=8, help="uniform alternatives per expert state")
    p.add_argument("--tasks-per-shard", type=int, default=16)
    p.add_argument("--objectives", default="il,iwm,sr")
    p.add_argument("--seq", type=int, default=512, help="train.seq_len (rows are seq + 1 tokens)")
    p.add_argument("--batch", type=int, default=16, help="train.batch_size")
    p.add_argument("--batches", type=int, default=50, help="timed pipeline batches per objective")
    p.add_argument("--no-packing", action="store_true", help="one example per row (data.packing=false)")
    p.add_argument("--preset", default="ee-1m")
    p.add_argument("--steps", type=int, default=10, help="timed train steps (median reported)")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--no-train", action="store_true", help="skip the train step")
    p.add_argument("--run-dir", default="", help="reuse/keep the store and tokenizer here (default: a temp dir)")
    p.add_argument("--idle-threshold", type=float, default=0.3, help="max cores used by others before timing")
    p.add_argument("--max-wait", type=float, default=120.0, help="seconds to wait for an idle machine")
    p.add_argument("override", nargs="*", help="extra ee_jax config overrides, e.g. data.packing_bins=32")
    args = p.parse_args(argv)

    import dataclasses

    from ee_jax.config import load_config
    from ee_jax.data.tokenizer_corpus import ensure_tokenizer
    from ee_jax.records.store import finished_shards

    run_dir = args.run_dir or tempfile.mkdtemp(prefix="ee_jax_bench_pipeline_")
    over = [f"run_dir={run_dir}", f"model.preset={args.preset}", f"train.seq_len={args.seq}",
            f"train.batch_size={args.batch}", f"data.packing={not args.no_packing}",
            f"experience.tasks.train={args.tasks}", "experience.tasks.valid=0", f"experience.explore.k={args.k}",
            f"experience.tasks_per_shard={args.tasks_per_shard}", "experience.reflect.generator=grounded",
            ] + list(args.override)
    cfg = load_config(None, over)
    out: dict = {"bench": "pipeline", "seq": args.seq, "batch": args.batch, "packing": cfg.data.packing,
                 "packing_bins": cfg.data.packing_bins, "read_threads": cfg.data.read_threads,
                 "overrides": args.override, "machine": machine_info()}
    data_dir = os.path.join(run_dir, "data")
    if finished_shards(data_dir, "expert_step"):
        out["store"] = {"reused": data_dir}
    else:
        out["store"] = build_store(cfg)
    print(f"store {out['store']}", file=sys.stderr)
    t0 = time.perf_counter()
    tok = ensure_tokenizer(cfg)
    out["tokenizer"] = {"vocab_size": tok.vocab_size, "s": round(time.perf_counter() - t0, 2)}
    cfg = dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, vocab_size=tok.vocab_size))

    out["pipeline"], sample = {}, None
    for objective in args.objectives.split(","):
        out["pipeline"][objective], item = bench_pipeline(cfg, objective, tok, args.batches, args)
        sample = sample or item
        r = out["pipeline"][objective]
        print(f"pipeline {objective}: {r['batches_per_s']} batches/s, {r['row_tokens_per_s']} row tok/s, "
              f"{r['examples_per_s']} examples/s, fill {r['packing_fill']}", file=sys.stderr)
    if not args.no_train:
        out["train"] = bench_train(cfg, sample, args)
        t = out["train"]
        print(f"train {args.preset}: {t['step_median_s']} s/step, {t['tokens_per_s']} tok/s", file=sys.stderr)
        ratios = {o: r["row_tokens_per_s"] / t["tokens_per_s"] for o, r in out["pipeline"].items()}
        out["ratio"] = {o: round(v, 2) for o, v in ratios.items()}
        out["ratio_min"] = round(min(ratios.values()), 2)
    print(json.dumps(out))
    return out


if __name__ == "__main__":
    main()
