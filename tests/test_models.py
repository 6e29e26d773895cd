import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ee_jax.models import (
    PRESETS,
    abstract_model,
    apply_model,
    count_params,
    init_cache,
    init_params,
    layer_windows,
    param_count,
    preset_config,
)
from ee_jax.models.accounting import train_flops_per_token
from ee_jax.models.layers import rope_inv_freq
from ee_jax.parallel import single_device_mesh, use_mesh

# Published parameter counts of the real models whose shapes the presets reproduce.
PUBLISHED = {
    "smollm2-135m": 134_515_008,
    "gemma3-270m": 268_098_176,
    "llama-3.2-3b": 3_212_749_824,
    "llama-3.1-8b": 8_030_261_248,
    "qwen2.5-7b": 7_615_616_512,
    "qwen2.5-1.5b": 1_543_714_304,
}

SMALL = dict(vocab_size=97, d_model=32, num_layers=3, num_heads=4, num_kv_heads=2, head_dim=8, ffn_dim=48)
FAMILIES = {
    "llama": ("llama-3.1-8b", SMALL),
    "qwen2": ("qwen2.5-7b", SMALL),
    "gemma3": ("gemma3-270m", dict(SMALL, num_layers=4, num_kv_heads=1, sliding_window=5, global_every=2)),
}


@pytest.mark.parametrize("name", list(PRESETS))
def test_preset_param_count_matches_closed_form(name):
    cfg = preset_config(name)
    _, abstract = abstract_model(cfg, single_device_mesh())  # shapes only: nothing is allocated
    assert count_params(abstract) == param_count(cfg)
    if name in PUBLISHED:
        assert param_count(cfg) == PUBLISHED[name]


def test_ladder_spans_1m_to_8b():
    sizes = [param_count(preset_config(n)) for n in PRESETS if n.startswith("ee-")]
    assert sizes == sorted(sizes)
    assert 0.8e6 < sizes[0] < 1.5e6 and 7e9 < sizes[-1] < 9e9


def test_train_flops_formula():
    cfg = preset_config("ee-17m")
    n = cfg.num_layers * (4 * 384 * 384 + 3 * 384 * 1344 + 2 * 384) + 8192 * 384
    assert train_flops_per_token(cfg, 256) == 6 * n + 6 * 6 * 256 * 384


def _model(family, **over):
    preset, shape = FAMILIES[family]
    cfg = preset_config(preset, **{**shape, **over})
    mesh = single_device_mesh()
    gdef, params = init_params(cfg, mesh, seed=1)
    return cfg, mesh, gdef, params


def _forward(gdef, params, mesh, tokens, positions=None, segments=None, cache=None):
    with use_mesh(mesh):
        return jax.jit(apply_model, static_argnums=0)(gdef, params, tokens, positions, segments, cache)


@pytest.mark.parametrize("family", list(FAMILIES))
@pytest.mark.parametrize("scan", [False, True])
def test_kv_cache_decode_equals_full_forward(family, scan):
    cfg, mesh, gdef, params = _model(family, scan_layers=scan)
    tokens = jax.random.randint(jax.random.key(0), (2, 14), 0, cfg.vocab_size)
    full, _ = _forward(gdef, params, mesh, tokens)
    with use_mesh(mesh):
        cache = init_cache(cfg, 2, 16)
    pos = jnp.broadcast_to(jnp.arange(9), (2, 9))
    first, cache = _forward(gdef, params, mesh, tokens[:, :9], pos, None, cache)
    steps = [first]
    for i in range(9, 14):
        out, cache = _forward(gdef, params, mesh, tokens[:, i:i + 1], jnp.full((2, 1), i), None, cache)
        steps.append(out)
    np.testing.assert_allclose(np.concatenate(steps, 1), full, atol=2e-5, rtol=1e-5)
    # head-major: [layers, batch, kv_heads, length, head_dim], the layout attention reads (no per-step transpose)
    hd = cfg.head_dim or cfg.d_model // cfg.num_heads
    assert cache[0].shape == (cfg.num_layers, 2, cfg.num_kv_heads, 16, hd)


