"""Conversion between ee_jax decoder parameters and Hugging Face ``transformers`` checkpoints.

Three functions, all pure (no file I/O, no pickle):

* :func:`hf_config` -- the ``transformers`` config equivalent to a :class:`ModelConfig`
  (``LlamaConfig``, ``Qwen2Config`` or ``Gemma3TextConfig``; see :func:`hf_family`).
* :func:`to_hf_state_dict` -- our params -> ``{hf_name: np.ndarray}`` in HF names and layouts.
* :func:`from_hf_state_dict` -- the inverse, placed into the structure/shardings of a target state.

Our names come from :func:`ee_jax.checkpoint.state_to_flat_dict` (layers stacked on a leading axis,
e.g. ``layers.attn.q`` of shape ``[L, d, heads, head_dim]``). HF stores one tensor per layer ``i``
(prefix ``model.layers.{i}.``), linear weights as ``[out, in]``::

    embed [V, d]                     model.embed_tokens.weight              same
    lm_head [d, V] (untied only)     lm_head.weight                         transposed
    final_norm.scale                 model.norm.weight                      (see norms)
    layers.attn.{q,k,v} [L,d,n,h]    self_attn.{q,k,v}_proj.weight          [n*h, d]
    layers.attn.{q,k,v}_bias [L,n,h] self_attn.{q,k,v}_proj.bias            [n*h]       (Qwen2)
    layers.attn.o [L,n,h,d]          self_attn.o_proj.weight                [d, n*h]
    layers.attn.{q,k}_norm.scale     self_attn.{q,k}_norm.weight                        (Gemma3)
    layers.attn_norm.scale           input_layernorm.weight
    layers.mlp_norm.scale            post_attention_layernorm.weight        (Llama/Qwen2: the pre-MLP norm)
                                     pre_feedforward_layernorm.weight       (Gemma3)
    layers.post_attn_norm.scale      post_attention_layernorm.weight        (Gemma3)
    layers.post_mlp_norm.scale       post_feedforward_layernorm.weight      (Gemma3)
    layers.mlp.{gate,up} [L,d,f]     mlp.{gate,up}_proj.weight              [f, d]
    layers.mlp.down [L,f,d]          mlp.down_proj.weight                   [d, f]

Norms: we apply ``norm_offset + scale``; HF Llama/Qwen2 apply ``w`` and Gemma3 ``1 + w``, so
``w = scale + norm_offset - hf_offset`` (an identity for the presets, which match their family).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from ee_jax.checkpoint.safetensors_io import flat_dict_to_state, leaf_value, named_leaves, state_to_flat_dict
from ee_jax.config import ModelConfig
from ee_jax.models.transformer import layer_windows

__all__ = ["from_hf_state_dict", "hf_config", "hf_family", "to_hf_state_dict"]


def hf_family(cfg: ModelConfig) -> str:
    """``"gemma3"``, ``"qwen2"`` or ``"llama"``, from the config's features; raises if HF has no match.

    Gemma3 is chosen by any Gemma feature (q/k norms, sandwich norms, embedding scale, GeGLU, norm
    offset, sliding windows) and then needs all of q/k norms, sandwich norms, embedding scale and
    GeGLU; Qwen2 by q/k/v biases; anything else is Llama.
    """
    gemma = dict(qk_norm=cfg.qk_norm, post_norms=cfg.post_norms, embed_scale=cfg.embed_scale,
                 gelu_tanh=cfg.activation == "gelu_tanh")
    if any(gemma.values()) or cfg.norm_offset or cfg.sliding_window:
        missing = [k for k, v in gemma.items() if not v]
        if missing or cfg.qkv_bias:
            raise ValueError(f"no HF architecture matches this config: Gemma3 features without {missing}"
                             + (" and with qkv_bias" if cfg.qkv_bias else ""))
        if cfg.rope_scaling.kind != "none":
            raise ValueError("Gemma3 export with rope_scaling is not supported (HF scales only global layers)")
        return "gemma3"
    if cfg.activation != "silu":
        raise ValueError(f"Llama/Qwen2 need activation='silu', got {cfg.activation!r}")
    hd = cfg.head_dim or cfg.d_model // cfg.num_heads
    if cfg.query_pre_attn_scalar and cfg.query_pre_attn_scalar != hd:
        raise ValueError("query_pre_attn_scalar != head_dim is only expressible in Gemma3")
    return "qwen2" if cfg.qkv_bias else "llama"


def _rope_parameters(cfg: ModelConfig, theta: float) -> dict[str, Any]:
    s = cfg.rope_scaling
    if s.kind == "none":
        return {"rope_type": "default", "rope_theta": float(theta)}
    if s.kind == "llama3":
        return {"rope_type": "llama3", "rope_theta": float(theta), "factor": float(s.factor),
                "low_freq_factor": float(s.low_freq_factor), "high_freq_factor": float(s.high_freq_factor),
                "original_max_position_embeddings": int(s.original_max_position)}
    raise ValueError(f"unknown rope_scaling.kind {s.kind!r}")


def hf_config(cfg: ModelConfig, **overrides):
    """The ``transformers`` config of the same model (``LlamaConfig``/``Qwen2Config``/``Gemma3TextConfig``).

    Token ids (``bos/eos/pad_token_id``) are not part of :class:`ModelConfig`: they default to None
    (so ``generate`` never stops early) and can be given in ``overrides``, as can any other field.
    """
    import transformers

    family = hf_family(cfg)
    hd = cfg.head_dim or cfg.d_model // cfg.num_heads
    common = dict(
        vocab_size=cfg.vocab_size, hidden_size=cfg.d_model, intermediate_size=cfg.ffn_dim,
        num_hidden_layers=cfg.num_layers, num_attention_heads=cfg.num_heads,
        num_key_value_heads=cfg.num_kv_heads, head_dim=hd, max_position_embeddings=cfg.max_seq_len,
        rms_norm_eps=cfg.norm_eps, tie_word_embeddings=cfg.tie_embeddings,
        bos_token_id=None, eos_token_id=None, pad_token_id=None, dtype=cfg.param_dtype,
    )
    if family == "gemma3":
        windows = layer_windows(cfg)
        scalar = cfg.query_pre_attn_scalar or hd
        if float(scalar) != int(scalar):
            raise ValueError(f"Gemma3TextConfig needs an integer query_pre_attn_scalar, got {scalar}")
        rope_full = _rope_parameters(cfg, cfg.rope_theta)
        rope_local = _rope_parameters(cfg, cfg.local_rope_theta)
        kw = dict(
            common, architectures=["Gemma3ForCausalLM"], hidden_activation="gelu_pytorch_tanh",
            query_pre_attn_scalar=int(scalar), sliding_window=cfg.sliding_window or None,
            layer_types=["sliding_attention" if w else "full_attention" for w in windows],
            rope_parameters={"full_attention": rope_full, "sliding_attention": rope_local},
        )
        kw.update(overrides)
        return transformers.Gemma3TextConfig(**kw)
    kw = dict(common, hidden_act="silu", rope_parameters=_rope_parameters(cfg, cfg.rope_theta))
    if family == "qwen2":
        kw.update(architectures=["Qwen2ForCausalLM"])
        kw.pop("head_dim")  # Qwen2 derives head_dim = hidden_size // heads
        if hd != cfg.d_model // cfg.num_heads:
            raise ValueError("Qwen2 needs head_dim == d_model // num_heads")
        kw.update(overrides)
        return transformers.Qwen2Config(**kw)
    kw.update(architectures=["LlamaForCausalLM"], attention_bias=False, mlp_bias=False)
    kw.update(overrides)
    return transformers.LlamaConfig(**kw)


def norm_names(family: str) -> dict[str, str]:
    """Our per-layer norm name -> HF's."""
    if family == "gemma3":
        return {"attn_norm": "input_layernorm", "post_attn_norm": "post_attention_layernorm",
                "mlp_norm": "pre_feedforward_layernorm", "post_mlp_norm": "post_feedforward_layernorm",
                "attn.q_norm": "self_attn.q_norm", "attn.k_norm": "self_attn.k_norm"}
    return {"attn_norm": "input_layernorm", "mlp_norm": "post_attention_layernorm"}


