"""What stops a training loop early, and how it leaves the run: preemption signals and non-finite losses.

* SIGTERM (preemptible TPU VMs, SLURM ``--signal``, ``kill``) and SIGINT (Ctrl-C) are turned into a
  flag the loop checks between steps: it writes a checkpoint of the current step (with the data
  iterator's position) and raises :class:`TrainingInterrupted`; running the same command resumes.
* A NaN / inf loss raises :class:`NonFiniteLossError` naming the stage, the step and the batch (saved
  to ``RUN/debug/`` as ``.npz`` next to the data position); no checkpoint is written after it, so the
  newest checkpoint is the last good one.
"""

from __future__ import annotations

import json
import os
import signal
import threading

import numpy as np

from ee_jax.rundir import RunDir


class TrainingInterrupted(Exception):
    """Training stopped on a signal after checkpointing; ``exit_code`` is the shell's 128 + signal."""

    def __init__(self, stage: str, step: int, signum: int, ckpt_dir: str):
        self.stage, self.step, self.signum, self.ckpt_dir = stage, step, signum, ckpt_dir
        self.exit_code = 128 + signum
        name = signal.Signals(signum).name
        super().__init__(f"{name}: stage {stage!r} stopped at step {step}; checkpoint saved in {ckpt_dir}. "
                         f"Run the same command again to resume.")


class NonFiniteLossError(FloatingPointError):
    """The loss of a step was NaN or inf."""


class StopSignals:
    """Context manager: SIGTERM / SIGINT set :attr:`signum` instead of killing the process.

    Only the main thread can install handlers; elsewhere (e.g. a test runner thread) it is inert.
    A second signal while the first is being handled restores the default behaviour (a stuck save
    can still be killed).
    """

    SIGNALS = (signal.SIGTERM, signal.SIGINT)

    def __init__(self):
        self.signum: int | None = None
        self._previous: dict[int, object] = {}

    def _handle(self, signum, frame):
        if self.signum is not None:  # second signal: give up waiting for the step boundary
            signal.signal(signum, self._previous.get(signum, signal.SIG_DFL))
            signal.raise_signal(signum)
        self.signum = signum

    def __enter__(self) -> StopSignals:
        if threading.current_thread() is threading.main_thread():
            for s in self.SIGNALS:
                self._previous[s] = signal.signal(s, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for s, h in self._previous.items():
            signal.signal(s, h)
        self._previous.clear()


def describe_bad_batch(run_dir: str, stage: str, step: int, loss: float, batch: dict, data_state,
                       last_good: int | None, ckpt_dir: str) -> NonFiniteLossError:
    """Save the batch that produced a non-finite loss and build the error describing it."""
    debug = RunDir(run_dir).debug
    os.makedirs(debug, exist_ok=True)
    base = os.path.join(debug, f"nonfinite-{stage}-step{step}")
    np.savez(base + ".npz", **{k: np.asarray(v) for k, v in batch.items()})
    with open(base + ".json", "w", encoding="utf-8") as f:
        json.dump({"stage": stage, "step": step, "loss": repr(loss), "data_state": data_state}, f, indent=1)
    weights = np.asarray(batch["weights"])
    rows = int(np.count_nonzero(np.asarray(batch["segment_ids"]).max(axis=1) > 0))
    kept = f"step {last_good}" if last_good is not None else "none yet"
    return NonFiniteLossError(
        f"stage {stage!r}: loss is {loss} at step {step} (batch of {rows} rows, {int(weights.sum())} target "
        f"tokens; arrays in {base}.npz, data position in {base}.json). Training stopped; the last good "
        f"checkpoint is kept in {ckpt_dir} ({kept}). Lower optimizer.lr or check the data.")
