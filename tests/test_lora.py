"""LoRA: fresh adapters leave the model unchanged, training moves only the adapters (with optimizer state
for them alone), merging reproduces the adapted model, and bad settings are refused by name."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ee_jax.checkpoint.safetensors_io import leaf_value, named_leaves


def _named(params) -> dict[str, np.ndarray]:
    return {n: np.asarray(leaf_value(v)) for n, v in named_leaves(params)[0]}


def _logits(gdef, params, mesh, tokens):
    from ee_jax.models import apply_model
    from ee_jax.parallel import use_mesh

    with use_mesh(mesh):
        return np.asarray(jax.jit(apply_model, static_argnums=0)(gdef, params, jnp.asarray(tokens))[0])


@pytest.fixture
def setup(tiny_config):
    from ee_jax.models.factory import init_params

    cfg = tiny_config("model.lora_rank=4", "model.lora_alpha=8", "mesh.fsdp=2", "mesh.tensor=2")
    from ee_jax.parallel import make_mesh

    mesh = make_mesh(cfg)
    base_cfg = dataclasses.replace(cfg.model, lora_rank=0)
    _, base = init_params(base_cfg, mesh, seed=3)
    tokens = np.random.RandomState(0).randint(0, cfg.model.vocab_size, (8, 16)).astype(np.int32)
    return cfg, mesh, base_cfg, base, tokens


def test_fresh_adapters_keep_the_function_and_sit_on_every_target(setup):
    from ee_jax.models.factory import abstract_model
    from ee_jax.models.lora import adapter_count, add_lora

    cfg, mesh, base_cfg, base, tokens = setup
    params = add_lora(base, cfg.model, mesh, seed=0)
    names = _named(params)
    for t in ("q", "k", "v", "o"):
        assert f"layers.attn.lora_{t}.a" in names and not names[f"layers.attn.lora_{t}.b"].any()
    for t in ("gate", "up", "down"):
        assert f"layers.mlp.lora_{t}.a" in names
    # A: [layers, in..., R], B: [R, out...] per layer; q's out is (heads, head_dim)
    assert names["layers.attn.lora_q.a"].shape == (2, 32, 4) and names["layers.attn.lora_q.b"].shape == (2, 4, 4, 8)
    assert names["layers.attn.lora_o.a"].shape == (2, 4, 8, 4)
    m, hd = cfg.model, cfg.model.d_model // cfg.model.num_heads
    # rank x (in + out) per projection: q, k, v, o, then gate, up, down
    per_layer = 4 * (4 * m.d_model + 2 * m.num_heads * hd + 2 * m.num_kv_heads * hd + 3 * (m.d_model + m.ffn_dim))
    expected = m.num_layers * per_layer
    assert adapter_count(params) == expected
    for name, value in _named(base).items():  # the base is carried over untouched
        np.testing.assert_array_equal(names[name], value)
    gdef, _ = abstract_model(cfg.model, mesh)
    gdef0, _ = abstract_model(base_cfg, mesh)
    np.testing.assert_allclose(_logits(gdef, params, mesh, tokens), _logits(gdef0, base, mesh, tokens),
                               rtol=1e-6, atol=1e-6)


def test_training_moves_only_the_adapters_and_merging_reproduces_them(setup):
    from ee_jax.data.batch import make_batch
    from ee_jax.models.lora import add_lora, merge_lora, only_adapters
    from ee_jax.models.sampler import Sampler
    from ee_jax.train import make_optimizer
    from ee_jax.train.state import create_train_state
    from ee_jax.train.step import make_train_step

    cfg, mesh, base_cfg, base, tokens = setup
    start = add_lora(base, cfg.model, mesh, seed=0)
    tx = only_adapters(make_optimizer(dataclasses.replace(cfg.optimizer, lr=1e-2, warmup_steps=0), 20))
    gdef, state, shardings = create_train_state(cfg, tx, mesh, start)
    opt_sizes = sum(x.size for x in jax.tree.leaves(state.opt_state))
    from ee_jax.models.lora import adapter_count

    assert opt_sizes - 2 * adapter_count(start) < 8  # Adam moments for the adapters alone (+ step counters)
    step = make_train_step(gdef, tx, shardings, mesh)
    batch = make_batch(np.tile(np.arange(17, dtype=np.int32) % 50, (8, 1)))
    losses = []
    for _ in range(6):
        state, metrics = step(state, {k: jnp.asarray(v) for k, v in batch.items()})
        losses.append(float(metrics["loss"]))
    assert losses[-1] < losses[0] - 0.1
    after = _named(state.params)
    for name, value in _named(base).items():
        np.testing.assert_array_equal(after[name], value, err_msg=name)  # frozen exactly
    assert np.abs(after["layers.mlp.lora_down.b"]).max() > 0

    merged, merged_cfg = merge_lora(state.params, cfg.model, mesh)
    assert merged_cfg == base_cfg and set(_named(merged)) == set(_named(base))
    from ee_jax.models.factory import abstract_model

    gdef0, _ = abstract_model(base_cfg, mesh)
    adapted, folded = _logits(gdef, state.params, mesh, tokens), _logits(gdef0, merged, mesh, tokens)
    assert np.max(np.abs(adapted - folded)) / np.max(np.abs(adapted)) < 1e-5
    prompts = [tokens[0, :6].tolist(), tokens[1, :5].tolist()]
    a = Sampler(gdef, state.params, cfg.model, mesh).generate(prompts, max_new_tokens=8, temperature=0.0)
    b = Sampler(gdef0, merged, base_cfg, mesh).generate(prompts, max_new_tokens=8, temperature=0.0)
    assert [s.ids for s in a] == [s.ids for s in b]


@pytest.mark.parametrize("override, key", [("model.lora_rank=-1", "model.lora_rank"),
                                           ("model.lora_targets=q,ffn", "model.lora_targets"),
                                           ("model.lora_alpha=0", "model.lora_alpha")])
def test_bad_lora_settings_are_refused_by_name(tiny_config, override, key):
    from ee_jax.config import ConfigError

    extra = [override] if "rank" in override else ["model.lora_rank=2", override]
    with pytest.raises(ConfigError, match=key):
        tiny_config(*extra)
