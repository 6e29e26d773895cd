"""Sharded training-state checkpoints on top of ``orbax.checkpoint.CheckpointManager``.

Layout of one checkpoint (``<directory>/<step>/``), one Orbax *item* per sub-directory:

``state/``
    The train-state pytree (``ocp.args.StandardSave``: OCDBT + tensorstore, every process writes its own
    shards, no host gather).  Restored with ``ocp.args.StandardRestore(target)`` where ``target`` is an
    abstract pytree of ``jax.ShapeDtypeStruct`` carrying the *desired* shardings, which may live on a
    different mesh / device count than at save time (Orbax re-shards on read).
``meta/``
    A JSON document (``ocp.args.JsonSave``; written by the primary process only): resolved config, seeds,
    versions, anything JSON-able.  Always written (``{}`` when no metadata is given).
``data/``  (only when a ``data_iterator`` was passed to :meth:`Checkpointer.save`)
    The input pipeline position, one file per process: ``process_{i}-of-{n}.json`` containing
    ``json.dumps(data_iterator.get_state())``.  This uses our own tiny handler
    (:class:`DataIteratorStateHandler`) rather than ``grain.checkpoint.CheckpointSave`` so that it works for
    *any* object with ``get_state() -> JSON-able dict`` / ``set_state(dict)`` (grain ``DatasetIterator``,
    grain ``DataLoaderIterator`` whose state is JSON ``bytes``, or a plain Python iterator class of ours).
    The file naming is the same as grain's handler, so each host restores exactly its own shard position.
    ``get_state()`` is called synchronously inside :meth:`Checkpointer.save`, i.e. the saved position is the
    one at the moment of the call even when the array write itself is asynchronous.

Atomicity: Orbax writes every step into ``<step>.orbax-checkpoint-tmp*`` and renames it when all items
and all processes have finished (on object stores that lack atomic rename it writes a
``commit_success.txt`` marker instead).  Unfinished directories are never reported by
:meth:`Checkpointer.latest_step` / :meth:`Checkpointer.all_steps`, so a crash mid-save leaves the previous
checkpoint as the latest one.

Typed PRNG keys (``jax.random.key``) are not supported in the state: store ``jax.random.key_data(key)``
(uint32) and re-wrap with ``jax.random.wrap_key_data`` after restore.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Callable
from typing import Any

import jax
import orbax.checkpoint as ocp
from etils import epath
from jax.sharding import Sharding

__all__ = [
    "Checkpointer",
    "DataIteratorStateHandler",
    "DataStateRestore",
    "DataStateSave",
    "abstract_like",
]

_STATE = "state"
_META = "meta"
_DATA = "data"
_BYTES_KEY = "__ee_jax_bytes__"  # wrapper for iterators whose get_state() returns (JSON) bytes


# ----------------------------------------------------------------------------------------------------------
# Per-process JSON handler for data-iterator state
# ----------------------------------------------------------------------------------------------------------


def _process_file(directory: epath.Path) -> epath.Path:
    return directory / f"process_{jax.process_index()}-of-{jax.process_count()}.json"


class DataIteratorStateHandler(ocp.CheckpointHandler):
    """Writes/reads one JSON file per process (``process_{i}-of-{n}.json``) holding an iterator state."""

    def save(self, directory: epath.Path, args: DataStateSave) -> None:
        directory = epath.Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        _process_file(directory).write_text(json.dumps(args.state, indent=1, sort_keys=True))

    def restore(self, directory: epath.Path, args: DataStateRestore | None = None) -> Any:
        path = _process_file(epath.Path(directory))
        if not path.exists():
            # Saved with another process count: a state that describes its pipeline (a "fingerprint", as
            # the experience iterator's does) is handed over and its set_state decides whether it carries
            # over; other states are per host and cannot be guessed.
            others = sorted(epath.Path(directory).glob("process_0-of-*.json"))
            if others:
                state = json.loads(others[0].read_text())
                if isinstance(state, dict) and "fingerprint" in state:
                    return state
            raise FileNotFoundError(
                f"No data-iterator state for process {jax.process_index()} of {jax.process_count()}: "
                f"{path} does not exist (was the checkpoint written with a different process count?)"
            )
        return json.loads(path.read_text())

    def metadata(self, directory: epath.Path) -> None:
        return None

    def structure(self, directory: epath.Path) -> None:
        return None

    def finalize(self, directory: epath.Path) -> None:
        pass

    def close(self) -> None:
        pass


@ocp.args.register_with_handler(DataIteratorStateHandler, for_save=True)
@dataclasses.dataclass
class DataStateSave(ocp.args.CheckpointArgs):
    state: Any


@ocp.args.register_with_handler(DataIteratorStateHandler, for_restore=True)
@dataclasses.dataclass
class DataStateRestore(ocp.args.CheckpointArgs):
    pass


def _capture_iterator_state(data_iterator: Any) -> Any:
    state = data_iterator.get_state()
    if isinstance(state, bytes | bytearray):
        state = {_BYTES_KEY: bytes(state).decode("utf-8")}
    try:
        return json.loads(json.dumps(state))  # validates JSON-ability now and snapshots the value
    except TypeError as e:
        raise TypeError(f"data_iterator.get_state() must return a JSON-able value: {e}") from e


def _apply_iterator_state(data_iterator: Any, state: Any) -> None:
    if isinstance(state, dict) and set(state) == {_BYTES_KEY}:
        state = state[_BYTES_KEY].encode("utf-8")
    data_iterator.set_state(state)
    start = getattr(data_iterator, "start_prefetch", None)  # grain iterators: resume prefetching eagerly
    if callable(start):
        start()


# ----------------------------------------------------------------------------------------------------------
# Abstract restore targets
# ----------------------------------------------------------------------------------------------------------


def _is_key_dtype(dtype: Any) -> bool:
    try:
        return jax.dtypes.issubdtype(dtype, jax.dtypes.prng_key)
    except TypeError:
        return False


def _to_sds(x: Any, sharding: Sharding | None) -> jax.ShapeDtypeStruct:
    if sharding is None:
        sharding = getattr(x, "sharding", None)
    return jax.ShapeDtypeStruct(tuple(x.shape), x.dtype, sharding=sharding)


def abstract_like(
    tree: Any,
    shardings: Sharding | Callable[[Any], Sharding | None] | Any | None = None,
) -> Any:
    """Turn a pytree of arrays / ``ShapeDtypeStruct``s into restore targets with the given shardings.

    ``tree``: concrete arrays, ``nnx.State`` (concrete or from ``nnx.eval_shape``), numpy arrays, ... Every
    leaf needs ``.shape`` and ``.dtype``.  ``nnx.Variable`` wrappers are preserved (they are pytree nodes).

    ``shardings`` is one of
      * ``None``: keep each leaf's own ``.sharding`` (concrete arrays), else no sharding;
      * a single ``jax.sharding.Sharding``: used for every leaf;
      * a callable ``fn(leaf) -> Sharding | None`` (``None`` keeps the leaf's own sharding);
      * a pytree of ``Sharding`` matching ``tree`` or a prefix of it (e.g. ``nnx.get_named_sharding(state,
        mesh)``, or ``{"params": s1, "opt": s2}``); a ``None`` entry keeps the leaves' own shardings.

    Note: states from ``nnx.eval_shape`` under eager sharding carry ``AbstractMesh`` shardings which Orbax
    cannot restore onto; pass concrete shardings (``nnx.get_named_sharding(abs_state, mesh)``).
    """
    if shardings is None or isinstance(shardings, Sharding):
        return jax.tree.map(lambda x: _to_sds(x, shardings), tree)
    if callable(shardings):
        return jax.tree.map(lambda x: _to_sds(x, shardings(x)), tree)

    def per_subtree(sharding: Sharding | None, subtree: Any) -> Any:
        return jax.tree.map(lambda x: _to_sds(x, sharding), subtree)

    return jax.tree.map(per_subtree, shardings, tree, is_leaf=lambda s: s is None or isinstance(s, Sharding))


# ----------------------------------------------------------------------------------------------------------
# Checkpointer
# ----------------------------------------------------------------------------------------------------------


class Checkpointer:
    """Thin, opinionated wrapper over ``ocp.CheckpointManager`` (items ``state``, ``meta``, ``data``).

    ``keep``: number of newest checkpoints retained (``None`` keeps all).  ``async_save``: array writes
    happen in a background thread after :meth:`save` returns (device->host copy is still synchronous);
    call :meth:`wait` before reading the files, and before exiting (``close()``/``with`` does it).
    """

    def __init__(self, directory: str | os.PathLike, *, keep: int | None = 2, async_save: bool = True,
                 keep_best: bool = False):
        path = str(directory)
        if "://" not in path:
            path = os.path.abspath(path)
        self.directory = epath.Path(path)
        self.directory.mkdir(parents=True, exist_ok=True)
        policy = None
        if keep_best:
            # The newest `keep` (to resume) plus the one with the highest metrics["score"] (to report).
            from orbax.checkpoint import checkpoint_managers as cm

            best = cm.BestN(get_metric_fn=lambda m: m["score"], n=1, keep_checkpoints_without_metrics=False)
            policy = cm.AnyPreservationPolicy([cm.LatestN(n=keep), best])
        options = ocp.CheckpointManagerOptions(
            max_to_keep=None if keep_best else keep,
            preservation_policy=policy,
            # Orbax writes each save's metrics to disk (and reads them back when a resumed run reopens the
            # directory) only when best_fn is set; without it a resumed stage forgot every earlier score and
            # deleted its best checkpoint at the next save.
            best_fn=(lambda m: m["score"]) if keep_best else None,
            best_mode="max",
            save_interval_steps=1,
            enable_async_checkpointing=async_save,
            create=True,
        )
        self._mngr = ocp.CheckpointManager(self.directory, options=options)

    # -- saving ---------------------------------------------------------------------------------------------

    def save(
        self,
        step: int,
        state: Any,
        *,
        metadata: dict | None = None,
        data_iterator: Any = None,
        force: bool = False,
        score: float | None = None,
    ) -> bool:
        """Save ``state`` (pytree of jax arrays) at ``step``; returns whether a save was started.

        ``score`` (higher is better) ranks the checkpoint for ``keep_best``."""
        for path, leaf in jax.tree_util.tree_flatten_with_path(state)[0]:
            if _is_key_dtype(getattr(leaf, "dtype", None)):
                raise TypeError(
                    f"typed PRNG key at {jax.tree_util.keystr(path)}: store jax.random.key_data(key) instead"
                )
        try:
            meta = json.loads(json.dumps({} if metadata is None else metadata))
        except TypeError as e:
            raise TypeError(f"checkpoint metadata must be JSON-able: {e}") from e
        items: dict[str, Any] = {_STATE: ocp.args.StandardSave(state), _META: ocp.args.JsonSave(meta)}
        if data_iterator is not None:
            items[_DATA] = DataStateSave(_capture_iterator_state(data_iterator))
        metrics = None if score is None else {"score": float(score)}
        return self._mngr.save(int(step), args=ocp.args.Composite(**items), force=force, metrics=metrics)

    # -- restoring ------------------------------------------------------------------------------------------

    def _step_dir(self, step: int) -> epath.Path:
        return self.directory / str(step)

    def restore(
        self,
        step: int | None = None,
        *,
        target: Any,
        data_iterator: Any = None,
    ) -> tuple[Any, dict]:
        """Restore ``(state, metadata)``; ``data_iterator`` (if given) is ``set_state``-ed in place.

        ``target``: abstract pytree (see :func:`abstract_like`) with the desired shardings; its structure
        must match the saved one.  ``step=None`` restores the latest step.
        """
        self.wait()
        self._mngr.reload()
        steps = self.all_steps()
        if not steps:
            raise FileNotFoundError(f"no checkpoint found in {self.directory}")
        if step is None:
            step = max(steps)
        elif int(step) not in steps:
            raise FileNotFoundError(f"no checkpoint for step {step} in {self.directory} (available: {steps})")
        step = int(step)
        items: dict[str, Any] = {
            _STATE: ocp.args.StandardRestore(target) if target is not None else ocp.args.StandardRestore()
        }
        has_meta = (self._step_dir(step) / _META).exists()
        if has_meta:
            items[_META] = ocp.args.JsonRestore()
        if data_iterator is not None:
            if not (self._step_dir(step) / _DATA).exists():
                raise FileNotFoundError(
                    f"checkpoint step {step} in {self.directory} has no data-iterator state "
                    "(it was saved without data_iterator=)"
                )
            items[_DATA] = DataStateRestore()
        restored = self._mngr.restore(step, args=ocp.args.Composite(**items))
        if data_iterator is not None:
            _apply_iterator_state(data_iterator, restored[_DATA])
        meta = dict(restored[_META]) if has_meta else {}
        return restored[_STATE], meta

    def restore_subtree(self, step: int | None, target: dict[str, Any]) -> dict[str, Any]:
        """Restore only the top-level entries of the saved state named in ``target`` (e.g. ``{"params": ...}``).

        The other entries (optimizer moments, an RL stage's reference or critic) are never read, so
        loading a policy for inference costs its parameters' memory only.
        """
        self.wait()
        self._mngr.reload()
        step = self.latest_step() if step is None else int(step)
        if step is None or step not in self.all_steps():
            raise FileNotFoundError(f"no checkpoint for step {step} in {self.directory} "
                                    f"(available: {self.all_steps()})")
        restore_args = jax.tree.map(lambda a: ocp.ArrayRestoreArgs(sharding=a.sharding, global_shape=a.shape,
                                                                   dtype=a.dtype), target)
        args = ocp.args.PyTreeRestore(item=target, restore_args=restore_args, partial_restore=True)
        return self._mngr.restore(step, args=ocp.args.Composite(**{_STATE: args}))[_STATE]

    def saved_names(self, step: int, entry: str = "params") -> set[str]:
        """Dotted names of the leaves saved under ``entry`` at ``step`` (read from the metadata, no arrays)."""
        md = ocp.PyTreeCheckpointHandler().metadata(epath.Path(self.directory) / str(int(step)) / _STATE)
        tree = getattr(md, "tree", md)
        names = set()
        for path, _ in jax.tree_util.tree_flatten_with_path((tree or {}).get(entry, {}))[0]:
            keys = [str(getattr(k, "key", getattr(k, "name", k))) for k in path]
            names.add(".".join(k for k in keys if k != "value"))
        return names

    # -- bookkeeping ----------------------------------------------------------------------------------------

    def latest_step(self) -> int | None:
        return self._mngr.latest_step()

    def all_steps(self) -> list[int]:
        return sorted(self._mngr.all_steps())

    def reload(self) -> None:
        """Re-read the checkpoint directory (after steps were moved in or out of it)."""
        self.wait()
        self._mngr.reload()

    def wait(self) -> None:
        """Block until all pending asynchronous saves are committed."""
        self._mngr.wait_until_finished()

    def close(self) -> None:
        self._mngr.wait_until_finished()
        self._mngr.close()

    def __enter__(self) -> Checkpointer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Checkpointer({str(self.directory)!r}, steps={self.all_steps()})"
