"""Parameter export/import as a single ``.safetensors`` file, plus the stable flat-name mapping.

Name mapping (stable; used by HF import/export code too)
    A tensor's name is its pytree key path joined with ``"."``:

    * dict / ``nnx.State`` key ``k``      -> ``str(k)`` (``nnx.List`` entries are int keys -> ``"0"``)
    * attribute ``name`` (dataclasses...)  -> ``name``
    * sequence index ``i`` (list / tuple)  -> ``str(i)``
    * ``nnx.Variable`` wrappers are transparent: the path stops at the variable, so ``Param`` at
      ``state["layers"][0]["attn"]["q"]["kernel"]`` is named ``layers.0.attn.q.kernel`` (no ``.value``).

    Names are derived from the *target* structure on import, so the file never has to be parsed back into
    a tree.  Two leaves mapping to the same name (e.g. keys containing ``"."``) raise ``ValueError``.

Multi-host
    :func:`state_to_flat_dict` gathers arrays that are not fully addressable with
    ``multihost_utils.process_allgather(x, tiled=True)``; that is a collective, so **every process must call**
    :func:`state_to_flat_dict` / :func:`export_safetensors`.  Only process 0 writes the file.
    :func:`import_safetensors` is called by every process on a shared file; each array is built with
    ``jax.make_array_from_callback`` so each process only materialises its addressable shards.

Atomicity: the file is written to ``<path>.tmp-<pid>`` in the same directory and ``os.replace``-d.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import jax
import numpy as np
import safetensors
import safetensors.numpy
from flax import nnx
from jax.experimental import multihost_utils
from jax.sharding import NamedSharding, Sharding
from jax.tree_util import DictKey, FlattenedIndexKey, GetAttrKey, SequenceKey

__all__ = [
    "export_safetensors",
    "flat_dict_to_state",
    "import_safetensors",
    "named_leaves",
    "state_to_flat_dict",
]


def is_variable(x: Any) -> bool:
    """Whether ``x`` is an NNX variable (a leaf that wraps its array)."""
    return isinstance(x, nnx.Variable)


def _key_str(k: Any) -> str:
    if isinstance(k, DictKey):
        return str(k.key)
    if isinstance(k, GetAttrKey):
        return k.name
    if isinstance(k, SequenceKey):
        return str(k.idx)
    if isinstance(k, FlattenedIndexKey):
        return str(k.key)
    return str(k)


def leaf_value(leaf: Any) -> Any:
    """The array of a leaf, unwrapped from its NNX variable if it is one."""
    return leaf.get_value() if is_variable(leaf) else leaf


def named_leaves(tree: Any) -> tuple[list[tuple[str, Any]], Any]:
    """``([(name, leaf), ...], treedef)`` with ``nnx.Variable``s kept as leaves (see module doc)."""
    flat, treedef = jax.tree_util.tree_flatten_with_path(tree, is_leaf=is_variable)
    out: list[tuple[str, Any]] = []
    seen: dict[str, str] = {}
    for path, leaf in flat:
        name = ".".join(_key_str(k) for k in path)
        if name in seen:
            raise ValueError(
                f"two leaves map to the same tensor name {name!r}: "
                f"{seen[name]} and {jax.tree_util.keystr(path)}"
            )
        seen[name] = jax.tree_util.keystr(path)
        out.append((name, leaf))
    return out, treedef


def _to_host(name: str, x: Any) -> np.ndarray:
    dtype = getattr(x, "dtype", None)
    if dtype is not None and jax.dtypes.issubdtype(dtype, jax.dtypes.prng_key):
        raise TypeError(f"tensor {name!r} is a typed PRNG key; export jax.random.key_data(...) instead")
    if isinstance(x, jax.ShapeDtypeStruct):
        raise TypeError(f"tensor {name!r} is abstract (ShapeDtypeStruct); cannot export it")
    if isinstance(x, jax.Array) and not x.is_fully_addressable:
        x = multihost_utils.process_allgather(x, tiled=True)
    return np.ascontiguousarray(jax.device_get(x))


def state_to_flat_dict(state: Any) -> dict[str, np.ndarray]:
    """Flatten a params pytree (``nnx.State`` or nested dicts) to ``{dotted_name: host numpy array}``."""
    leaves, _ = named_leaves(state)
    return {name: _to_host(name, leaf_value(leaf)) for name, leaf in leaves}


def _place(name: str, arr: np.ndarray, target: Any) -> Any:
    if isinstance(target, np.ndarray):
        return arr
    sharding = getattr(target, "sharding", None)
    if sharding is None:
        return jax.device_put(arr)
    if not isinstance(sharding, Sharding):
        raise TypeError(f"tensor {name!r}: target sharding {sharding!r} is not a jax.sharding.Sharding")
    if isinstance(sharding, NamedSharding) and isinstance(sharding.mesh, jax.sharding.AbstractMesh):
        raise ValueError(
            f"tensor {name!r}: target sharding uses an AbstractMesh; convert the target with "
            "nnx.get_named_sharding(state, mesh) / abstract_like(...) first"
        )
    return jax.make_array_from_callback(arr.shape, sharding, lambda idx: arr[idx])


def flat_dict_to_state(flat: Mapping[str, np.ndarray], target: Any) -> Any:
    """Inverse of :func:`state_to_flat_dict`: place ``flat`` tensors into the structure of ``target``.

    ``target`` may be concrete or abstract (``ShapeDtypeStruct`` leaves, optionally inside
    ``nnx.Variable``s).  Names must match exactly (no missing, no extra), and every tensor's shape and dtype
    must equal the target leaf's.  Arrays are placed on the target leaf's sharding when it has one.
    """
    leaves, treedef = named_leaves(target)
    expected = [name for name, _ in leaves]
    missing = [n for n in expected if n not in flat]
    if missing:
        raise ValueError(f"missing tensor(s) {missing} (expected by the target structure, not found)")
    expected_set = set(expected)
    extra = sorted(n for n in flat if n not in expected_set)
    if extra:
        raise ValueError(f"unexpected tensor(s) {extra} (found, but not in the target structure)")

    new_leaves = []
    for name, leaf in leaves:
        tgt = leaf_value(leaf)
        arr = np.asarray(flat[name])
        exp_shape, found_shape = tuple(tgt.shape), tuple(arr.shape)
        if exp_shape != found_shape:
            raise ValueError(f"tensor {name!r}: expected shape {exp_shape}, found shape {found_shape}")
        exp_dtype = np.dtype(tgt.dtype)
        if arr.dtype != exp_dtype:
            raise ValueError(f"tensor {name!r}: expected dtype {exp_dtype}, found dtype {arr.dtype}")
        value = _place(name, arr, tgt)
        new_leaves.append(leaf.replace(value) if is_variable(leaf) else value)
    return jax.tree_util.tree_unflatten(treedef, new_leaves)


def export_safetensors(
    params_state: Any, path: str | os.PathLike, *, metadata: dict[str, str] | None = None
) -> str:
    """Write ``params_state`` to ``path`` as safetensors (atomic; only process 0 writes). Returns the path."""
    if metadata is not None:
        bad = {k: v for k, v in metadata.items() if not (isinstance(k, str) and isinstance(v, str))}
        if bad:
            raise TypeError(f"safetensors metadata must be dict[str, str]; offending entries: {bad}")
    flat = state_to_flat_dict(params_state)  # collective on multi-host: every process runs it
    path = os.fspath(path)
    if jax.process_index() == 0:
        parent = os.path.dirname(os.path.abspath(path))
        os.makedirs(parent, exist_ok=True)
        tmp = f"{path}.tmp-{os.getpid()}"
        try:
            safetensors.numpy.save_file(flat, tmp, metadata=metadata)
            os.replace(tmp, path)
        finally:
            if os.path.exists(tmp):
                os.remove(tmp)
    return path


def import_safetensors(path: str | os.PathLike, target_state: Any) -> Any:
    """Load a safetensors file into the structure (and shardings) of ``target_state``."""
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"safetensors file not found: {path}")
    with safetensors.safe_open(path, framework="numpy") as f:
        flat = {name: f.get_tensor(name) for name in f.keys()}  # noqa: SIM118 (safe_open is not iterable)
    return flat_dict_to_state(flat, target_state)
