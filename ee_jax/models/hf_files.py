"""Hugging Face checkpoint *directories*: read ``config.json``, load weights shard by shard, export.

* :func:`model_config_from_hf` -- ``config.json`` (plain JSON, no ``transformers`` import) ->
  :class:`ModelConfig`, for ``LlamaForCausalLM``, ``Qwen2ForCausalLM``, ``Gemma3ForCausalLM`` and the
  text half of ``Gemma3ForConditionalGeneration``. Anything that would change the math and that our
  decoder cannot express raises ``ValueError`` naming the key and its value.
* :func:`load_hf_params` -- ``*.safetensors`` -> params placed in ``abstract_model(cfg, mesh)``'s
  shardings; each device's shard is read with ``safe_open(...).get_slice`` (only its layers' rows and
  columns), so no host ever holds the model.
* :func:`save_hf_checkpoint` -- params -> a directory ``transformers.AutoModelForCausalLM.from_pretrained``
  loads (``config.json``, safetensors shards + index, ``generation_config.json``, tokenizer files).

Tensor names and layouts are those of :mod:`ee_jax.models.hf_convert` (see its table).

bf16: ``safe_open(framework="numpy")`` resolves the ``BF16`` dtype with ``np.dtype("bfloat16")``, which
exists once ``ml_dtypes`` is imported (JAX imports it; we import it explicitly). Slices of bf16 tensors
then arrive as ``ml_dtypes.bfloat16`` arrays and are cast to the parameter dtype; exports write
``ml_dtypes.bfloat16`` arrays, which ``safetensors.numpy`` stores as ``BF16``. No torch round trip.

Defaults for keys missing from ``config.json`` are those of the ``transformers`` 5.23 config classes
(v4 exporters drop keys equal to the class default, e.g. Gemma3's ``tie_word_embeddings``):

=====================  ===========  ============  =======================
key                    Llama        Qwen2         Gemma3 (text)
=====================  ===========  ============  =======================
tie_word_embeddings    False        False         True
rms_norm_eps           1e-6         1e-6          1e-6
num_key_value_heads    = heads      32            4
head_dim               d // heads   d // heads    256
max_position_emb.      2048         32768         131072
rope theta             10000        10000         1e6 global, 1e4 local
query_pre_attn_scalar  --           --            256
sliding_window         --           (off)         4096, pattern 6
=====================  ===========  ============  =======================
"""

from __future__ import annotations

import contextlib
import glob
import json
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import jax
import ml_dtypes  # noqa: F401  (registers np.dtype("bfloat16"), which safe_open's numpy backend needs)
import numpy as np
import safetensors
import safetensors.numpy

from ee_jax.checkpoint.safetensors_io import is_variable, leaf_value, named_leaves
from ee_jax.config import ModelConfig
from ee_jax.config.hf import model_config_from_hf
from ee_jax.models.factory import abstract_model
from ee_jax.models.hf_convert import norm_names, hf_config, hf_family, to_hf_state_dict
from ee_jax.models.transformer import layer_windows

__all__ = ["load_hf_params", "model_config_from_hf", "save_hf_checkpoint", "write_dir_atomically",
           "write_safetensors"]

INDEX_FILE = "model.safetensors.index.json"
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "tokenizer.model",
                   "added_tokens.json", "chat_template.jinja")
TOKEN_ID_KEYS = ("bos_token_id", "eos_token_id", "pad_token_id")

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
# Export
# ---------------------------------------------------------------------------------------------------------

def _shards(sd: dict[str, np.ndarray], max_bytes: int) -> list[dict[str, np.ndarray]]:
    """Greedy split in order; a tensor larger than ``max_bytes`` gets a shard of its own (as HF does)."""
    shards: list[dict[str, np.ndarray]] = [{}]
    size = 0
    for name, arr in sd.items():
        if shards[-1] and size + arr.nbytes > max_bytes:
            shards.append({})
            size = 0
        shards[-1][name] = arr
        size += arr.nbytes
    return shards


def check_out_dir(out_dir: str, overwrite: bool) -> None:
    """Raise ``FileExistsError`` if ``out_dir`` is a file, or a non-empty directory and not ``overwrite``."""
    if os.path.exists(out_dir) and not os.path.isdir(out_dir):
        raise FileExistsError(f"target {out_dir} exists and is not a directory")
    if os.path.isdir(out_dir) and os.listdir(out_dir) and not overwrite:
        raise FileExistsError(f"target {out_dir} exists and is not empty (overwrite=True / --overwrite replaces it)")


def _copy_tokenizer(tokenizer_dir: str, dest: str) -> None:
    if os.path.isfile(tokenizer_dir):
        shutil.copy2(tokenizer_dir, os.path.join(dest, os.path.basename(tokenizer_dir)))
        return
    found = [f for f in TOKENIZER_FILES if os.path.isfile(os.path.join(tokenizer_dir, f))]
    if not found:
        raise FileNotFoundError(f"tokenizer_dir {tokenizer_dir} has none of {list(TOKENIZER_FILES)}")
    for f in found:
        shutil.copy2(os.path.join(tokenizer_dir, f), os.path.join(dest, f))