def to_hf_state_dict(params, cfg: ModelConfig) -> dict[str, np.ndarray]:
    """Our params (``nnx.State``, concrete) -> HF state dict of host numpy arrays in the params' dtype.

    Multi-host: gathers sharded arrays (a collective), so every process must call it.
    """
    family = hf_family(cfg)
    flat = state_to_flat_dict(params)
    shift = cfg.norm_offset - (1.0 if family == "gemma3" else 0.0)
    norm = lambda a: (a + np.asarray(shift, a.dtype)) if shift else a  # noqa: E731
    sd: dict[str, np.ndarray] = {"model.embed_tokens.weight": flat["embed"],
                                 "model.norm.weight": norm(flat["final_norm.scale"])}
    if not cfg.tie_embeddings:
        sd["lm_head.weight"] = flat["lm_head"].T
    for i in range(cfg.num_layers):
        p = f"model.layers.{i}."
        d = cfg.d_model
        for n in "qkv":
            w = flat[f"layers.attn.{n}"][i]  # [d, heads, hd]
            sd[p + f"self_attn.{n}_proj.weight"] = w.reshape(d, -1).T
            if cfg.qkv_bias:
                sd[p + f"self_attn.{n}_proj.bias"] = flat[f"layers.attn.{n}_bias"][i].reshape(-1)
        sd[p + "self_attn.o_proj.weight"] = flat["layers.attn.o"][i].reshape(-1, d).T
        for ours, theirs in norm_names(family).items():
            sd[p + theirs + ".weight"] = norm(flat[f"layers.{ours}.scale"][i])
        for n in ("gate", "up", "down"):
            sd[p + f"mlp.{n}_proj.weight"] = flat[f"layers.mlp.{n}"][i].T
    return {k: np.ascontiguousarray(v) for k, v in sd.items()}


