"""The training loop shared by every stage: jitted step, metrics, periodic eval and checkpoints.

Resuming is the default: if the stage's checkpoint directory holds a step, the train state *and*
the data iterator are restored, so the loss curve continues exactly where it stopped. Metrics go to
``metrics.jsonl`` / TensorBoard as ``STAGE/train/*`` and ``STAGE/valid/*``.
"""

from __future__ import annotations

import dataclasses
import math
import os
import time
from collections.abc import Callable, Iterator
from typing import Any

import jax
import numpy as np
from tqdm.auto import tqdm

from ee_jax.checkpoint import Checkpointer, selection
from ee_jax.config import Config
from ee_jax.data.batch import BATCH_KEYS, batch_sharding
from ee_jax.models.accounting import train_flops_per_token
from ee_jax.models.factory import abstract_model
from ee_jax.train.guard import StopSignals, TrainingInterrupted, describe_bad_batch
from ee_jax.train.metrics import MetricsWriter, device_peak_flops
from ee_jax.train.optimizer import learning_rate_schedule, train_optimizer
from ee_jax.train.state import TrainState, abstract_state, create_train_state
from ee_jax.train.step import make_eval_step, make_train_step


@dataclasses.dataclass
class FitResult:
    state: TrainState
    graphdef: Any
    history: list[dict]
    resumed_from: int | None
    summary: dict
    selection: dict | None = None  # see ee_jax.checkpoint.selection; None until the stage has finished


def global_batch(local: dict[str, np.ndarray], mesh) -> dict[str, jax.Array]:
    """Assemble each process's rows into one global array sharded over the batch axes."""
    sh = batch_sharding(mesh)
    return {k: jax.make_array_from_process_local_data(sh, np.asarray(local[k])) for k in BATCH_KEYS}