def write_safetensors(dest: str, sd: dict[str, np.ndarray], max_shard_bytes: int = 2**30) -> None:
    """Write ``sd`` into ``dest`` as ``model.safetensors``, or as shards of at most ``max_shard_bytes``
    plus ``model.safetensors.index.json`` (the layout ``transformers`` reads)."""
    shards = _shards(sd, max_shard_bytes)
    meta = {"format": "pt"}  # transformers rejects safetensors files whose format it does not know
    if len(shards) == 1:
        safetensors.numpy.save_file(shards[0], os.path.join(dest, "model.safetensors"), metadata=meta)
        return
    weight_map = {}
    for i, shard in enumerate(shards, 1):
        file = f"model-{i:05d}-of-{len(shards):05d}.safetensors"
        safetensors.numpy.save_file(shard, os.path.join(dest, file), metadata=meta)
        weight_map.update(dict.fromkeys(shard, file))
    index = {"metadata": {"total_size": sum(a.nbytes for a in sd.values()),
                          "total_parameters": sum(int(a.size) for a in sd.values())},
             "weight_map": dict(sorted(weight_map.items()))}
    with open(os.path.join(dest, INDEX_FILE), "w", encoding="utf-8") as fh:
        json.dump(index, fh, indent=2)


def _write_dir(tmp: str, sd: dict[str, np.ndarray], cfg: ModelConfig, max_shard_bytes: int,
               tokenizer_dir: str | None, token_ids: dict[str, Any]) -> None:
    import transformers

    hf_config(cfg, **token_ids).to_json_file(os.path.join(tmp, "config.json"), use_diff=True)
    if token_ids:
        transformers.GenerationConfig(**token_ids).to_json_file(os.path.join(tmp, "generation_config.json"))
    write_safetensors(tmp, sd, max_shard_bytes)
    if tokenizer_dir:
        _copy_tokenizer(os.fspath(tokenizer_dir), tmp)


def write_dir_atomically(out_dir: str | os.PathLike, fill: Callable[[str], None], *, overwrite: bool = False) -> str:
    """Build a directory with ``fill(tmp)`` in a temporary sibling of ``out_dir``, then rename it into place.

    A non-empty ``out_dir`` is refused (``FileExistsError``) unless ``overwrite``; it is then replaced
    only once the new one is complete, and put back if the rename fails. Returns ``out_dir`` (absolute).
    """
    out_dir = os.path.abspath(os.fspath(out_dir))
    check_out_dir(out_dir, overwrite)
    parent, base = os.path.split(out_dir)
    os.makedirs(parent, exist_ok=True)
    tmp = os.path.join(parent, f".{base}.tmp-{os.getpid()}")
    old = os.path.join(parent, f".{base}.old-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    os.makedirs(tmp)
    moved = False
    try:
        fill(tmp)
        if os.path.isdir(out_dir):
            os.replace(out_dir, old)  # an empty or (overwrite) replaced directory; removed once the new one is in
            moved = True
        os.replace(tmp, out_dir)
    except BaseException:
        if moved and not os.path.exists(out_dir):
            os.replace(old, out_dir)  # put the previous one back
        raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.rmtree(old, ignore_errors=True)
    return out_dir


def save_hf_checkpoint(params, cfg: ModelConfig, out_dir: str | os.PathLike, *,
                       tokenizer_dir: str | os.PathLike | None = None, max_shard_bytes: int = 2**30,
                       token_ids: dict[str, Any] | None = None, overwrite: bool = False) -> str:
    """Write ``params`` as an HF checkpoint directory that ``AutoModelForCausalLM.from_pretrained`` loads.

    Writes ``config.json`` (:func:`~ee_jax.models.hf_convert.hf_config` with ``token_ids``),
    ``model.safetensors`` -- or ``model-0000i-of-0000N.safetensors`` plus ``model.safetensors.index.json``
    when the weights exceed ``max_shard_bytes`` -- ``generation_config.json`` when ``token_ids`` (keys
    ``bos_token_id``, ``eos_token_id``, ``pad_token_id``) are given, and the tokenizer files found in
    ``tokenizer_dir`` (a directory, or one file such as ``tokenizer.json``). Weights keep the params'
    dtype. Atomic: everything is written to a temporary directory next to ``out_dir`` and renamed into
    place; a non-empty ``out_dir`` is refused (``FileExistsError``) unless ``overwrite``.

    Gathers the whole model on the host (:func:`~ee_jax.models.hf_convert.to_hf_state_dict`); multi-host:
    every process must call (a collective), process 0 writes. Returns ``out_dir``.
    """
    out_dir = os.path.abspath(os.fspath(out_dir))
    token_ids = dict(token_ids or {})
    unknown = sorted(set(token_ids) - set(TOKEN_ID_KEYS))
    if unknown:
        raise ValueError(f"token_ids has unknown key(s) {unknown}; expected some of {list(TOKEN_ID_KEYS)}")
    if max_shard_bytes <= 0:
        raise ValueError(f"max_shard_bytes={max_shard_bytes}: expected > 0")
    if jax.process_count() == 1:
        check_out_dir(out_dir, overwrite)  # fail before the gather; multi-host checks after it (no hang)
    sd = to_hf_state_dict(params, cfg)  # collective on multi-host
    if jax.process_index() != 0:
        return out_dir
    return write_dir_atomically(
        out_dir, lambda tmp: _write_dir(tmp, sd, cfg, max_shard_bytes, tokenizer_dir, token_ids), overwrite=overwrite)
