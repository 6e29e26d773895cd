"""``ee-jax run CONFIG``: the whole comparison in one command.

    expert collection -> exploration -> reflection -> tokenizer (scratch models; earlier when a
      collection stage runs the policy) -> per seed: train il / iwm / sr -> evaluate each (test, ood, world model)
      -> report.md, report.json, plots/

Data are collected once (``seed``); every entry of ``recipe.seeds`` trains and evaluates every method
in ``RUN/seeds/S/`` (its own run directory; ``data`` and ``tokenizer`` link to the shared ones).
Re-running the command skips what is finished with the same settings and resumes what was
interrupted; changed settings are refused naming the keys (``--overwrite`` redoes them).

Every stage's wall clock is appended to ``RUN/timings.jsonl`` (also when Ctrl-C or a preemption
signal interrupts it), so the time a run took is known after it was resumed several times:
``run_summary.json`` has this invocation's ``timings`` and the ledger's ``timings_total``.
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
import time

import jax

from ee_jax.agent.policy import load_policy
from ee_jax.config import Config, save_config
from ee_jax.data.tokenizer_corpus import ensure_tokenizer
from ee_jax.eval import evaluate_policy
from ee_jax.experience.collect import run_stage
from ee_jax.parallel import initialize_distributed
from ee_jax.pipeline.timings import append_timing, total_timings
from ee_jax.report import build_report
from ee_jax.rl.trainer import train_rl
from ee_jax.rundir import RunDir
from ee_jax.runinfo import run_info
from ee_jax.runtime import release_memory, reset_peak_memory, resident_memory_gb
from ee_jax.train.recipes import train_method


def _link(target: str, link: str) -> None:
    if not os.path.lexists(link):
        os.symlink(os.path.relpath(target, os.path.dirname(link)), link)


def seed_config(cfg: Config, seed: int) -> Config:
    """The run directory of one training seed: ``RUN/seeds/S``, sharing the data and tokenizer."""
    run = RunDir(cfg.run_dir)
    srun = run.seed(seed)
    scfg = dataclasses.replace(cfg, run_dir=srun.root, seed=seed)
    if jax.process_index() == 0:
        os.makedirs(srun.root, exist_ok=True)
        _link(run.data, srun.data)
        if not cfg.tokenizer.path:
            _link(run.tokenizer, srun.tokenizer)
        save_config(scfg, srun.config, extra=run_info(seed))
    return scfg


def _eval_is_current(path: str, policy, cfg: Config) -> bool:
    """Whether ``path`` evaluated ``policy`` (None: whichever checkpoint it was) with ``cfg.eval``."""
    if not os.path.exists(path):
        return False
    with open(path, encoding="utf-8") as f:
        old = json.load(f)
    settings = old.get("settings", {})
    same = all(settings.get(k) == v for k, v in dataclasses.asdict(cfg.eval).items())
    source_ok = policy is None or old.get("source") == policy.source  # None: no checkpoint to compare
    return source_ok and same and sorted(old.get("splits", {})) == sorted(cfg.eval.splits)


def _evaluable(cfg: Config, method: str, policy_stage: str) -> bool:
    """Whether a trained method can be (or was) evaluated: its checkpoint is there, or its evaluation is."""
    run = RunDir(cfg.run_dir)
    return _eval_is_current(run.eval_record(method), None, cfg) or run.has_checkpoint(policy_stage)


def evaluate_method(cfg: Config, method: str, policy_stage: str, *, force: bool = False,
                    progress: bool = True) -> dict:
    """Evaluate a trained method's selected checkpoint (skipped when its eval file is current and the
    method was not retrained, ``force=False``).

    A finished method whose checkpoints were removed (disk clean-up after a sweep point, or results
    copied to a fresh machine without them) keeps its evaluation when the eval settings are unchanged:
    there is nothing to re-evaluate, and its training record says it is done."""
    run = RunDir(cfg.run_dir)
    path = run.eval_record(method)
    if not force and _eval_is_current(path, None, cfg) and not run.has_checkpoint(policy_stage):
        print(f"{cfg.run_dir}: {method}'s checkpoint ({policy_stage}) is gone; keeping its evaluation {path}",
              file=sys.stderr, flush=True)
        with open(path, encoding="utf-8") as f:
            return {**json.load(f), "skipped": True, "checkpoint_removed": True}
    policy = load_policy(cfg=cfg, stage=policy_stage)
    if not force and _eval_is_current(path, policy, cfg):
        with open(path, encoding="utf-8") as f:
            return {**json.load(f), "skipped": True}
    return evaluate_policy(policy, cfg, stage=method, out_dir=cfg.run_dir, progress=progress)


def _result_row(record: dict, ev: dict) -> dict:
    """A method's line of ``run_summary.json``: updates, whether training was skipped, success per split."""
    return {"updates": record["updates"], "skipped_training": bool(record.get("skipped")),
            **{split: ev["splits"][split]["success"] for split in ev["splits"]}}


