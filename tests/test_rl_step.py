"""The RL update's device programs: logits unembedded in chunks equal whole rows (values and gradients),
one scanned update is the exact token-level mean however its minibatch is split into micro-batches, and
under LoRA only the adapters are differentiated and move."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.sharding import AxisType, Mesh

from ee_jax.config import RLConfig
from ee_jax.models import init_params, preset_config
from ee_jax.models.lora import adapter_count, is_adapter, only_adapters, trainable_leaves
from ee_jax.parallel import single_device_mesh, use_mesh
from ee_jax.parallel.rules import MESH_AXES
from ee_jax.rl.step import POLICY_KEYS, chunked_logprobs, make_policy_update, micro_batch_sharding
from ee_jax.rl.trainer import _train_state

CFG = preset_config("ee-1m", vocab_size=96, d_model=32, num_heads=4, num_kv_heads=2, ffn_dim=64, num_layers=2,
                    max_seq_len=128, init_std=0.3)
ROWS, T = 4, 40


def _batch(seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    tokens = rng.integers(3, CFG.vocab_size, (ROWS, T + 1)).astype(np.int32)
    weights = (rng.random((ROWS, T)) < 0.6).astype(np.float32)
    return {"inputs": tokens[:, :-1], "targets": tokens[:, 1:], "weights": weights,
            "positions": np.broadcast_to(np.arange(T, dtype=np.int32), (ROWS, T)).copy(),
            "segment_ids": np.ones((ROWS, T), np.int32),
            "advantages": rng.normal(size=(ROWS, T)).astype(np.float32),
            "old_logprobs": (-4.5 + 0.3 * rng.normal(size=(ROWS, T))).astype(np.float32),
            "ref_logprobs": (-4.5 + 0.3 * rng.normal(size=(ROWS, T))).astype(np.float32)}


def test_chunked_logprobs_equal_whole_rows_with_their_gradients():
    gdef, params = init_params(CFG, single_device_mesh(), seed=0)
    batch = {k: jnp.asarray(v) for k, v in _batch().items()}

    def objective(p, chunk):
        logp, ent = chunked_logprobs(gdef, p, batch, 0.7, chunk)
        return jnp.sum(logp * batch["weights"]) + 0.1 * jnp.sum(ent), (logp, ent)

    (whole, (lp0, e0)), g0 = jax.jit(jax.value_and_grad(objective, has_aux=True), static_argnums=1)(params, 0)
    # 16 does not divide 40: the last chunk is padded
    (part, (lp1, e1)), g1 = jax.jit(jax.value_and_grad(objective, has_aux=True), static_argnums=1)(params, 16)
    assert lp1.shape == e1.shape == (ROWS, T)
    np.testing.assert_allclose(lp1, lp0, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(e1, e0, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(part, whole, rtol=1e-5)
    for a, b in zip(jax.tree.leaves(g1), jax.tree.leaves(g0), strict=True):  # fp32 sums in another order
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=2e-5 * float(np.abs(b).max()))
    assert float(jnp.abs(lp0).sum()) > 0


def _update(cfg, tx, mesh, minibatch, seed: int = 0):
    gdef, params = init_params(cfg, mesh, seed=seed)
    state = _train_state(tx, params, mesh)
    shardings = jax.tree.map(lambda a: a.sharding, state)
    before = jax.tree.map(np.asarray, state.params)
    update = make_policy_update(gdef, tx, shardings, mesh, RLConfig(temperature=0.7, logit_chunk=16))
    with use_mesh(mesh):
        mb = jax.device_put({k: minibatch[k] for k in POLICY_KEYS}, micro_batch_sharding(mesh))
    state, sums, norm = update(state, mb)
    return before, jax.tree.map(np.asarray, state.params), {k: float(v) for k, v in sums.items()}, float(norm)


def test_one_update_is_the_same_however_its_rows_are_split_into_micro_batches():
    # rows over 2 devices' data axis (conftest gives 8 CPU devices)
    mesh = Mesh(np.asarray(jax.devices()[:2]).reshape(2, 1, 1), MESH_AXES, axis_types=(AxisType.Auto,) * 3)
    rows = _batch()
    tx = optax.sgd(0.5)
    one = _update(CFG, tx, mesh, {k: v[None] for k, v in rows.items()})  # [1, 4, T]
    two = _update(CFG, tx, mesh, {k: v.reshape(2, ROWS // 2, T) for k, v in rows.items()})  # [2, 2, T]
    before, after_one, sums_one, norm_one = one
    _, after_two, sums_two, norm_two = two
    assert sums_one["tokens"] == sums_two["tokens"] == rows["weights"].sum()
    for k in sums_one:
        assert sums_two[k] == pytest.approx(sums_one[k], rel=1e-5, abs=1e-6), k
    assert norm_two == pytest.approx(norm_one, rel=1e-5) and norm_one > 0
    moved = 0
    for a, b, p in zip(jax.tree.leaves(after_two), jax.tree.leaves(after_one), jax.tree.leaves(before), strict=True):
        step_two, step_one = a - p, b - p  # the updates (fp32 sums in another order: a scale-relative atol)
        np.testing.assert_allclose(step_two, step_one, rtol=1e-3, atol=1e-4 * float(np.abs(step_one).max()))
        moved += not np.array_equal(b, p)
    assert moved == len(jax.tree.leaves(before))  # SGD with a dense gradient moves every leaf


def test_lora_update_differentiates_and_moves_only_the_adapters():
    cfg = preset_config("ee-1m", vocab_size=96, d_model=32, num_heads=4, num_kv_heads=2, ffn_dim=64, num_layers=2,
                        max_seq_len=128, init_std=0.3, lora_rank=2)
    mesh = single_device_mesh()
    gdef, params = init_params(cfg, mesh, seed=0)
    trainable, rebuild = trainable_leaves(params)
    assert sum(x.size for x in trainable) == adapter_count(params) > 0
    assert len(trainable) < len(jax.tree.leaves(params))
    # rebuild puts every leaf back where it was
    for a, b in zip(jax.tree.leaves(rebuild(trainable)), jax.tree.leaves(params), strict=True):
        assert a is b or np.array_equal(a, b)

    before, after, sums, norm = _update(cfg, only_adapters(optax.sgd(0.5)), mesh,
                                        {k: v[None] for k, v in _batch().items()})
    assert norm > 0 and sums["tokens"] > 0
    paths = [p for p, _ in jax.tree_util.tree_flatten_with_path(before)[0]]
    for path, a, b in zip(paths, jax.tree.leaves(after), jax.tree.leaves(before), strict=True):
        if is_adapter(path):
            continue
        np.testing.assert_array_equal(a, b)  # the base: bit for bit
    lora_b = [(a, b) for path, a, b in zip(paths, jax.tree.leaves(after), jax.tree.leaves(before), strict=True)
              if is_adapter(path) and "b" in jax.tree_util.keystr(path).split("'")[-2:-1]]
    assert lora_b and any(not np.array_equal(a, b) for a, b in lora_b)  # B starts at zero and moves
