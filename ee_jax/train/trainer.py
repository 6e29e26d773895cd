"""The training loop shared by every stage: jitted step, metrics, periodic eval and checkpoints.

Resuming is the default: if the stage's checkpoint directory holds a step, the train state *and*
the data iterator are restored, so the loss curve continues exactly where it stopped. Metrics go to
``metrics.jsonl`` / TensorBoard as ``STAGE/train/*`` and ``STAGE/valid/*``.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable, Iterator
from typing import Any

import jax
import numpy as np

from ee_jax.config import Config
from ee_jax.data.batch import BATCH_KEYS, batch_sharding
from ee_jax.models.accounting import train_flops_per_token
from ee_jax.models.factory import abstract_model
from ee_jax.rundir import RunDir
from ee_jax.train.guard import describe_bad_batch
from ee_jax.train.metrics import device_peak_flops
from ee_jax.train.optimizer import learning_rate_schedule, train_optimizer
from ee_jax.train.runner import Deferred, Periodic, Schedule, StageRunner
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
    Resume, signals, time boxes, checkpoints and selection are the :class:`StageRunner`'s.
    """
    t = cfg.train
    tx = train_optimizer(cfg, t.steps)
    ckpt_dir = RunDir(cfg.run_dir).ckpt(stage)
    runner = StageRunner(run_dir=cfg.run_dir, ckpt_dir=ckpt_dir, stage=stage, total=t.steps,
                         stop_after=t.stop_after_steps, select=select, select_metric=select_metric,
                         checkpoint_every=t.checkpoint_every, keep=t.keep_checkpoints, async_save=t.async_checkpoint,
                         meta={"stage": stage, **(metadata or {})}, progress=progress, desc=f"train {stage}")
    with runner:
        if runner.resumed_from is not None:
            _, abs_params = abstract_model(cfg.model, mesh)
            target = abstract_state(tx, abs_params, mesh)
            restored, _ = runner.restore(target.as_dict(), data_iterator=batches)
            state = TrainState.from_dict(restored)
            graphdef, _ = abstract_model(cfg.model, mesh)
            shardings = jax.tree.map(lambda a: a.sharding, target)
        else:
            graphdef, state, shardings = create_train_state(cfg, tx, mesh, params)
        loop = _TrainLoop(cfg, mesh, runner, graphdef, shardings, tx, state, batches, to_batch)
        actions = [Periodic(Schedule(every=t.log_every, at_end=True), loop.log)]
        if valid_batches is not None or evaluate_fn is not None:
            schedule = (Schedule(steps=frozenset(eval_steps)) if eval_steps is not None
                        else Schedule(every=t.eval_every, at_end=True))
            actions.append(Periodic(schedule, loop.evaluator(valid_batches, evaluate_fn)))
        reached = runner.run(loop.start, loop.step, lambda: loop.state.as_dict(), actions, data_iterator=batches)
        chosen = runner.finish(reached)
    history = runner.history
    summary = {
        "stage": stage, "steps": t.steps, "resumed_from": runner.resumed_from, "first_step_s": loop.first_step_s,
        "flops_per_token": loop.flops_per_token, "peak_flops": loop.peak, "peak_source": loop.peak_source,
        "final": history[-1] if history else None,
        "selected_step": chosen["step"] if chosen else None,
    }
    return FitResult(loop.state, graphdef, history, runner.resumed_from, summary, chosen)


class _TrainLoop:
    """The step callback and the periodic actions of :func:`fit`: one jitted step per batch, throughput
    (tokens/s, MFU) between log points, validation loss / episodes for selection."""

    def __init__(self, cfg: Config, mesh, runner: StageRunner, graphdef, shardings, tx, state, batches, to_batch):
        t = cfg.train
        self.cfg, self.mesh, self.runner, self.state = cfg, mesh, runner, state
        self.batches, self.to_batch, self.graphdef, self.shardings = batches, to_batch, graphdef, shardings
        self.step_fn = make_train_step(graphdef, tx, shardings, mesh, t.grad_accum,
                                       learning_rate_schedule(cfg.optimizer, t.steps))
        self.flops_per_token = train_flops_per_token(cfg.model, t.seq_len)
        self.peak, self.peak_source = device_peak_flops()
        self.start = int(jax.device_get(state.step))
        self.first_step_s = None
        self.last_time, self.last_step, self.tokens_since = time.perf_counter(), self.start, 0.0

    def step(self, i: int) -> Deferred:
        data_state = self.batches.get_state() if hasattr(self.batches, "get_state") else None
        host = self.to_batch(next(self.batches))
        t0 = time.perf_counter()
        self.state, metrics = self.step_fn(self.state, global_batch(host, self.mesh))
        if self.first_step_s is None:
            jax.block_until_ready(metrics)
            self.first_step_s = time.perf_counter() - t0  # includes compilation
            self.last_time, self.last_step, self.tokens_since = time.perf_counter(), i + 1, 0.0
        else:
            self.tokens_since += self.cfg.train.batch_size * self.cfg.train.seq_len
        runner, run_dir = self.runner, self.cfg.run_dir

        def check(m: dict) -> None:  # stop on a non-finite loss, before anything is saved after it
            if not math.isfinite(m["loss"]):
                raise describe_bad_batch(run_dir, runner.stage, i + 1, m["loss"], host, data_state,
                                         runner.ckpt.latest_step(), runner.ckpt_dir)

        return Deferred(metrics, check)

    def log(self, done: int) -> None:
        m = dict(self.runner.metrics())
        now = time.perf_counter()
        if done > self.last_step and self.tokens_since:
            m["tokens_per_s"] = self.tokens_since / (now - self.last_time)
            m["mfu"] = m["tokens_per_s"] * self.flops_per_token / self.peak
        self.last_time, self.last_step, self.tokens_since = now, done, 0.0
        self.runner.writer.write(done, m, prefix=f"{self.runner.stage}/train/")
        self.runner.history.append({"step": done, **m})
        self.runner.bar.set_postfix(loss=f"{m['loss']:.3f}")

    def evaluator(self, valid_batches, evaluate_fn) -> Callable[[int], None]:
        eval_fn = make_eval_step(self.graphdef, self.shardings, self.mesh) if valid_batches else None

        def run(done: int) -> None:
            self.runner.settle()
            params = self.state.params
            ev = evaluate(eval_fn, params, valid_batches(), self.to_batch, self.mesh) if eval_fn else {}
            if evaluate_fn is not None:
                ev.update(evaluate_fn(params, done))
            self.runner.evaluated(done, ev, history_prefix="valid_")
            self.last_time = time.perf_counter()  # evaluation time is not training throughput

        return run


def evaluate(eval_fn, params, batches: Iterator, to_batch, mesh) -> dict[str, float]:
    """Token-weighted mean loss and accuracy over a finite iterator of validation batches."""
    total = count = correct = 0.0
    for item in batches:
        out = jax.device_get(eval_fn(params, global_batch(to_batch(item), mesh)))
        total += float(out["loss_sum"])
        count += float(out["weighted_tokens"])
        correct += float(out["correct"])
    return {"loss": total / max(count, 1.0), "accuracy": correct / max(count, 1.0), "weighted_tokens": count}
