"""GGUF files (llama.cpp) -> Hugging Face checkpoint directories that the rest of ee_jax loads.

``import_gguf(path, out_dir)`` dequantises every tensor with the ``gguf`` package to float32, renames
it to its ``transformers`` name, undoes llama.cpp's layout changes, and writes ``config.json``,
``model.safetensors`` and the tokenizer rebuilt from the file's vocabulary
(:mod:`ee_jax.tokenizer.gguf_vocab`). The directory is then an ordinary ``hf:DIR`` source: ``ee-jax
train ... recipe.init=hf:DIR``, :func:`~ee_jax.models.hf_load.load_hf_params`, and
``transformers.AutoModelForCausalLM.from_pretrained(DIR)``.

Architectures: ``llama`` (SmolLM2, TinyLlama, Llama 2/3 without RoPE scaling), ``qwen2`` and ``gemma3``.
What llama.cpp's converter changed, and is undone here:

* ``llama``: the rows of ``attn_q`` / ``attn_k`` were permuted from rotate-half to interleaved RoPE
  pairs, per head; the inverse permutation restores HF's layout (as ``transformers`` does).
* ``gemma3``: every RMSNorm weight is stored as ``1 + w`` (HF keeps ``w``); 1 is subtracted. The
  architecture constants the file does not carry (local RoPE base 10 000, one global layer in six,
  query scale ``head_dim ** -0.5``) are those of llama.cpp and ``transformers``.
* Tied embeddings: no ``output.weight`` tensor.

GGUF weights are quantised (Q4_K, Q5_0, Q8_0...): the import is exact *for the dequantised values*,
which is what llama.cpp and ``transformers`` (``gguf_file=``) compute with too.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator
from typing import Any

import numpy as np

from ee_jax.models.hf_export import check_out_dir, write_dir_atomically, write_safetensors
from ee_jax.tokenizer.gguf_vocab import tokenizer_files

__all__ = ["gguf_hf_config", "gguf_metadata", "gguf_state_dict", "import_gguf"]

ARCHITECTURES = {"llama": "LlamaForCausalLM", "qwen2": "Qwen2ForCausalLM", "gemma3": "Gemma3ForCausalLM"}
_MODEL_TYPES = {"llama": "llama", "qwen2": "qwen2", "gemma3": "gemma3_text"}
_GEMMA3_LOCAL_THETA, _GEMMA3_PATTERN = 10000.0, 6

# GGUF tensor (per layer "blk.N.") -> HF name (per layer "model.layers.N.")
_LAYER = {
    "attn_norm.weight": "input_layernorm.weight",
    "attn_q.weight": "self_attn.q_proj.weight", "attn_q.bias": "self_attn.q_proj.bias",
    "attn_k.weight": "self_attn.k_proj.weight", "attn_k.bias": "self_attn.k_proj.bias",
    "attn_v.weight": "self_attn.v_proj.weight", "attn_v.bias": "self_attn.v_proj.bias",
    "attn_output.weight": "self_attn.o_proj.weight",
    "ffn_gate.weight": "mlp.gate_proj.weight", "ffn_up.weight": "mlp.up_proj.weight",
    "ffn_down.weight": "mlp.down_proj.weight",
}
_LAYER_BY_ARCH = {
    "llama": {"ffn_norm.weight": "post_attention_layernorm.weight"},
    "qwen2": {"ffn_norm.weight": "post_attention_layernorm.weight"},
    "gemma3": {"ffn_norm.weight": "pre_feedforward_layernorm.weight",
               "post_attention_norm.weight": "post_attention_layernorm.weight",
               "post_ffw_norm.weight": "post_feedforward_layernorm.weight",
               "attn_q_norm.weight": "self_attn.q_norm.weight", "attn_k_norm.weight": "self_attn.k_norm.weight"},
}
_GLOBAL = {"token_embd.weight": "model.embed_tokens.weight", "output_norm.weight": "model.norm.weight",
           "output.weight": "lm_head.weight"}


def _reader(path: str):
    from gguf import GGUFReader

    if not os.path.isfile(path):
        raise FileNotFoundError(f"GGUF file not found: {path}")
    try:
        return GGUFReader(path)
    except Exception as e:  # the reader raises ValueError/struct errors on a non-GGUF file
        raise ValueError(f"{path}: not a readable GGUF file ({type(e).__name__}: {e})") from None


def gguf_metadata(reader) -> dict[str, Any]:
    """Every key-value pair of a ``GGUFReader`` as Python values (strings, numbers, lists)."""
    return {key: field.contents() for key, field in reader.fields.items() if not key.startswith("GGUF.")}


def _arch(meta: dict[str, Any], where: str) -> str:
    arch = meta.get("general.architecture")
    if arch not in ARCHITECTURES:
        raise ValueError(f"{where}: general.architecture={arch!r} is not supported; expected one of "
                         f"{sorted(ARCHITECTURES)}")
    return arch


def gguf_hf_config(meta: dict[str, Any], tensor_names: set[str], where: str = "GGUF") -> dict[str, Any]:
    """The HF ``config.json`` of a GGUF model (``transformers`` 5 keys; fp32 weights)."""
    arch = _arch(meta, where)

    def key(name: str, default: Any = KeyError) -> Any:
        k = f"{arch}.{name}"
        if k in meta:
            return meta[k]
        if default is KeyError:
            raise ValueError(f"{where}: metadata key {k!r} is missing")
        return default

    d, heads, layers = int(key("embedding_length")), int(key("attention.head_count")), int(key("block_count"))
    head_dim = int(key("attention.key_length", d // heads))
    if int(key("attention.value_length", head_dim)) != head_dim:
        raise ValueError(f"{where}: {arch}.attention.value_length != key_length is not supported")
    rotary = int(key("rope.dimension_count", head_dim))
    if rotary != head_dim:
        raise ValueError(f"{where}: {arch}.rope.dimension_count={rotary} (partial rotary) is not supported; "
                         f"expected head_dim={head_dim}")
    if "rope_freqs.weight" in tensor_names or key("rope.scaling.type", "none") not in ("none", None):
        raise ValueError(f"{where}: RoPE scaling (rope_freqs / {arch}.rope.scaling.type) is not supported")
    vocab = int(key("vocab_size", len(meta.get("tokenizer.ggml.tokens") or [])))
    cfg: dict[str, Any] = {
        "architectures": [ARCHITECTURES[arch]], "model_type": _MODEL_TYPES[arch], "dtype": "float32",
        "vocab_size": vocab, "hidden_size": d, "intermediate_size": int(key("feed_forward_length")),
        "num_hidden_layers": layers, "num_attention_heads": heads,
        "num_key_value_heads": int(key("attention.head_count_kv", heads)), "head_dim": head_dim,
        "max_position_embeddings": int(key("context_length")),
        "rms_norm_eps": float(key("attention.layer_norm_rms_epsilon")),
        "tie_word_embeddings": "output.weight" not in tensor_names,
    }
    theta = float(key("rope.freq_base", 10000.0))
    for name, k in (("bos_token_id", "bos"), ("eos_token_id", "eos"), ("pad_token_id", "padding")):
        if meta.get(f"tokenizer.ggml.{k}_token_id") is not None:
            cfg[name] = int(meta[f"tokenizer.ggml.{k}_token_id"])
    if arch == "gemma3":
        window = int(key("attention.sliding_window", 0))
        cfg.update(hidden_activation="gelu_pytorch_tanh", query_pre_attn_scalar=head_dim, sliding_window=window,
                   final_logit_softcapping=None, attn_logit_softcapping=None,
                   layer_types=["full_attention" if (i + 1) % _GEMMA3_PATTERN == 0 or not window
                                else "sliding_attention" for i in range(layers)],
                   rope_parameters={"full_attention": {"rope_type": "default", "rope_theta": theta},
                                    "sliding_attention": {"rope_type": "default",
                                                          "rope_theta": _GEMMA3_LOCAL_THETA}})
    else:
        cfg.update(hidden_act="silu", rope_parameters={"rope_type": "default", "rope_theta": theta})
        if arch == "llama":
            cfg.update(attention_bias=False, mlp_bias=False)
    return cfg


def _unpermute(w: np.ndarray, heads: int) -> np.ndarray:
    """Invert llama.cpp's per-head RoPE row permutation of a q/k projection ([heads * hd, d] or [heads * hd])."""
    half = w.shape[0] // heads // 2
    return w.reshape(heads, half, 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def _hf_name(arch: str, name: str, where: str) -> str:
    if name in _GLOBAL:
        return _GLOBAL[name]
    m = re.fullmatch(r"blk\.(\d+)\.(.+)", name)
    table = {**_LAYER, **_LAYER_BY_ARCH[arch]}
    if m is None or m.group(2) not in table:
        raise ValueError(f"{where}: tensor {name!r} has no Hugging Face {ARCHITECTURES[arch]} counterpart")
    return f"model.layers.{m.group(1)}.{table[m.group(2)]}"


def gguf_state_dict(reader, config: dict[str, Any], where: str = "GGUF") -> Iterator[tuple[str, np.ndarray]]:
    """``(hf_name, float32 array)`` for every tensor of the file, dequantised, in HF layout."""
    from gguf.quants import dequantize

    arch = next(a for a, cls in ARCHITECTURES.items() if cls == config["architectures"][0])
    heads, kv = config["num_attention_heads"], config["num_key_value_heads"]
    for t in reader.tensors:
        name = _hf_name(arch, t.name, where)
        w = np.asarray(dequantize(t.data, t.tensor_type), dtype=np.float32)
        expected = tuple(int(n) for n in reversed(t.shape))  # GGML lists dimensions innermost first
        if w.shape != expected:
            w = w.reshape(expected)
        if arch == "llama" and ".attn_q." in t.name:
            w = _unpermute(w, heads)
        elif arch == "llama" and ".attn_k." in t.name:
            w = _unpermute(w, kv)
        if arch == "gemma3" and t.name.endswith("norm.weight"):
            w = w - np.float32(1.0)
        yield name, np.ascontiguousarray(w)


def import_gguf(path: str | os.PathLike, out_dir: str | os.PathLike, *, overwrite: bool = False,
                max_shard_bytes: int = 2**30, progress: bool = False) -> dict[str, Any]:
    """Convert a GGUF file into an HF checkpoint directory (atomic: nothing is left half-written).

    Writes ``config.json``, ``generation_config.json``, ``model.safetensors`` (fp32; sharded above
    ``max_shard_bytes``), the rebuilt tokenizer (``tokenizer.model`` or ``tokenizer.json``) with
    ``tokenizer_config.json``, and ``gguf_source.json`` (file, size, architecture, quantisation types).
    Raises ``ValueError`` naming the key or tensor for anything ee_jax cannot represent. Returns a
    summary (``out_dir``, ``architecture``, ``parameters``, ``tokenizer``).
    """
    from tqdm.auto import tqdm

    path = os.fspath(path)
    check_out_dir(os.path.abspath(os.fspath(out_dir)), overwrite)  # before minutes of dequantising
    reader = _reader(path)
    meta = gguf_metadata(reader)
    config = gguf_hf_config(meta, {t.name for t in reader.tensors}, where=path)
    tok_files = tokenizer_files(meta, where=path)  # before the (slow) tensors: a vocabulary error fails fast
    sd: dict[str, np.ndarray] = {}
    quant: dict[str, int] = {}
    for (name, w), t in zip(tqdm(gguf_state_dict(reader, config, where=path), total=len(reader.tensors),
                                 desc="dequantise", disable=not progress), reader.tensors, strict=True):
        sd[name] = w
        quant[t.tensor_type.name] = quant.get(t.tensor_type.name, 0) + 1
    source = {"gguf": os.path.abspath(path), "bytes": os.path.getsize(path), "name": meta.get("general.name"),
              "architecture": config["architectures"][0], "tensor_types": quant,
              "parameters": int(sum(a.size for a in sd.values()))}
    generation = {k: config[k] for k in ("bos_token_id", "eos_token_id", "pad_token_id") if k in config}

    def fill(tmp: str) -> None:
        for name, content in {"config.json": json.dumps(config, indent=1).encode(),
                              "generation_config.json": json.dumps(generation, indent=1).encode(),
                              "gguf_source.json": json.dumps(source, indent=1).encode(), **tok_files}.items():
            with open(os.path.join(tmp, name), "wb") as f:
                f.write(content)
        write_safetensors(tmp, sd, max_shard_bytes)

    out = write_dir_atomically(out_dir, fill, overwrite=overwrite)
    return {"out_dir": out, "architecture": config["architectures"][0], "parameters": source["parameters"],
            "tokenizer": next(n for n in tok_files if n != "tokenizer_config.json"), "tensor_types": quant}
