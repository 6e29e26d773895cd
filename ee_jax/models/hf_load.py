"""Load a Hugging Face checkpoint *directory*'s weights shard by shard (reading ``config.json`` is
:mod:`ee_jax.config.hf`, exporting :mod:`ee_jax.models.hf_export`).

:func:`load_hf_params` -- ``*.safetensors`` -> params placed in ``abstract_model(cfg, mesh)``'s shardings;
each device's shard is read with ``safe_open(...).get_slice`` (only its layers' rows and columns), so no
host ever holds the model. Tensor names and layouts are those of :mod:`ee_jax.models.hf_convert` (see its
table).

bf16: ``safe_open(framework="numpy")`` resolves the ``BF16`` dtype with ``np.dtype("bfloat16")``, which
exists once ``ml_dtypes`` is imported (JAX imports it; we import it explicitly). Slices of bf16 tensors
then arrive as ``ml_dtypes.bfloat16`` arrays and are cast to the parameter dtype. No torch round trip.
"""

from __future__ import annotations

import contextlib
import glob
import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import jax
import ml_dtypes  # noqa: F401  (registers np.dtype("bfloat16"), which safe_open's numpy backend needs)
import numpy as np
import safetensors

from ee_jax.checkpoint.safetensors_io import is_variable, leaf_value, named_leaves
from ee_jax.config import ModelConfig
from ee_jax.config.hf import model_config_from_hf
from ee_jax.models.factory import abstract_model
from ee_jax.models.hf_convert import hf_family, norm_names
from ee_jax.models.transformer import layer_windows

__all__ = ["INDEX_FILE", "load_hf_params"]

INDEX_FILE = "model.safetensors.index.json"


def _math_signature(cfg: ModelConfig) -> dict[str, Any]:
    """The fields that decide what a given set of weights computes (checked when loading HF weights).

    Not included: dtypes, context length, init, remat/scan/attention implementation, and ``norm_offset``
    (the loader shifts the stored norm weights, so either offset computes the same function).
    """
    hd = cfg.head_dim or cfg.d_model // cfg.num_heads
    windows = layer_windows(cfg)
    return dict(
        vocab_size=cfg.vocab_size, d_model=cfg.d_model, num_layers=cfg.num_layers, num_heads=cfg.num_heads,
        num_kv_heads=cfg.num_kv_heads, head_dim=hd, ffn_dim=cfg.ffn_dim, activation=cfg.activation,
        norm_eps=cfg.norm_eps, qkv_bias=cfg.qkv_bias, qk_norm=cfg.qk_norm, post_norms=cfg.post_norms,
        embed_scale=cfg.embed_scale, tie_embeddings=cfg.tie_embeddings, rope_theta=cfg.rope_theta,
        rope_scaling=cfg.rope_scaling if cfg.rope_scaling.kind != "none" else None,
        layer_windows=windows, local_rope_theta=cfg.local_rope_theta if any(windows) else None,
        query_pre_attn_scalar=cfg.query_pre_attn_scalar or hd,
    )


# ---------------------------------------------------------------------------------------------------------
# Loading: one device shard at a time
# ---------------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class _Spec:
    """How one of our leaves is read. ``hf_names`` has one name per layer (stacked leaves) or one name."""

    hf_names: tuple[str, ...]
    stacked: bool
    kind: str  # same | T | norm | in_heads | bias | out_heads
    hf_shape: tuple[int, ...]
    heads: int = 0


def _specs(cfg: ModelConfig) -> dict[str, _Spec]:
    """Our flat leaf name -> how to read it from HF tensors (the layouts of :mod:`hf_convert`)."""
    family = hf_family(cfg)
    d, n, kv, f, V = cfg.d_model, cfg.num_heads, cfg.num_kv_heads, cfg.ffn_dim, cfg.vocab_size
    hd = cfg.head_dim or d // n
    layer = lambda s: tuple(f"model.layers.{i}.{s}" for i in range(cfg.num_layers))  # noqa: E731
    out = {"embed": _Spec(("model.embed_tokens.weight",), False, "same", (V, d)),
           "final_norm.scale": _Spec(("model.norm.weight",), False, "norm", (d,))}
    if not cfg.tie_embeddings:
        out["lm_head"] = _Spec(("lm_head.weight",), False, "T", (V, d))
    for x, h in (("q", n), ("k", kv), ("v", kv)):
        out[f"layers.attn.{x}"] = _Spec(layer(f"self_attn.{x}_proj.weight"), True, "in_heads", (h * hd, d), h)
        if cfg.qkv_bias:
            out[f"layers.attn.{x}_bias"] = _Spec(layer(f"self_attn.{x}_proj.bias"), True, "bias", (h * hd,), h)
    out["layers.attn.o"] = _Spec(layer("self_attn.o_proj.weight"), True, "out_heads", (d, n * hd), n)
    for ours, theirs in norm_names(family).items():
        dim = hd if ours.startswith("attn.") else d  # q/k norms act on one head
        out[f"layers.{ours}.scale"] = _Spec(layer(theirs + ".weight"), True, "norm", (dim,))
    out["layers.mlp.gate"] = _Spec(layer("mlp.gate_proj.weight"), True, "T", (f, d))
    out["layers.mlp.up"] = _Spec(layer("mlp.up_proj.weight"), True, "T", (f, d))
    out["layers.mlp.down"] = _Spec(layer("mlp.down_proj.weight"), True, "T", (d, f))
    return out