def rl_starts(cfg: Config) -> list[str]:
    """The RL rows of the main job: ``rl.starts`` when ``recipe.methods`` includes ``rl``, in order."""
    if "rl" not in cfg.recipe.methods:
        return []
    return list(cfg.rl.starts)


def collection_stages(cfg: Config) -> list[str]:
    """The collect stages the configured methods need (imitation alone needs only expert data; RL step
    groups branch the explored expert states; ``il_matched`` takes its budget from SR's data)."""
    methods = set(cfg.recipe.methods) | set(rl_starts(cfg))
    reflect = bool(methods & {"sr", "il_matched"})
    explore = reflect or "iwm" in methods or (cfg.rl.step_groups.enabled and bool(rl_starts(cfg)))
    return ["expert"] + (["explore"] if explore else []) + (["reflect"] if reflect else [])


def run_experiment(cfg: Config, *, overwrite: bool = False, progress: bool = True) -> dict:
    """Run (or resume) the experiment of ``cfg``; returns the summary (also in ``report.json``)."""
    initialize_distributed(cfg.distributed)
    t0 = time.perf_counter()
    timings: dict[str, float] = {}
    run = RunDir(cfg.run_dir)
    if jax.process_index() == 0:
        os.makedirs(run.root, exist_ok=True)
        save_config(cfg, run.config, extra=run_info(cfg.seed))

    memory: dict[str, dict[str, float]] = {}  # per stage: peak resident GB, and after release_memory
    ledger = run.timings

    def timed(name: str, fn, *a, seed: int | None = None, **kw):
        start = time.perf_counter()
        reset_peak_memory()
        out = None
        finished = False
        try:
            out = fn(*a, **kw)
            finished = True
        finally:  # an interrupted stage's time is spent too: the ledger keeps it
            seconds = time.perf_counter() - start
            if jax.process_index() == 0:
                append_timing(ledger, name, seconds, seed=seed, interrupted=not finished,
                              skipped=isinstance(out, dict) and bool(out.get("skipped")))
        timings[name] = timings.get(name, 0.0) + seconds
        peak = resident_memory_gb()[1]
        memory[name] = {"peak_gb": round(peak, 2), "after_gb": round(release_memory(), 2)}
        return out

    data_dir = run.data
    # A scratch tokenizer is trained from the records that exist when a model first needs one: after
    # all collection, unless exploration or reflection run the policy (then after the expert data).
    # The same as `ee-jax collect all` followed by `ee-jax train`.
    collected = {s: timed(f"collect_{s}", run_stage, cfg, s, overwrite=overwrite, progress=progress)
                 for s in collection_stages(cfg)}
    if not cfg.tokenizer.path:
        timed("tokenizer", ensure_tokenizer, cfg, data_dir)

    results = {}
    for seed in cfg.recipe.seeds:
        scfg = seed_config(cfg, seed)
        for method in [m for m in cfg.recipe.methods if m != "rl"]:
            record = timed(f"train_{method}", train_method, scfg, method, data_dir=data_dir, overwrite=overwrite,
                           progress=progress, seed=seed)
            if record.get("skipped") and not _evaluable(scfg, method, record["policy_stage"]):
                # trained, but its checkpoint is gone (results copied without checkpoints) before it was
                # evaluated: nothing to evaluate, so this one method is trained again
                record = timed(f"train_{method}", train_method, scfg, method, data_dir=data_dir, overwrite=True,
                               progress=progress, seed=seed)
            if record.get("stopped_at") is not None:  # time-boxed (train.stop_after_steps): resume by re-running
                return {"run_dir": cfg.run_dir, "seconds": time.perf_counter() - t0, "timings": timings,
                        "stopped": {"seed": seed, **record}, "results": results,
                        "report": run.report_md, "table": None}
            ev = timed(f"eval_{method}", evaluate_method, scfg, method, record["policy_stage"],
                       force=not record.get("skipped"), progress=progress, seed=seed)
            results[f"{seed}/{method}"] = _result_row(record, ev)
        for start in rl_starts(cfg):  # RL continuation rows: the same hyperparameters from every start
            record = timed(f"train_{cfg.rl.algorithm}_from_{start}", train_rl, scfg, init=start, overwrite=overwrite,
                           progress=progress, seed=seed)
            stage = record["policy_stage"]
            ev = timed(f"eval_{stage}", evaluate_method, scfg, stage, stage, force=not record.get("skipped"),
                       progress=progress, seed=seed)
            results[f"{seed}/{stage}"] = _result_row(record, ev)
    report = build_report(cfg.run_dir) if jax.process_index() == 0 else {}
    summary = {"run_dir": cfg.run_dir, "seconds": time.perf_counter() - t0, "timings": timings,
               "timings_total": total_timings(ledger), "memory": memory,
               "collected": {s: sec.get("records") for s, sec in collected.items()},
               "results": results,
               "report": run.report_md}
    run.write_json(run.summary, {**summary, "report_json": run.report_json})
    return {**summary, "table": report.get("table") if isinstance(report, dict) else None}
