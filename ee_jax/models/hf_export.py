"""Export params as a Hugging Face checkpoint *directory* that
``transformers.AutoModelForCausalLM.from_pretrained`` loads: ``config.json``, safetensors shards + index,
``generation_config.json``, tokenizer files. Exports write ``ml_dtypes.bfloat16`` arrays as they are, which
``safetensors.numpy`` stores as ``BF16`` (no torch round trip). Loading is :mod:`ee_jax.models.hf_load`.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from typing import Any

import jax
import numpy as np
import safetensors.numpy

from ee_jax.config import ModelConfig
from ee_jax.models.hf_convert import hf_config, to_hf_state_dict
from ee_jax.models.hf_load import INDEX_FILE

__all__ = ["check_out_dir", "save_hf_checkpoint", "write_dir_atomically", "write_safetensors"]

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "tokenizer.model",
                   "added_tokens.json", "chat_template.jinja")
TOKEN_ID_KEYS = ("bos_token_id", "eos_token_id", "pad_token_id")


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