@pytest.mark.parametrize("family", list(FAMILIES))
def test_packed_sequences_do_not_see_each_other(family):
    cfg, mesh, gdef, params = _model(family)
    a = jax.random.randint(jax.random.key(1), (1, 6), 0, cfg.vocab_size)
    b = jax.random.randint(jax.random.key(2), (1, 7), 0, cfg.vocab_size)
    packed = jnp.concatenate([a, b], 1)
    seg = jnp.asarray([[1] * 6 + [2] * 7])
    pos = jnp.asarray([list(range(6)) + list(range(7))])
    out, _ = _forward(gdef, params, mesh, packed, pos, seg)
    alone_a, _ = _forward(gdef, params, mesh, a)
    alone_b, _ = _forward(gdef, params, mesh, b)
    np.testing.assert_allclose(out[:, :6], alone_a, atol=2e-5)
    np.testing.assert_allclose(out[:, 6:], alone_b, atol=2e-5)


def test_sliding_window_limits_local_layers():
    # All layers local with window 3: the last logit cannot depend on tokens more than
    # num_layers * (window - 1) positions back, but does depend on the nearest ones.
    cfg, mesh, gdef, params = _model("gemma3", sliding_window=3, global_every=0, num_layers=2)
    assert layer_windows(cfg) == [3, 3]
    t = jax.random.randint(jax.random.key(3), (1, 12), 0, cfg.vocab_size)
    base, _ = _forward(gdef, params, mesh, t)
    far = t.at[0, 0].set((t[0, 0] + 1) % cfg.vocab_size)  # 11 back > 2 * (3 - 1)
    near = t.at[0, 10].set((t[0, 10] + 1) % cfg.vocab_size)
    assert np.allclose(_forward(gdef, params, mesh, far)[0][0, -1], base[0, -1], atol=1e-6)
    assert not np.allclose(_forward(gdef, params, mesh, near)[0][0, -1], base[0, -1], atol=1e-4)
    # Gemma's rule: every global_every-th layer is global.
    assert layer_windows(preset_config("gemma3-270m")) == [512] * 5 + [0] + [512] * 5 + [0] + [512] * 5 + [0]


