"""The stage runner every training loop shares: resume, signals, time boxes, periodic work, selection.

A stage (imitation, world modeling, reflection, LM pretraining, an RL run) is a number of steps of one
step callback. :class:`StageRunner` owns everything around the callback, once:

* **resume**: the stage's :class:`~ee_jax.checkpoint.Checkpointer` (``RUN/ckpt/STAGE``), its newest step
  and the evaluations recorded with it;
* **signals**: SIGTERM / SIGINT checkpoint the current step and raise :class:`TrainingInterrupted`;
* **time boxes**: ``train.stop_after_steps`` ends an invocation after N more steps (checkpointed);
* **periodic actions** in the style of clu's: after every step, each :class:`Periodic` whose schedule is
  due runs in order (log the metrics, evaluate and score for selection, ...), then the checkpoint policy:
  every ``checkpoint_every`` steps, at the invocation's last step, and after a scored evaluation;
* **deferred metrics**: a step returns :class:`Deferred` metrics; the runner fetches them one step late
  (the host never waits on the device) and always before anything is saved, so a non-finite loss stops
  the stage with the newest checkpoint still the last good one;
* **selection**: when the stage reaches its last step, the reported checkpoint (``recipe.select``) is
  chosen from the evaluations and written next to the checkpoints.
"""

from __future__ import annotations

import dataclasses
import os
import sys
from collections.abc import Callable, Iterable
from typing import Any

import jax
from tqdm.auto import tqdm

from ee_jax.checkpoint import Checkpointer, selection
from ee_jax.files import CorruptFileError
from ee_jax.parallel import host_barrier
from ee_jax.train.guard import StopSignals, TrainingInterrupted
from ee_jax.train.metrics import MetricsWriter


class Deferred:
    """A step's metrics, fetched from the device (and checked by ``check``) on the first :meth:`get`."""

    def __init__(self, metrics: Any, check: Callable[[dict[str, float]], None] | None = None):
        self._metrics, self._check, self._host = metrics, check, None

    def get(self) -> dict[str, float]:
        if self._host is None:
            self._host = {k: float(v) for k, v in jax.device_get(self._metrics).items()}
            if self._check is not None:
                self._check(self._host)
        return self._host


@dataclasses.dataclass(frozen=True)
class Schedule:
    """When a periodic action is due after step ``done``: every ``every`` steps, at exactly ``steps``
    (replaces ``every``), and at the invocation's last step (``at_end``) or the stage's (``at_last``)."""

    every: int = 0
    steps: frozenset[int] | None = None
    at_end: bool = False
    at_last: bool = False

    def due(self, done: int, end: int, total: int) -> bool:
        hit = done in self.steps if self.steps is not None else bool(self.every) and done % self.every == 0
        return hit or (self.at_end and done == end) or (self.at_last and done == total)


@dataclasses.dataclass(frozen=True)
class Periodic:
    """A periodic action: ``run(done)`` after every step where ``schedule`` is due."""

    schedule: Schedule
    run: Callable[[int], None]


