"""The training loop shared by every stage: jitted step, metrics, periodic eval and checkpoints.

Resuming is the default: if the stage's checkpoint directory holds a step, the train state *and*
the data iterator are restored, so the loss curve continues exactly where it stopped.
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

from ee_jax.checkpoint import Checkpointer
from ee_jax.config import Config
from ee_jax.models.accounting import train_flops_per_token
from ee_jax.models.factory import abstract_model
from ee_jax.train.metrics import MetricsWriter, device_peak_flops
from ee_jax.train.optimizer import learning_rate_schedule, make_optimizer
from ee_jax.train.state import TrainState, abstract_state, create_train_state
from ee_jax.train.step import BATCH_KEYS, batch_sharding, make_eval_step, make_train_step


@dataclasses.dataclass
class FitResult:
    state: TrainState
    graphdef: Any
    history: list[dict]
    resumed_from: int | None
    summary: dict


def global_batch(local: dict[str, np.ndarray], mesh) -> dict[str, jax.Array]:
    """Assemble each process's rows into one global array sharded over the batch axes."""
    sh = batch_sharding(mesh)
    return {k: jax.make_array_from_process_local_data(sh, np.asarray(local[k])) for k in BATCH_KEYS}


def fit(cfg: Config, mesh, batches: Iterator, to_batch: Callable[[Any], dict[str, np.ndarray]], *,
        stage: str = "lm", valid_batches: Callable[[], Iterator] | None = None, params=None,
        metadata: dict | None = None, progress: bool = True) -> FitResult:
    """Train ``cfg.train.steps`` optimizer steps on ``batches`` (an iterator with get_state/set_state).

    ``to_batch`` turns one item of ``batches`` into the host arrays of :data:`BATCH_KEYS`.
    """
    t = cfg.train
    tx = make_optimizer(cfg.optimizer, t.steps)
    schedule = learning_rate_schedule(cfg.optimizer, t.steps)
    ckpt_dir = os.path.join(cfg.run_dir, "ckpt", stage)
    ckpt = Checkpointer(ckpt_dir, keep=t.keep_checkpoints, async_save=t.async_checkpoint)
    resumed_from = ckpt.latest_step()
    if resumed_from is not None:
        _, abs_params = abstract_model(cfg.model, mesh)
        target = abstract_state(tx, abs_params, mesh)
        restored, _ = ckpt.restore(resumed_from, target=target.as_dict(), data_iterator=batches)
        state = TrainState.from_dict(restored)
        graphdef, _ = abstract_model(cfg.model, mesh)
        shardings = jax.tree.map(lambda a: a.sharding, target)
    else:
        graphdef, state, shardings = create_train_state(cfg, tx, mesh, params)
    step_fn = make_train_step(graphdef, tx, shardings, mesh, t.grad_accum, schedule)
    eval_fn = make_eval_step(graphdef, shardings, mesh) if valid_batches else None

    writer = MetricsWriter(cfg.run_dir)
    flops_per_token = train_flops_per_token(cfg.model, t.seq_len)
    peak, peak_source = device_peak_flops()
    meta = {"stage": stage, **(metadata or {})}
    start = int(jax.device_get(state.step))
    history: list[dict] = []
    bar = tqdm(total=t.steps, initial=start, desc=f"train {stage}", disable=not progress or jax.process_index())
    last_time, last_step, tokens_since = time.perf_counter(), start, 0.0
    first_step_time = None
    try:
        end = min(t.steps, t.stop_after_steps) if t.stop_after_steps else t.steps
        for step in range(start, end):
            batch = global_batch(to_batch(next(batches)), mesh)
            t0 = time.perf_counter()
            state, metrics = step_fn(state, batch)
            if first_step_time is None:
                jax.block_until_ready(metrics)
                first_step_time = time.perf_counter() - t0  # includes compilation
                last_time, last_step, tokens_since = time.perf_counter(), step + 1, 0.0
            else:
                tokens_since += t.batch_size * t.seq_len
            done = step + 1
            bar.update(1)
            if done % t.log_every == 0 or done == end:
                m = {k: float(v) for k, v in jax.device_get(metrics).items()}
                if not math.isfinite(m["loss"]):
                    raise FloatingPointError(f"{stage}: loss is {m['loss']} at step {done}; last checkpoint "
                                             f"kept in {ckpt_dir} (step {ckpt.latest_step()})")
                now = time.perf_counter()
                if done > last_step and tokens_since:
                    m["tokens_per_s"] = tokens_since / (now - last_time)
                    m["mfu"] = m["tokens_per_s"] * flops_per_token / peak
                last_time, last_step, tokens_since = now, done, 0.0
                writer.write(done, m, prefix="train/")
                history.append({"step": done, **m})
                bar.set_postfix(loss=f"{m['loss']:.3f}")
            if eval_fn is not None and (done % t.eval_every == 0 or done == end):
                ev = evaluate(eval_fn, state.params, valid_batches(), to_batch, mesh)
                writer.write(done, ev, prefix="valid/")
                history.append({"step": done, **{"valid_" + k: v for k, v in ev.items()}})
            if done % t.checkpoint_every == 0 or done == end:
                ckpt.save(done, state.as_dict(), metadata={**meta, "step": done}, data_iterator=batches)
    finally:
        bar.close()
        ckpt.wait()
        ckpt.close()
        writer.close()
    summary = {
        "stage": stage, "steps": t.steps, "resumed_from": resumed_from, "first_step_s": first_step_time,
        "flops_per_token": flops_per_token, "peak_flops": peak, "peak_source": peak_source,
        "final": history[-1] if history else None,
    }
    return FitResult(state, graphdef, history, resumed_from, summary)


def evaluate(eval_fn, params, batches: Iterator, to_batch, mesh) -> dict[str, float]:
    """Token-weighted mean loss and accuracy over a finite iterator of validation batches."""
    total = count = correct = 0.0
    for item in batches:
        out = jax.device_get(eval_fn(params, global_batch(to_batch(item), mesh)))
        total += float(out["loss_sum"])
        count += float(out["weighted_tokens"])
        correct += float(out["correct"])
    return {"loss": total / max(count, 1.0), "accuracy": correct / max(count, 1.0), "weighted_tokens": count}