def test_llama3_rope_scaling_matches_transformers():
    from transformers import LlamaConfig
    from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS

    cfg = preset_config("llama-3.1-8b")
    hf = LlamaConfig(hidden_size=4096, num_attention_heads=32, rope_theta=500000.0,
                     rope_scaling={"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                                   "high_freq_factor": 4.0, "original_max_position_embeddings": 8192})
    expected, _ = ROPE_INIT_FUNCTIONS["llama3"](hf, "cpu")
    np.testing.assert_allclose(rope_inv_freq(cfg, cfg.rope_theta), expected.numpy(), rtol=1e-5)


@pytest.mark.parametrize("remat", ["full", "dots"])
def test_remat_and_scan_do_not_change_gradients(remat):
    from ee_jax.train.loss import mean_token_loss

    base_cfg, mesh, gdef, params = _model("llama")
    t = jax.random.randint(jax.random.key(4), (2, 10), 0, base_cfg.vocab_size)

    def grads(cfg):
        g, _ = abstract_model(cfg, mesh)
        f = lambda p: mean_token_loss(apply_model(g, p, t[:, :-1])[0], t[:, 1:], jnp.ones((2, 9)))  # noqa: E731
        with use_mesh(mesh):
            return jax.jit(jax.grad(f))(params)

    ref = grads(base_cfg)
    other = grads(preset_config("llama-3.1-8b", **{**SMALL, "remat": remat, "scan_layers": True}))
    for a, b in zip(jax.tree.leaves(ref), jax.tree.leaves(other)):
        np.testing.assert_allclose(a, b, atol=1e-6)


def test_bf16_compute_keeps_fp32_params_and_is_close():
    cfg, mesh, gdef, params = _model("llama")
    bf_cfg = preset_config("llama-3.1-8b", **{**SMALL, "dtype": "bfloat16"})
    bf_gdef, _ = abstract_model(bf_cfg, mesh)
    t = jax.random.randint(jax.random.key(5), (2, 8), 0, cfg.vocab_size)
    ref, _ = _forward(gdef, params, mesh, t)
    out, _ = _forward(bf_gdef, params, mesh, t)
    assert out.dtype == jnp.float32  # logits always fp32
    assert all(x.dtype == jnp.float32 for x in jax.tree.leaves(params))
    assert float(jnp.max(jnp.abs(out - ref))) < 0.05 and not np.array_equal(out, ref)


def test_splash_attention_matches_xla_with_packing_and_windows():
    # Pallas splash runs in interpret mode off-TPU: the TPU code path, checked here on CPU.
    base = dict(SMALL, num_layers=2, num_kv_heads=1, sliding_window=40, global_every=2)
    xla_cfg = preset_config("gemma3-270m", **base)
    splash_cfg = preset_config("gemma3-270m", **base, attention_impl="splash")
    mesh = single_device_mesh()
    _, params = init_params(xla_cfg, mesh, seed=2)
    t = jax.random.randint(jax.random.key(6), (1, 128), 0, xla_cfg.vocab_size)
    seg = jnp.asarray([[1] * 50 + [2] * 78])
    pos = jnp.asarray([list(range(50)) + list(range(78))])

    def loss_and_grad(cfg):
        g, _ = abstract_model(cfg, mesh)
        f = lambda p: jnp.mean(apply_model(g, p, t, pos, seg)[0] ** 2)  # noqa: E731
        with use_mesh(mesh):
            return jax.jit(jax.value_and_grad(f))(params)

    (l_ref, g_ref), (l_spl, g_spl) = loss_and_grad(xla_cfg), loss_and_grad(splash_cfg)
    np.testing.assert_allclose(l_spl, l_ref, rtol=1e-5)
    for a, b in zip(jax.tree.leaves(g_ref), jax.tree.leaves(g_spl)):
        np.testing.assert_allclose(a, b, atol=2e-5, rtol=1e-3)


def test_scanned_layers_keep_static_windows_for_splash_and_remat():
    """scan_layers scans whole window periods (Gemma3: local, global), so splash and remat work scanned; a
    depth that is not a whole number of periods unrolls the rest. Scanned == unrolled, loss and gradients."""
    from ee_jax.models.transformer import window_period

    assert window_period([0, 0, 0, 0]) == 1 and window_period([5, 5, 0, 5, 5, 0, 5]) == 3
    base = dict(SMALL, num_layers=3, num_kv_heads=1, sliding_window=40, global_every=2)  # period 2 + 1 layer
    ref_cfg = preset_config("gemma3-270m", **base)
    mesh = single_device_mesh()
    _, params = init_params(ref_cfg, mesh, seed=3)
    t = jax.random.randint(jax.random.key(7), (1, 128), 0, ref_cfg.vocab_size)  # splash blocks are 128

    def loss_and_grad(cfg):
        g, _ = abstract_model(cfg, mesh)
        f = lambda p: jnp.mean(apply_model(g, p, t)[0] ** 2)  # noqa: E731
        with use_mesh(mesh):
            return jax.jit(jax.value_and_grad(f))(params)

    l_ref, g_ref = loss_and_grad(ref_cfg)
    for over in (dict(scan_layers=True), dict(scan_layers=True, attention_impl="splash", remat="full")):
        loss, grads = loss_and_grad(preset_config("gemma3-270m", **base, **over))
        np.testing.assert_allclose(loss, l_ref, rtol=1e-5)
        for a, b in zip(jax.tree.leaves(g_ref), jax.tree.leaves(grads)):
            np.testing.assert_allclose(a, b, atol=2e-5, rtol=1e-3)


def test_scanned_kv_cache_with_a_partial_period_equals_full_forward():
    cfg, mesh, gdef, params = _model("gemma3", num_layers=5, scan_layers=True)  # 2 periods of 2 + 1 layer
    tokens = jax.random.randint(jax.random.key(8), (2, 12), 0, cfg.vocab_size)
    full, _ = _forward(gdef, params, mesh, tokens)
    with use_mesh(mesh):
        cache = init_cache(cfg, 2, 16)
    first, cache = _forward(gdef, params, mesh, tokens[:, :8], jnp.broadcast_to(jnp.arange(8), (2, 8)), None, cache)
    assert cache[0].shape[0] == 5
    steps = [first]
    for i in range(8, 12):
        out, cache = _forward(gdef, params, mesh, tokens[:, i:i + 1], jnp.full((2, 1), i), None, cache)
        steps.append(out)
    np.testing.assert_allclose(np.concatenate(steps, 1), full, atol=2e-5, rtol=1e-5)