# Gemma3ForConditionalGeneration stores the text model under another prefix (v4 and v5 layouts).
_MM_RENAMES = (("model.language_model.", "model."), ("language_model.model.", "model."),
               ("language_model.lm_head.", "lm_head."))
_MM_IGNORED = ("vision_tower.", "multi_modal_projector.", "model.vision_tower.", "model.multi_modal_projector.")
_ALLOWED_DTYPES = {"F32", "BF16", "F16"}


def _tensor_files(hf_dir: str) -> dict[str, str]:
    """Stored tensor name -> file (basename), from the index when there is one, else from each file's header."""
    index = os.path.join(hf_dir, INDEX_FILE)
    if os.path.isfile(index):
        with open(index, encoding="utf-8") as fh:
            weight_map = json.load(fh).get("weight_map")
        if not isinstance(weight_map, dict) or not weight_map:
            raise ValueError(f"{index}: no 'weight_map' object")
        for file in sorted(set(weight_map.values())):
            if not os.path.isfile(os.path.join(hf_dir, file)):
                raise FileNotFoundError(f"{index} names {file!r}, which is not in {hf_dir}")
        return dict(weight_map)
    files = sorted(glob.glob(os.path.join(hf_dir, "*.safetensors")))
    if not files:
        raise FileNotFoundError(f"no {INDEX_FILE} and no *.safetensors files in {hf_dir}")
    where: dict[str, str] = {}
    for path in files:
        with safetensors.safe_open(path, framework="numpy") as fh:
            for name in fh.keys():  # noqa: SIM118 (safe_open is not iterable)
                if name in where:
                    raise ValueError(f"tensor {name!r} is in both {where[name]} and {os.path.basename(path)} "
                                     f"({hf_dir})")
                where[name] = os.path.basename(path)
    return where


def _canonical_names(stored: dict[str, str]) -> dict[str, tuple[str, str]]:
    """Canonical HF name -> (stored name, file), dropping what a text-only model never reads."""
    multimodal = any(n.startswith(old) for n in stored for old, _ in _MM_RENAMES)
    out: dict[str, tuple[str, str]] = {}
    for name, file in stored.items():
        if name.endswith(".rotary_emb.inv_freq"):
            continue  # a buffer old exporters saved; recomputed from the config
        canon = name
        if multimodal:
            if name.startswith(_MM_IGNORED):
                continue
            for old, new in _MM_RENAMES:
                if name.startswith(old):
                    canon = new + name[len(old):]
                    break
        out[canon] = (name, file)
    return out


def _check_tensors(hf_dir: str, cfg: ModelConfig, specs: dict[str, _Spec],
                   names: dict[str, tuple[str, str]], open_file: Callable[[str], Any]) -> None:
    """Missing, unexpected, wrongly shaped or typed tensors -> ValueError naming tensor and file."""
    expected = {hf: spec.hf_shape for spec in specs.values() for hf in spec.hf_names}
    missing = [n for n in expected if n not in names]
    if missing:
        source = INDEX_FILE if os.path.isfile(os.path.join(hf_dir, INDEX_FILE)) else "any *.safetensors file"
        raise ValueError(f"HF checkpoint {hf_dir} lacks tensor(s) {missing[:8]}"
                         + (f" and {len(missing) - 8} more" if len(missing) > 8 else "")
                         + f" (not in {source}) that this {hf_family(cfg)} model config needs")
    ignorable = {"lm_head.weight"} if cfg.tie_embeddings else set()  # some exporters write the tied head too
    extra = [f"{names[n][0]} ({names[n][1]})" for n in names if n not in expected and n not in ignorable]
    if extra:
        raise ValueError(f"HF checkpoint {hf_dir} has unexpected tensor(s) {extra[:8]} for this model config "
                         f"({hf_family(cfg)}, {cfg.num_layers} layers, qkv_bias={cfg.qkv_bias})")
    keys: dict[str, set[str]] = {}
    for canon, shape in expected.items():
        stored, file = names[canon]
        fh = open_file(file)
        if file not in keys:
            keys[file] = set(fh.keys())  # noqa: SIM118 (safe_open is not a mapping)
        if stored not in keys[file]:
            raise ValueError(f"tensor {stored!r} is listed in {INDEX_FILE} under {file} but {file} lacks it")
        sl = fh.get_slice(stored)
        found = tuple(sl.get_shape())
        if found != shape:
            raise ValueError(f"tensor {stored!r} in {file}: expected shape {shape}, found {found}")
        if sl.get_dtype() not in _ALLOWED_DTYPES:
            raise ValueError(f"tensor {stored!r} in {file}: dtype {sl.get_dtype()} is not supported "
                             f"(expected one of {sorted(_ALLOWED_DTYPES)})")


