"""Parity with Hugging Face ``transformers`` (fp32, eager attention) through ``models.hf_convert``.

Tiny random Llama (GQA, tied/untied, Llama-3 RoPE scaling), Qwen2 (q/k/v biases, untied) and Gemma3
(q/k norms, sandwich norms, sliding window shorter than the prompt, separate local/global RoPE bases)
models: our params are initialised, perturbed (so norms are not all ones and biases not zero),
converted, loaded into the HF model, and compared on logits, greedy generation and the round trip.
HF models are built from configs in-process: no hub access. Needs the ``hf`` extra (torch, transformers).
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ee_jax.models import abstract_model, apply_model, init_params, preset_config
from ee_jax.models.hf_convert import from_hf_state_dict, hf_config, to_hf_state_dict
from ee_jax.models.sampler import Sampler
from ee_jax.parallel import single_device_mesh, use_mesh

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

pytestmark = pytest.mark.hf

V = 256
_SMALL = dict(vocab_size=V, d_model=64, ffn_dim=128, max_seq_len=128, init_std=0.1)
_LLAMA3 = dict(kind="llama3", factor=8.0, low_freq_factor=1.0, high_freq_factor=4.0, original_max_position=32)
CONFIGS = {
    "llama-tied-gqa-rope3": preset_config("ee-1m", num_layers=3, num_heads=4, num_kv_heads=2,
                                          rope_scaling=_LLAMA3, **_SMALL),
    "llama-untied": preset_config("llama-3.1-8b", num_layers=2, num_heads=4, num_kv_heads=1, head_dim=16,
                                  **_SMALL),
    "qwen2-bias-untied": preset_config("qwen2.5-7b", num_layers=3, num_heads=4, num_kv_heads=2, head_dim=16,
                                       **_SMALL),
    # window 4 < every prompt but one; layers 2 and 5 global; local/global RoPE bases 1e4 / 1e6.
    "gemma3-sliding": preset_config("gemma3-270m", num_layers=6, num_heads=4, num_kv_heads=1, head_dim=16,
                                    sliding_window=4, global_every=3, **_SMALL),
}
PROMPTS = [[7], [3, 1, 4, 1, 5], list(np.random.RandomState(0).randint(0, V, 24))]
NEW_TOKENS = 20


def _perturb(params, seed: int, scale: float = 0.2):
    leaves, treedef = jax.tree.flatten(params)
    keys = jax.random.split(jax.random.key(seed), len(leaves))
    return jax.tree.unflatten(treedef, [x + scale * jax.random.normal(k, x.shape, x.dtype)
                                        for x, k in zip(leaves, keys)])


def _hf_model(cfg, sd):
    model = transformers.AutoModelForCausalLM.from_config(hf_config(cfg), attn_implementation="eager",
                                                          dtype=torch.float32).eval()
    res = model.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in sd.items()}, strict=False)
    assert not res.unexpected_keys
    assert set(res.missing_keys) == ({"lm_head.weight"} if cfg.tie_embeddings else set())
    if cfg.tie_embeddings:
        assert model.lm_head.weight.data_ptr() == model.model.embed_tokens.weight.data_ptr()
    return model


@functools.cache
def _build(name: str):
    cfg = CONFIGS[name]
    mesh = single_device_mesh()
    gdef, params = init_params(cfg, mesh, seed=0)
    params = _perturb(params, seed=1)
    return name, cfg, mesh, gdef, params


@pytest.fixture(scope="module", params=list(CONFIGS))
def pair(request):
    name, cfg, mesh, gdef, params = _build(request.param)
    return name, cfg, mesh, gdef, params, _hf_model(cfg, to_hf_state_dict(params, cfg))


def _ours_logits(gdef, params, mesh, tokens):
    with use_mesh(mesh):
        return np.asarray(apply_model(gdef, params, jnp.asarray(tokens, jnp.int32))[0])


def _rel_err(a, b) -> float:
    return float(np.max(np.abs(a - b)) / np.max(np.abs(b)))


def test_logits_match(pair):
    name, cfg, mesh, gdef, params, hf = pair
    batch = np.random.RandomState(1).randint(0, V, (3, 16))  # a batch, longer than the window too
    for tokens in [[p] for p in PROMPTS] + [batch]:
        ours = _ours_logits(gdef, params, mesh, tokens)
        with torch.no_grad():
            theirs = hf(torch.as_tensor(np.asarray(tokens), dtype=torch.long)).logits.numpy()
        assert ours.shape == theirs.shape
        assert _rel_err(ours, theirs) <= 1e-3, (name, len(tokens[0]), _rel_err(ours, theirs))


@pytest.mark.parametrize("name,change", [
    ("gemma3-sliding", dict(sliding_window=0)),
    ("gemma3-sliding", dict(global_every=0)),
    ("gemma3-sliding", dict(rope_theta=10000.0, local_rope_theta=1000000.0)),
    ("llama-tied-gqa-rope3", dict(rope_scaling=dict(kind="none"))),
])
def test_features_under_test_matter(name, change):
    """Guard against vacuous parity: the window, local/global layers, RoPE bases and scaling move logits."""
    name, cfg, mesh, gdef, params = _build(name)
    if "rope_scaling" in change:
        change = dict(rope_scaling=dataclasses.replace(cfg.rope_scaling, **change["rope_scaling"]))
    gdef2, _ = abstract_model(dataclasses.replace(cfg, **change), mesh)  # same params, other statics
    tokens = [PROMPTS[-1]]
    assert _rel_err(_ours_logits(gdef2, params, mesh, tokens), _ours_logits(gdef, params, mesh, tokens)) > 1e-2


def test_greedy_generation_matches(pair):
    name, cfg, mesh, gdef, params, hf = pair
    out = Sampler(gdef, params, cfg, mesh).generate(PROMPTS, max_new_tokens=NEW_TOKENS, temperature=0)
    for prompt, sample in zip(PROMPTS, out):
        ids = torch.as_tensor([prompt], dtype=torch.long)
        with torch.no_grad():
            ref = hf.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=NEW_TOKENS,
                              min_new_tokens=NEW_TOKENS, do_sample=False, use_cache=True)
        assert sample.ids == ref[0, len(prompt):].tolist(), (name, len(prompt))


def test_round_trip(pair):
    name, cfg, mesh, gdef, params, hf = pair
    sd = to_hf_state_dict(params, cfg)
    back = from_hf_state_dict(sd, cfg, params)
    for a, b in zip(jax.tree.leaves(params), jax.tree.leaves(back), strict=True):
        assert a.dtype == b.dtype and a.sharding == b.sharding
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    # HF -> ours -> HF from the torch model's own state dict (tied head included, as HF writes it).
    hf_sd = hf.state_dict()
    again = to_hf_state_dict(from_hf_state_dict(hf_sd, cfg, params), cfg)
    assert set(again) == set(hf_sd) - ({"lm_head.weight"} if cfg.tie_embeddings else set())
    for k, v in again.items():
        np.testing.assert_array_equal(v, hf_sd[k].numpy(), err_msg=k)
