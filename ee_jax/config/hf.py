"""A Hugging Face ``config.json`` as a :class:`ModelConfig`: Llama, Qwen2 and Gemma 3 (text), with
transformers 5.23's class defaults for missing keys. Loading the weights is :mod:`ee_jax.models.hf_load`,
exporting them :mod:`ee_jax.models.hf_export`.

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

import dataclasses
import json
import os
from collections.abc import Callable
from typing import Any

from ee_jax.config.schema import ModelConfig, RopeScalingConfig

_ARCHITECTURES = {"LlamaForCausalLM": "llama", "Qwen2ForCausalLM": "qwen2", "Gemma3ForCausalLM": "gemma3",
                  "Gemma3ForConditionalGeneration": "gemma3-mm"}
_MODEL_TYPES = {"llama": "llama", "qwen2": "qwen2", "gemma3_text": "gemma3", "gemma3": "gemma3-mm"}

# transformers 5.23 class defaults (see the module docstring); None -> derived from other keys.
_DEFAULTS: dict[str, dict[str, Any]] = {
    "llama": dict(vocab_size=32000, hidden_size=4096, intermediate_size=11008, num_hidden_layers=32,
                  num_attention_heads=32, num_key_value_heads=None, head_dim=None, max_position_embeddings=2048,
                  rms_norm_eps=1e-6, tie_word_embeddings=False, rope_theta=10000.0),
    "qwen2": dict(vocab_size=151936, hidden_size=4096, intermediate_size=22016, num_hidden_layers=32,
                  num_attention_heads=32, num_key_value_heads=32, head_dim=None, max_position_embeddings=32768,
                  rms_norm_eps=1e-6, tie_word_embeddings=False, rope_theta=10000.0),
    "gemma3": dict(vocab_size=262208, hidden_size=2304, intermediate_size=9216, num_hidden_layers=26,
                   num_attention_heads=8, num_key_value_heads=4, head_dim=256, max_position_embeddings=131072,
                   rms_norm_eps=1e-6, tie_word_embeddings=True, rope_theta=1_000_000.0),
}
_GEMMA3_LOCAL_THETA = 10000.0
_GEMMA3_SLIDING_WINDOW = 4096
_GEMMA3_PATTERN = 6
_GEMMA3_QUERY_SCALAR = 256
_TANH_GELUS = ("gelu_pytorch_tanh", "gelu_new")  # both are the tanh approximation HF Gemma uses
_ROPE_KEYS = {"rope_type", "type", "rope_theta", "factor", "low_freq_factor", "high_freq_factor",
              "original_max_position_embeddings"}


def _read_config(src: str | os.PathLike | dict) -> tuple[dict, str, str]:
    """``(config dict, where (for messages), default model name)``."""
    if isinstance(src, dict):
        return src, "config dict", "hf"
    path = os.fspath(src)
    file = os.path.join(path, "config.json") if os.path.isdir(path) else path
    if not os.path.isfile(file):
        raise FileNotFoundError(f"no HF config at {file} (expected a checkpoint directory with config.json)")
    with open(file, encoding="utf-8") as f:
        try:
            d = json.load(f)
        except json.JSONDecodeError as e:
            raise ValueError(f"{file}: not valid JSON ({e})") from None
    if not isinstance(d, dict):
        raise ValueError(f"{file}: expected a JSON object, found {type(d).__name__}")
    name = os.path.basename(os.path.dirname(os.path.abspath(file))) or "hf"
    return d, file, name


def _family_of(d: dict, where: str) -> str:
    archs = d.get("architectures") or []
    if archs:
        if len(archs) != 1 or archs[0] not in _ARCHITECTURES:
            raise ValueError(f"{where}: architectures={archs!r} is not supported; expected one of "
                             f"{sorted(_ARCHITECTURES)}")
        return _ARCHITECTURES[archs[0]]
    mt = d.get("model_type")
    if mt not in _MODEL_TYPES:
        raise ValueError(f"{where}: no architectures and model_type={mt!r} is not supported; expected one of "
                         f"{sorted(_MODEL_TYPES)}")
    return _MODEL_TYPES[mt]


def _reject(d: dict, where: str, key: str, ok: Callable[[Any], bool], expected: str) -> None:
    """Raise if ``d[key]`` is present and not acceptable (a feature our decoder does not have)."""
    if key in d and not ok(d[key]):
        raise ValueError(f"{where}: {key}={d[key]!r} is not supported (expected {expected})")


def _param_dtype(d: dict, where: str) -> str:
    key = "dtype" if "dtype" in d else "torch_dtype"
    value = d.get(key)
    if value in (None, "float32", "bfloat16"):
        return value or "float32"
    if value == "float16":
        # Our parameters are fp32 or bf16: fp16 -> bf16 would drop 3 mantissa bits, fp16 -> fp32 is exact.
        return "float32"
    raise ValueError(f"{where}: {key}={value!r} is not supported (expected float32, bfloat16 or float16)")


def _rope(p: dict, where: str, key: str, default_theta: float, max_pos: int) -> tuple[float, RopeScalingConfig]:
    """``(theta, scaling)`` from one (non-nested) rope parameter dict."""
    unknown = sorted(set(p) - _ROPE_KEYS)
    if unknown:
        raise ValueError(f"{where}: {key} has unsupported RoPE parameter(s) {unknown} (in {p!r})")
    kind = p.get("rope_type", p.get("type", "default"))
    theta = float(p.get("rope_theta", default_theta))
    if kind == "default":
        return theta, RopeScalingConfig()
    if kind != "llama3":
        raise ValueError(f"{where}: {key} has rope_type={kind!r}; only 'default' and 'llama3' are supported")
    missing = [k for k in ("factor", "low_freq_factor", "high_freq_factor") if k not in p]
    if missing:
        raise ValueError(f"{where}: {key} (rope_type llama3) lacks {missing}")
    return theta, RopeScalingConfig(kind="llama3", factor=float(p["factor"]),
                                    low_freq_factor=float(p["low_freq_factor"]),
                                    high_freq_factor=float(p["high_freq_factor"]),
                                    original_max_position=int(p.get("original_max_position_embeddings", max_pos)))


def _single_rope(d: dict, where: str, default_theta: float, max_pos: int) -> tuple[float, RopeScalingConfig]:
    # transformers: a legacy ``rope_scaling`` wins over ``rope_parameters``; ``rope_theta`` fills the gap.
    key = "rope_scaling" if d.get("rope_scaling") else "rope_parameters"
    p = d.get(key) or {}
    if not isinstance(p, dict) or {"full_attention", "sliding_attention"} & set(p):
        raise ValueError(f"{where}: {key}={p!r}: expected one RoPE parameter dict")
    p = dict(p)
    p.setdefault("rope_theta", d.get("rope_theta", default_theta))
    return _rope(p, where, key, default_theta, max_pos)


def _windows(types: list, where: str, key: str) -> tuple[bool, int]:
    """``(any local layer, global_every)`` for a list of HF layer types; raises if not periodic."""
    bad = sorted({t for t in types if t not in ("full_attention", "sliding_attention")})
    if bad:
        raise ValueError(f"{where}: {key} has unsupported layer type(s) {bad}")
    full = [t == "full_attention" for t in types]
    if all(full) or not any(full):
        return not any(full), 0
    every = full.index(True) + 1
    if full != [(i + 1) % every == 0 for i in range(len(full))]:
        raise ValueError(f"{where}: {key}={types!r} is not expressible as 'layer i is global iff "
                         f"(i + 1) % global_every == 0' (tried global_every={every})")
    return True, every


def _gemma3_fields(d: dict, where: str, L: int, max_pos: int) -> dict[str, Any]:
    _reject(d, where, "hidden_activation", lambda v: v in _TANH_GELUS, f"one of {_TANH_GELUS}")
    _reject(d, where, "attention_bias", lambda v: not v, "false")
    _reject(d, where, "final_logit_softcapping", lambda v: v is None, "null")
    _reject(d, where, "attn_logit_softcapping", lambda v: v is None, "null")
    _reject(d, where, "use_bidirectional_attention", lambda v: not v, "false")
    # Rope, as Gemma3TextConfig.convert_rope_params_to_dict: per layer type; legacy rope_scaling -> global.
    rp = d.get("rope_parameters") or {}
    if rp and not {"full_attention", "sliding_attention"} >= set(rp):
        raise ValueError(f"{where}: rope_parameters={rp!r}: expected a dict keyed by full_attention and "
                         "sliding_attention")
    full = dict(rp.get("full_attention") or {}, **(d.get("rope_scaling") or {}))
    full.setdefault("rope_theta", d.get("rope_theta", _DEFAULTS["gemma3"]["rope_theta"]))
    local = dict(rp.get("sliding_attention") or {})
    local.setdefault("rope_theta", d.get("rope_local_base_freq", _GEMMA3_LOCAL_THETA))
    theta, scaling = _rope(full, where, "rope_parameters.full_attention", 0.0, max_pos)
    local_theta, local_scaling = _rope(local, where, "rope_parameters.sliding_attention", 0.0, max_pos)
    if scaling.kind != "none" or local_scaling.kind != "none":
        raise ValueError(f"{where}: Gemma3 RoPE scaling ({full!r} / {local!r}) is not supported: HF scales only "
                         "global layers, ours would scale both")
    if d.get("layer_types") is not None:
        types, key = list(d["layer_types"]), "layer_types"
        if len(types) != L:
            raise ValueError(f"{where}: layer_types has {len(types)} entries, num_hidden_layers is {L}")
    else:
        key = "sliding_window_pattern" if "sliding_window_pattern" in d else "_sliding_window_pattern"
        pattern = int(d.get(key, _GEMMA3_PATTERN))
        types = ["full_attention" if (i + 1) % pattern == 0 else "sliding_attention" for i in range(L)]
    local_layers, every = _windows(types, where, key)
    window = d.get("sliding_window", _GEMMA3_SLIDING_WINDOW)
    if local_layers and not window:
        raise ValueError(f"{where}: {key} has sliding layers but sliding_window={window!r}")
    scalar = d.get("query_pre_attn_scalar", _GEMMA3_QUERY_SCALAR)
    return dict(activation="gelu_tanh", norm_offset=1.0, qk_norm=True, post_norms=True, embed_scale=True,
                rope_theta=theta, local_rope_theta=local_theta, sliding_window=int(window) if local_layers else 0,
                global_every=every, query_pre_attn_scalar=float(scalar))


def model_config_from_hf(hf_dir_or_config: str | os.PathLike | dict, **overrides) -> ModelConfig:
    """The :class:`ModelConfig` of an HF checkpoint, from its ``config.json`` (a directory, the file, or a dict).

    Supports ``LlamaForCausalLM``, ``Qwen2ForCausalLM``, ``Gemma3ForCausalLM`` and
    ``Gemma3ForConditionalGeneration`` (its ``text_config``; the vision tower is not loaded). RoPE comes
    from ``rope_parameters`` (transformers 5, per layer type for Gemma3) or the older ``rope_theta`` /
    ``rope_scaling`` / ``rope_local_base_freq``; only ``default`` and ``llama3`` RoPE are supported.
    Missing keys take the transformers 5.23 class defaults (module docstring). ``dtype``/``torch_dtype``
    sets ``param_dtype`` (float16 -> float32). ``overrides`` replace fields of the result (e.g.
    ``max_seq_len=4096``, ``param_dtype="float32"``). Raises ``ValueError`` naming the key and value for
    any unsupported architecture or feature.
    """
    d, where, name = _read_config(hf_dir_or_config)
    family = _family_of(d, where)
    top = d
    if family == "gemma3-mm":
        if not isinstance(d.get("text_config"), dict):
            raise ValueError(f"{where}: Gemma3ForConditionalGeneration without a text_config object")
        family, where = "gemma3", f"{where} (text_config)"
        # Keys the multimodal wrapper keeps at the top level.
        d = dict(d["text_config"])
        for k in ("tie_word_embeddings", "dtype", "torch_dtype"):
            if k not in d and k in top:
                d[k] = top[k]
    _reject(d, where, "quantization_config", lambda v: not v, "no quantization")
    _reject(d, where, "partial_rotary_factor", lambda v: v in (None, 1, 1.0), "1.0")
    dv = _DEFAULTS[family]
    get = lambda k: d[k] if d.get(k) is not None else dv[k]  # noqa: E731
    hidden, heads, L = int(get("hidden_size")), int(get("num_attention_heads")), int(get("num_hidden_layers"))
    kv = int(d.get("num_key_value_heads") or dv["num_key_value_heads"] or heads)
    hd = int(d.get("head_dim") or dv["head_dim"] or hidden // heads)
    max_pos = int(get("max_position_embeddings"))
    fields: dict[str, Any] = dict(
        name=name, vocab_size=int(get("vocab_size")), d_model=hidden, num_layers=L, num_heads=heads,
        num_kv_heads=kv, head_dim=hd, ffn_dim=int(get("intermediate_size")), norm_eps=float(get("rms_norm_eps")),
        tie_embeddings=bool(get("tie_word_embeddings")), max_seq_len=max_pos, param_dtype=_param_dtype(d, where),
    )
    if family == "gemma3":
        fields.update(_gemma3_fields(d, where, L, max_pos))
    else:
        _reject(d, where, "hidden_act", lambda v: v == "silu", "'silu'")
        _reject(d, where, "mlp_bias", lambda v: not v, "false")
        if family == "llama":
            _reject(d, where, "attention_bias", lambda v: not v, "false")
        else:
            _reject(d, where, "use_sliding_window", lambda v: not v, "false (Qwen2 sliding layers)")
            if "layer_types" in d and d["layer_types"] is not None:
                _reject(d, where, "layer_types", lambda v: set(v) <= {"full_attention"}, "only full_attention")
        theta, scaling = _single_rope(d, where, float(dv["rope_theta"]), max_pos)
        fields.update(rope_theta=theta, rope_scaling=scaling, qkv_bias=family == "qwen2")
    if heads % kv:
        raise ValueError(f"{where}: num_key_value_heads={kv} does not divide num_attention_heads={heads}")
    cfg = ModelConfig(**fields)
    return _with_overrides(cfg, overrides)


def _with_overrides(cfg: ModelConfig, overrides: dict[str, Any]) -> ModelConfig:
    known = {f.name for f in dataclasses.fields(ModelConfig)}
    unknown = sorted(set(overrides) - known)
    if unknown:
        raise ValueError(f"unknown ModelConfig field(s) {unknown} in overrides")
    if isinstance(overrides.get("rope_scaling"), dict):
        overrides = dict(overrides, rope_scaling=RopeScalingConfig(**overrides["rope_scaling"]))
    return dataclasses.replace(cfg, **overrides)