def _read_slice(sl, key: tuple[slice, ...]) -> np.ndarray:
    """Read ``key`` of a lazily opened tensor (only those bytes); one function so tests can count reads."""
    return sl[key]


def _read_part(kind: str, sl, rng: list[tuple[int, int]], heads: int, hd: int) -> np.ndarray:
    """The part ``rng`` (one (start, stop) per dim of our per-layer layout) of our tensor, from HF's ``sl``."""
    if kind == "same":
        (a0, a1), (b0, b1) = rng
        return _read_slice(sl, (slice(a0, a1), slice(b0, b1)))
    if kind == "T":
        (a0, a1), (b0, b1) = rng
        return _read_slice(sl, (slice(b0, b1), slice(a0, a1))).T
    if kind == "norm":
        ((a0, a1),) = rng
        return _read_slice(sl, (slice(a0, a1),))
    # Heads are contiguous row/column blocks of HF's [heads * head_dim] axis; head_dim is never sharded by
    # our rules, but a partial head_dim range still works (reading whole heads, then cutting).
    if kind == "in_heads":  # ours [d, heads, hd] <- HF [heads * hd, d]
        (d0, d1), (n0, n1), (h0, h1) = rng
        x = _read_slice(sl, (slice(n0 * hd, n1 * hd), slice(d0, d1)))
        return x.T.reshape(d1 - d0, n1 - n0, hd)[:, :, h0:h1]
    if kind == "bias":  # ours [heads, hd] <- HF [heads * hd]
        (n0, n1), (h0, h1) = rng
        return _read_slice(sl, (slice(n0 * hd, n1 * hd),)).reshape(n1 - n0, hd)[:, h0:h1]
    if kind == "out_heads":  # ours [heads, hd, d] <- HF [d, heads * hd]
        (n0, n1), (h0, h1), (d0, d1) = rng
        x = _read_slice(sl, (slice(d0, d1), slice(n0 * hd, n1 * hd)))
        return x.T.reshape(n1 - n0, hd, d1 - d0)[:, h0:h1, :]
    raise AssertionError(kind)


def _read_shard(spec: _Spec, index: tuple[slice, ...], shape: tuple[int, ...], dtype: np.dtype,
                get_slice: Callable[[str], Any], hd: int, shift: float) -> np.ndarray:
    """One device's shard (``index`` into our leaf of ``shape``) in ``dtype``: only its layers, rows, columns.

    Host memory: the shard plus one HF slice.
    """
    rng = [s.indices(n)[:2] for s, n in zip(index, shape)]
    if any(s.step not in (None, 1) for s in index):
        raise ValueError(f"strided shard index {index} is not supported")

    def part(name: str, r: list[tuple[int, int]]) -> np.ndarray:
        x = _read_part(spec.kind, get_slice(name), r, spec.heads, hd)
        if spec.kind == "norm" and shift:
            x = x.astype(np.float32) - np.float32(shift)  # in fp32: bf16 weights would round twice
        return x.astype(dtype, copy=False)

    if not spec.stacked:
        return np.ascontiguousarray(part(spec.hf_names[0], rng))
    (l0, l1), rest = rng[0], rng[1:]
    out = np.empty([l1 - l0] + [b - a for a, b in rest], dtype)
    for j, layer in enumerate(range(l0, l1)):
        out[j] = part(spec.hf_names[layer], rest)
    return out


