"""The run directory: one object that knows its layout, writes atomically and checks stage settings.

A run directory (``run_dir`` of every config) holds::

    config.yaml            the resolved config of the newest command that succeeded (+ versions, git commit,
                           seeds); a refused or failed command leaves it as it was
    invocations.jsonl      commands that were refused or failed: their resolved config and the error
    data/                  collected records (ArrayRecord shards + manifest.json)
    tokenizer/spm.model    the run's trained SentencePiece model (unless tokenizer.path is set)
    ckpt/STAGE/            Orbax checkpoints of a stage (il, iwm_wm, sr, grpo_from_il, lm, ...)
                           and its selection.json
    train/METHOD.json      the finished training record; train/METHOD.settings.json what decided it
    eval/METHOD.json       evaluation summaries; eval/METHOD/SPLIT.jsonl the episodes
    metrics.jsonl, tb/     training metrics (JSONL, TensorBoard)
    timings.jsonl          every stage invocation's wall time
    debug/                 the batch of a non-finite loss
    seeds/N/               one seed's run directory (``ee-jax run`` with several seeds)
    report.md, report.json, plots/, run_summary.json   the main job's report

Every module asks :class:`RunDir` for these paths instead of joining them itself.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterable

import jax

from ee_jax.checkpoint import Checkpointer
from ee_jax.files import atomic_write_text, read_json


class StageMismatchError(ValueError):
    """A stage's finished work in the run was produced with other settings than this command asks for."""


def settings_diff(old: dict, new: dict, defaults: dict | None = None, prefix: str = "") -> list[str]:
    """Dotted keys whose values differ. A key missing from ``old`` whose new value is its default in
    ``defaults`` is no change: the setting was added to ee_jax after ``old`` was recorded."""
    keys = []
    defaults = defaults or {}
    for k in sorted(set(old) | set(new)):
        d = defaults.get(k)
        if isinstance(old.get(k), dict) and isinstance(new.get(k), dict):
            keys += settings_diff(old[k], new[k], d if isinstance(d, dict) else None, f"{prefix}{k}.")
        elif k not in old and k in defaults and new.get(k) == d:
            continue
        elif old.get(k) != new.get(k):
            keys.append(f"{prefix}{k}")
    return keys


class RunDir:
    """The layout of one run directory (see the module docstring); paths are strings under :attr:`root`."""

    def __init__(self, root: str | os.PathLike):
        self.root = os.fspath(root)

    def __repr__(self) -> str:
        return f"RunDir({self.root!r})"

    def __fspath__(self) -> str:
        return self.root

    def path(self, *parts: str) -> str:
        return os.path.join(self.root, *parts)

    # --- the layout -------------------------------------------------------------------------------
    @property
    def config(self) -> str:
        return self.path("config.yaml")

    @property
    def data(self) -> str:
        return self.path("data")

    @property
    def tokenizer(self) -> str:
        return self.path("tokenizer")

    @property
    def tokenizer_model(self) -> str:
        return self.path("tokenizer", "spm.model")

    def ckpt(self, stage: str = "") -> str:
        """``ckpt/STAGE`` (``ckpt/`` without a stage)."""
        return self.path("ckpt", stage) if stage else self.path("ckpt")

    @property
    def train_dir(self) -> str:
        return self.path("train")

    def train_record(self, method: str) -> str:
        return self.path("train", f"{method}.json")

    def train_settings(self, method: str) -> str:
        return self.path("train", f"{method}.settings.json")

    @property
    def eval_dir(self) -> str:
        return self.path("eval")

    def eval_record(self, method: str) -> str:
        return self.path("eval", f"{method}.json")

    def episodes(self, method: str, split: str) -> str:
        return self.path("eval", method, f"{split}.jsonl")

    @property
    def metrics(self) -> str:
        return self.path("metrics.jsonl")

    @property
    def tensorboard(self) -> str:
        return self.path("tb")

    @property
    def timings(self) -> str:
        return self.path("timings.jsonl")

    @property
    def debug(self) -> str:
        return self.path("debug")

    @property
    def seeds_dir(self) -> str:
        return self.path("seeds")

    def seed(self, seed: int) -> RunDir:
        return RunDir(self.path("seeds", str(seed)))

    @property
    def report_md(self) -> str:
        return self.path("report.md")

    @property
    def report_json(self) -> str:
        return self.path("report.json")

    def plot(self, name: str) -> str:
        return self.path("plots", name)

    @property
    def summary(self) -> str:
        return self.path("run_summary.json")

    # --- writing and reading ----------------------------------------------------------------------
    def write_json(self, path: str, obj, *, all_processes: bool = False) -> None:
        """Atomically write ``obj`` as JSON; by default only process 0 writes (the others share its file)."""
        if all_processes or jax.process_index() == 0:
            atomic_write_text(path, json.dumps(obj, indent=1))

    @staticmethod
    def read_json(path: str):
        """A JSON file of the run; a garbled one is a one-line error naming it."""
        return read_json(path, "delete it to redo the step that wrote it")

    def has_checkpoint(self, stage: str) -> bool:
        """Whether ``stage`` has at least one finished checkpoint."""
        if not os.path.isdir(self.ckpt(stage)):
            return False
        with Checkpointer(self.ckpt(stage), async_save=False) as ck:
            return ck.latest_step() is not None

    def checkpoint_stages(self) -> list[str]:
        """Stages with at least one finished checkpoint."""
        root = self.ckpt()
        return [s for s in (sorted(os.listdir(root)) if os.path.isdir(root) else []) if self.has_checkpoint(s)]

    def check_stage_settings(self, method: str, settings: dict, *, overwrite: bool, clears: Iterable[str],
                             defaults: dict | None = None) -> dict | None:
        """The finished record of ``method`` when it was done with these ``settings``; None to (re)start
        or resume (the settings are recorded). Other recorded settings raise :class:`StageMismatchError`
        unless ``overwrite``, which deletes the method's record and the checkpoint stages ``clears``."""
        path, record = self.train_settings(method), self.train_record(method)
        if os.path.exists(path) and not overwrite:
            diff = settings_diff(self.read_json(path), settings, defaults)
            if diff:
                raise StageMismatchError(
                    f"{self.root}: method {method!r} was trained with different settings ({', '.join(diff[:8])}); "
                    f"pass --overwrite (overwrite=True) to retrain it, or use another run_dir")
            if os.path.exists(record):
                return self.read_json(record)
        if overwrite and jax.process_index() == 0:
            for stage in clears:
                shutil.rmtree(self.ckpt(stage), ignore_errors=True)
            for p in (path, record):
                if os.path.exists(p):
                    os.remove(p)
        self.write_json(path, settings)
        return None