def _to_numpy(x) -> np.ndarray:
    """numpy from a numpy array or a torch tensor (bf16 tensors go through fp32)."""
    if hasattr(x, "detach"):  # torch.Tensor, without importing torch
        x = x.detach().cpu()
        if str(x.dtype) == "torch.bfloat16":
            x = x.float()
        x = x.numpy()
    return np.asarray(x)


def from_hf_state_dict(sd: Mapping[str, Any], cfg: ModelConfig, target):
    """HF state dict (numpy arrays or torch tensors) -> params with the structure of ``target``.

    ``target`` is an abstract (``abstract_model(cfg, mesh)[1]``) or concrete params state; the result
    takes each target leaf's dtype and sharding. Missing or unexpected HF tensors raise ``ValueError``
    (HF's non-persistent buffers, e.g. rotary ``inv_freq``, are never in a state dict).
    """
    family = hf_family(cfg)
    shift = cfg.norm_offset - (1.0 if family == "gemma3" else 0.0)
    sd = dict(sd)
    if cfg.tie_embeddings:
        sd.pop("lm_head.weight", None)  # some exporters write the tied head too
    used: set[str] = set()

    def get(name: str) -> np.ndarray:
        if name not in sd:
            raise ValueError(f"HF state dict has no tensor {name!r}")
        used.add(name)
        return _to_numpy(sd[name])

    norm = lambda a: (a - np.asarray(shift, a.dtype)) if shift else a  # noqa: E731
    d, n, kv = cfg.d_model, cfg.num_heads, cfg.num_kv_heads
    hd = cfg.head_dim or d // n
    heads = {"q": n, "k": kv, "v": kv}
    L = range(cfg.num_layers)
    layer = lambda suffix: [get(f"model.layers.{i}.{suffix}") for i in L]  # noqa: E731
    flat = {"embed": get("model.embed_tokens.weight"), "final_norm.scale": norm(get("model.norm.weight"))}
    if not cfg.tie_embeddings:
        flat["lm_head"] = get("lm_head.weight").T
    for x in "qkv":
        flat[f"layers.attn.{x}"] = np.stack([w.T.reshape(d, heads[x], hd) for w in layer(f"self_attn.{x}_proj.weight")])
        if cfg.qkv_bias:
            flat[f"layers.attn.{x}_bias"] = np.stack(
                [b.reshape(heads[x], hd) for b in layer(f"self_attn.{x}_proj.bias")])
    flat["layers.attn.o"] = np.stack([w.T.reshape(n, hd, d) for w in layer("self_attn.o_proj.weight")])
    for ours, theirs in norm_names(family).items():
        flat[f"layers.{ours}.scale"] = np.stack([norm(w) for w in layer(theirs + ".weight")])
    for x in ("gate", "up", "down"):
        flat[f"layers.mlp.{x}"] = np.stack([w.T for w in layer(f"mlp.{x}_proj.weight")])
    extra = sorted(set(sd) - used)
    if extra:
        raise ValueError(f"unexpected HF tensor(s) {extra}")

    dtypes = {name: np.dtype(leaf_value(leaf).dtype) for name, leaf in named_leaves(target)[0]}
    flat = {k: np.ascontiguousarray(v.astype(dtypes.get(k, v.dtype), copy=False)) for k, v in flat.items()}
    return flat_dict_to_state(flat, target)