class StageRunner:
    """Resumable loop of one stage; use as a context manager (closes the checkpointer, metrics, bar).

    Args:
        run_dir: the run (metrics go to ``RUN/metrics.jsonl`` and TensorBoard).
        ckpt_dir: the stage's checkpoints, ``RUN/ckpt/STAGE``.
        stage: the stage's name (messages, metric prefixes).
        total: the stage's number of steps.
        stop_after: steps of this invocation (``train.stop_after_steps``; 0: to the end).
        select / select_metric: ``recipe.select`` (``best``: scored checkpoints are kept by score).
        checkpoint_every: periodic checkpoints.
        save_scored: checkpoint after every scored evaluation (``best`` selection needs it).
        keep / async_save: the checkpointer's.
        meta: saved with every checkpoint, with ``step`` and ``evaluations`` (and ``history`` if
            ``save_history``).
    """

    def __init__(self, *, run_dir: str, ckpt_dir: str, stage: str, total: int, stop_after: int = 0,
                 select: str = "last", select_metric: str = "loss", checkpoint_every: int = 0,
                 save_scored: bool | None = None, keep: int | None = 2, async_save: bool = False,
                 meta: dict | None = None, save_history: bool = False, progress: bool = True, desc: str = ""):
        self.run_dir, self.ckpt_dir, self.stage, self.total = run_dir, ckpt_dir, stage, total
        self.stop_after, self.select, self.select_metric = stop_after, select, select_metric
        self.checkpoint = Schedule(every=checkpoint_every, at_end=True)
        self.save_scored = select == "best" if save_scored is None else save_scored
        self.meta, self.save_history = dict(meta or {}), save_history
        self.ckpt = Checkpointer(ckpt_dir, keep=keep, async_save=async_save, keep_best=select == "best")
        self.resumed_from = self.ckpt.latest_step()
        self.writer = MetricsWriter(run_dir)
        self.evaluations: list[dict] = []
        self.history: list[dict] = []
        self.score: float | None = None  # the current step's selection score, once evaluated
        self._progress, self._desc = progress, desc or stage
        self.bar = None  # the progress bar of run()
        self._pending: Deferred | None = None
        self._saved = {self.resumed_from}
        self._state_fn: Callable[[], dict] | None = None
        self._data_iterator = None

    def __enter__(self) -> StageRunner:
        return self

    def __exit__(self, *exc) -> None:
        if self.bar is not None:
            self.bar.close()
        self.ckpt.wait()
        self.ckpt.close()
        self.writer.close()

    def restore(self, target: dict, *, data_iterator=None) -> tuple[dict, dict]:
        """Restore the newest intact checkpoint into ``target`` (and ``data_iterator``'s position); returns
        ``(restored, metadata)`` and takes back the evaluations recorded with it.

        A checkpoint that cannot be read (a truncated or garbled file) is moved aside to
        ``ckpt/STAGE.damaged/STEP`` with a warning naming it and the older step resumed from instead
        (:attr:`resumed_from` changes; ``train.keep_checkpoints`` keeps older ones for this). When no
        checkpoint is intact the error names each one and what failed."""
        failed: list[tuple[int, str]] = []
        for step in sorted((s for s in self.ckpt.all_steps() if s <= self.resumed_from), reverse=True):
            try:
                restored, meta = self.ckpt.restore(step, target=target, data_iterator=data_iterator)
            except Exception as e:  # orbax / tensorstore errors on damaged files have no common type
                failed.append((step, f"{type(e).__name__}: {str(e).strip().splitlines()[0][:300]}"))
                continue
            if failed:
                self._set_aside([s for s, _ in failed])
                print(f"warning: {self.ckpt_dir}: checkpoint step {failed[0][0]} is damaged ({failed[0][1]}); "
                      f"moved to {self.ckpt_dir}.damaged/; resuming from step {step}, the newest intact one",
                      file=sys.stderr, flush=True)
                self.resumed_from, self._saved = step, {step}
            self.evaluations = list(meta.get("evaluations", []))
            return restored, meta
        raise CorruptFileError(f"{self.ckpt_dir}: no checkpoint can be restored ("
                               + "; ".join(f"step {s}: {err}" for s, err in failed)
                               + f"); delete {self.ckpt_dir} to train the stage again")

    def _set_aside(self, steps: list[int]) -> None:
        """Move damaged step directories out of the checkpoint directory (process 0; every host waits)."""
        if jax.process_index() == 0:
            os.makedirs(f"{self.ckpt_dir}.damaged", exist_ok=True)
            for step in steps:
                os.replace(os.path.join(self.ckpt_dir, str(step)), os.path.join(f"{self.ckpt_dir}.damaged", str(step)))
        host_barrier(f"set-aside-{self.ckpt_dir}", 600.0)
        self.ckpt.reload()

    def metrics(self) -> dict[str, float]:
        """The newest step's host metrics (fetched and checked now if not yet)."""
        return self._pending.get() if self._pending is not None else {}

    def settle(self) -> None:
        """Fetch and check the newest step's metrics: nothing is saved or evaluated after a bad step."""
        if self._pending is not None:
            self._pending.get()

    def evaluated(self, done: int, ev: dict, *, history_prefix: str | None = None) -> float:
        """Record an evaluation after step ``done``: scored for selection, kept with the checkpoints,
        written as ``STAGE/valid/*`` (and to the history as ``PREFIX*``); returns the score."""
        self.score = selection.score(ev, self.select_metric)
        self.evaluations.append({"step": done, **ev, "score": self.score})
        self.writer.write(done, ev, prefix=f"{self.stage}/valid/")
        if history_prefix is not None:
            self.history.append({"step": done, **{history_prefix + k: v for k, v in ev.items()}})
        return self.score

    def save(self, step: int, score: float | None = None) -> None:
        """Checkpoint the state (and the data position) after ``step``."""
        self.settle()
        meta = {**self.meta, "step": step, "evaluations": self.evaluations}
        if self.save_history:
            meta["history"] = self.history
        self.ckpt.save(step, self._state_fn(), metadata=meta, data_iterator=self._data_iterator,
                       score=score, force=True)
        self._saved.add(step)

    def run(self, start: int, step: Callable[[int], Deferred], state: Callable[[], dict],
            actions: Iterable[Periodic] = (), *, data_iterator=None) -> int:
        """Run steps ``start..`` (to the end of the stage or of the time box) of ``step(i) -> Deferred``;
        ``state()`` is what a checkpoint saves. Returns the step reached."""
        self._state_fn, self._data_iterator = state, data_iterator
        actions = list(actions)
        end = min(self.total, start + self.stop_after) if self.stop_after else self.total
        self.bar = tqdm(total=self.total, initial=start, desc=self._desc,
                         disable=not self._progress or jax.process_index())
        with StopSignals() as stop:
            for i in range(start, end):
                if stop.signum is not None:
                    self.settle()
                    if i not in self._saved:
                        self.save(i)
                    raise TrainingInterrupted(self.stage, i, stop.signum, self.ckpt_dir)
                out = step(i)
                self.settle()  # the previous step's metrics, checked one step late
                self._pending, self.score, done = out, None, i + 1
                self.bar.update(1)
                for action in actions:
                    if action.schedule.due(done, end, self.total):
                        action.run(done)
                if self.checkpoint.due(done, end, self.total) or (self.score is not None and self.save_scored):
                    self.save(done, self.score)
            self.settle()
        return end

    def finish(self, reached: int) -> dict | None:
        """The stage's selection when ``reached`` is its last step (written by process 0), else None."""
        self.ckpt.wait()
        if reached != self.total:
            return None
        chosen = selection.choose(self.evaluations, self.total, self.select, self.select_metric)
        if jax.process_index() == 0:
            selection.write_selection(self.ckpt_dir, chosen)
        return chosen