def _place(name: str, spec: _Spec, target: jax.ShapeDtypeStruct, get_slice, hd: int, shift: float) -> jax.Array:
    """Our leaf ``name`` on ``target.sharding``, read one unique device shard at a time.

    Not ``jax.make_array_from_callback``: it keeps every device's host shard (replicas included) until
    all are read; here each shard goes to its devices before the next one is read.
    """
    sharding, shape, dtype = target.sharding, tuple(target.shape), np.dtype(target.dtype)
    try:
        indices, expect = sharding.addressable_devices_indices_map(shape), tuple(sharding.shard_shape(shape))
    except ValueError as e:  # e.g. fewer kv heads than the tensor axis
        raise ValueError(f"{name} of shape {shape} cannot be sharded as {sharding.spec} on this mesh: {e}") from e
    by_index: dict[tuple, list] = {}
    for device, index in indices.items():
        key = tuple(s.indices(n) for s, n in zip(index, shape))
        by_index.setdefault(key, []).append((device, index))
    arrays = {}
    for entries in by_index.values():
        host = _read_shard(spec, entries[0][1], shape, dtype, get_slice, hd, shift)
        if host.shape != expect:
            raise AssertionError(f"{name}: read a shard of shape {host.shape}, the sharding wants {expect}")
        for device, _ in entries:
            arrays[device] = jax.device_put(host, device)
        del host
    ordered = [arrays[d] for d in indices]
    return jax.make_array_from_single_device_arrays(shape, sharding, ordered)


def load_hf_params(hf_dir: str | os.PathLike, cfg: ModelConfig, mesh: jax.sharding.Mesh, *,
                   check_config: bool = True):
    """Load an HF checkpoint directory into params shaped and sharded as ``abstract_model(cfg, mesh)``.

    Tensors are found through ``model.safetensors.index.json`` (or each ``*.safetensors`` header) and
    read lazily with ``safetensors.safe_open(..., framework="numpy").get_slice``: for each of our leaves
    and each unique device shard of it on this host, only that shard's layers, rows and columns are
    read, transformed as :func:`~ee_jax.models.hf_convert.from_hf_state_dict` does (transpose/reshape,
    norm offset shift, cast to the leaf's dtype), and put on its devices before the next shard is read.
    Peak host memory is one device shard of one leaf plus one HF tensor slice, never the model; each
    process reads only what its own devices hold (multi-host: call on every process, shared files).

    Before reading any data, every expected tensor's presence, shape and dtype (F32/BF16/F16) are
    checked, and tensors the config does not use are rejected (``ValueError`` naming tensor and file;
    a tied ``lm_head.weight`` and rotary ``inv_freq`` buffers are ignored). With ``check_config`` and a
    ``config.json`` in ``hf_dir``, the fields that change the math (see :func:`_math_signature`) must
    equal ``model_config_from_hf(hf_dir)``'s.

    Returns an ``nnx.State`` of ``nnx.Param`` like :func:`ee_jax.models.init_params`'s.
    """
    hf_dir = os.fspath(hf_dir)
    if not os.path.isdir(hf_dir):
        raise FileNotFoundError(f"HF checkpoint directory not found: {hf_dir}")
    if check_config and os.path.isfile(os.path.join(hf_dir, "config.json")):
        ours, theirs = _math_signature(cfg), _math_signature(model_config_from_hf(hf_dir))
        diff = {k: (ours[k], theirs[k]) for k in ours if ours[k] != theirs[k]}
        if diff:
            raise ValueError(f"model config differs from {hf_dir}/config.json in {sorted(diff)}: "
                             + "; ".join(f"{k}: ours {a!r}, HF {b!r}" for k, (a, b) in diff.items())
                             + " (pass check_config=False to load anyway)")
    family = hf_family(cfg)
    specs = _specs(cfg)
    names = _canonical_names(_tensor_files(hf_dir))
    _, target = abstract_model(cfg, mesh)
    leaves, treedef = named_leaves(target)
    ours = {n for n, _ in leaves}
    if ours != set(specs):
        raise AssertionError(f"HF layout table is out of date: model leaves {sorted(ours ^ set(specs))}")
    shift = cfg.norm_offset - (1.0 if family == "gemma3" else 0.0)
    hd = cfg.head_dim or cfg.d_model // cfg.num_heads
    with contextlib.ExitStack() as stack:
        handles: dict[str, Any] = {}

        def open_file(file: str):
            if file not in handles:
                handles[file] = stack.enter_context(safetensors.safe_open(os.path.join(hf_dir, file),
                                                                          framework="numpy"))
            return handles[file]

        def get_slice(canon: str):
            stored, file = names[canon]
            return open_file(file).get_slice(stored)

        _check_tensors(hf_dir, cfg, specs, names, open_file)
        new_leaves = []
        for name, leaf in leaves:
            value = _place(name, specs[name], leaf_value(leaf), get_slice, hd, shift)
            new_leaves.append(leaf.replace(value) if is_variable(leaf) else value)
    return jax.tree_util.tree_unflatten(treedef, new_leaves)


# ---------------------------------------------------------------------------------------------------------