def fit(cfg: Config, mesh, batches: Iterator, to_batch: Callable[[Any], dict[str, np.ndarray]], *,
        stage: str = "lm", valid_batches: Callable[[], Iterator] | None = None,
        evaluate_fn: Callable[[Any, int], dict] | None = None, select: str = "last", select_metric: str = "loss",
        params=None, metadata: dict | None = None, progress: bool = True,
        eval_steps: set[int] | None = None) -> FitResult:
    """Train ``cfg.train.steps`` optimizer steps on ``batches`` (an iterator with get_state/set_state).

    ``to_batch`` turns one item of ``batches`` into the host arrays of :data:`BATCH_KEYS`. Every
    ``train.eval_every`` steps (and at the end) the model is evaluated on ``valid_batches()`` (loss,
    accuracy) and by ``evaluate_fn(params, step)`` (e.g. ``{"success": ...}`` from valid episodes);
    with ``select="best"`` each evaluation is checkpointed with its score and the best one is kept and
    recorded as the stage's selection (:mod:`ee_jax.checkpoint.selection`). ``params`` replaces random
    initialisation (a previous stage, imported weights). Raises :class:`TrainingInterrupted` after
    checkpointing on SIGTERM / SIGINT, :class:`NonFiniteLossError` on a NaN / inf loss.
    ``eval_steps`` replaces the ``train.eval_every`` schedule: evaluate after exactly these steps (and not
    where a run stops early), so methods of different lengths get the same evaluations.
    """
    t = cfg.train
    tx = train_optimizer(cfg, t.steps)
    schedule = learning_rate_schedule(cfg.optimizer, t.steps)
    ckpt_dir = os.path.join(cfg.run_dir, "ckpt", stage)
    ckpt = Checkpointer(ckpt_dir, keep=t.keep_checkpoints, async_save=t.async_checkpoint, keep_best=select == "best")
    resumed_from = ckpt.latest_step()
    evaluations: list[dict] = []
    if resumed_from is not None:
        _, abs_params = abstract_model(cfg.model, mesh)
        target = abstract_state(tx, abs_params, mesh)
        restored, saved_meta = ckpt.restore(resumed_from, target=target.as_dict(), data_iterator=batches)
        evaluations = list(saved_meta.get("evaluations", []))
        state = TrainState.from_dict(restored)
        graphdef, _ = abstract_model(cfg.model, mesh)
        shardings = jax.tree.map(lambda a: a.sharding, target)
    else:
        graphdef, state, shardings = create_train_state(cfg, tx, mesh, params)
    step_fn = make_train_step(graphdef, tx, shardings, mesh, t.grad_accum, schedule)
    eval_fn = make_eval_step(graphdef, shardings, mesh) if valid_batches else None
    evaluating = eval_fn is not None or evaluate_fn is not None

    writer = MetricsWriter(cfg.run_dir)
    flops_per_token = train_flops_per_token(cfg.model, t.seq_len)
    peak, peak_source = device_peak_flops()
    meta = {"stage": stage, **(metadata or {})}
    start = int(jax.device_get(state.step))
    history: list[dict] = []
    bar = tqdm(total=t.steps, initial=start, desc=f"train {stage}", disable=not progress or jax.process_index())
    last_time, last_step, tokens_since = time.perf_counter(), start, 0.0
    first_step_time = None
    saved = {resumed_from}
    pending = None  # (step, metrics, host batch, data position) of the newest step not yet checked

    def check(p) -> dict:
        """Fetch a step's metrics; stop on a non-finite loss (before anything is saved after it)."""
        m = {k: float(v) for k, v in jax.device_get(p[1]).items()}
        if not math.isfinite(m["loss"]):
            raise describe_bad_batch(cfg.run_dir, stage, p[0], m["loss"], p[2], p[3], ckpt.latest_step(), ckpt_dir)
        return m

    def save(step: int, score: float | None = None) -> None:
        ckpt.save(step, state.as_dict(), metadata={**meta, "step": step, "evaluations": evaluations},
                  data_iterator=batches, score=score, force=True)
        saved.add(step)

    try:
        end = min(t.steps, start + t.stop_after_steps) if t.stop_after_steps else t.steps  # N more steps
        with StopSignals() as stop:
            for step in range(start, end):
                if stop.signum is not None:
                    if pending is not None:
                        check(pending)
                    if step not in saved:
                        save(step)
                    raise TrainingInterrupted(stage, step, stop.signum, ckpt_dir)
                data_state = batches.get_state() if hasattr(batches, "get_state") else None
                host = to_batch(next(batches))
                t0 = time.perf_counter()
                state, metrics = step_fn(state, global_batch(host, mesh))
                if pending is not None:  # checked one step late, so the host never waits on the device
                    check(pending)
                done = step + 1
                pending = (done, metrics, host, data_state)
                if first_step_time is None:
                    jax.block_until_ready(metrics)
                    first_step_time = time.perf_counter() - t0  # includes compilation
                    last_time, last_step, tokens_since = time.perf_counter(), done, 0.0
                else:
                    tokens_since += t.batch_size * t.seq_len
                bar.update(1)
                if done % t.log_every == 0 or done == end:
                    m = check(pending)
                    now = time.perf_counter()
                    if done > last_step and tokens_since:
                        m["tokens_per_s"] = tokens_since / (now - last_time)
                        m["mfu"] = m["tokens_per_s"] * flops_per_token / peak
                    last_time, last_step, tokens_since = now, done, 0.0
                    writer.write(done, m, prefix=f"{stage}/train/")
                    history.append({"step": done, **m})
                    bar.set_postfix(loss=f"{m['loss']:.3f}")
                score = None
                due = done in eval_steps if eval_steps is not None else (done % t.eval_every == 0 or done == end)
                if evaluating and due:
                    check(pending)
                    ev = evaluate(eval_fn, state.params, valid_batches(), to_batch, mesh) if eval_fn else {}
                    if evaluate_fn is not None:
                        ev.update(evaluate_fn(state.params, done))
                    score = selection.score(ev, select_metric)
                    evaluations.append({"step": done, **ev, "score": score})
                    writer.write(done, ev, prefix=f"{stage}/valid/")
                    history.append({"step": done, **{"valid_" + k: v for k, v in ev.items()}})
                    last_time = time.perf_counter()  # evaluation time is not training throughput
                if done % t.checkpoint_every == 0 or done == end or (score is not None and select == "best"):
                    check(pending)
                    save(done, score)
            if pending is not None:
                check(pending)
        final = int(jax.device_get(state.step))
        chosen = None
        if final == t.steps:
            ckpt.wait()
            chosen = selection.choose(evaluations, final, select, select_metric)
            if jax.process_index() == 0:
                selection.write_selection(ckpt_dir, chosen)
    finally:
        bar.close()
        ckpt.wait()
        ckpt.close()
        writer.close()
    summary = {
        "stage": stage, "steps": t.steps, "resumed_from": resumed_from, "first_step_s": first_step_time,
        "flops_per_token": flops_per_token, "peak_flops": peak, "peak_source": peak_source,
        "final": history[-1] if history else None,
        "selected_step": chosen["step"] if chosen else None,
    }
    return FitResult(state, graphdef, history, resumed_from, summary, chosen)


def evaluate(eval_fn, params, batches: Iterator, to_batch, mesh) -> dict[str, float]:
    """Token-weighted mean loss and accuracy over a finite iterator of validation batches."""
    total = count = correct = 0.0
    for item in batches:
        out = jax.device_get(eval_fn(params, global_batch(to_batch(item), mesh)))
        total += float(out["loss_sum"])
        count += float(out["weighted_tokens"])
        correct += float(out["correct"])
    return {"loss": total / max(count, 1.0), "accuracy": correct / max(count, 1.0), "weighted_tokens": count}
