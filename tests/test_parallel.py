import jax
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P

from ee_jax.config import ConfigError, DistributedConfig
from ee_jax.parallel import LOGICAL_AXIS_RULES, logical_to_spec, make_mesh
from ee_jax.parallel.distributed import initialize, should_initialize
from ee_jax.train import create_train_state, make_batch, make_optimizer, make_train_step


def _run(cfg, devices, steps=3):
    mesh = make_mesh(cfg, devices)
    tx = make_optimizer(cfg.optimizer, 10)
    gdef, state, shard = create_train_state(cfg, tx, mesh)
    step = make_train_step(gdef, tx, shard, mesh, cfg.train.grad_accum)
    rng = np.random.default_rng(0)
    losses = []
    for _ in range(steps):
        tokens = rng.integers(0, cfg.model.vocab_size, (cfg.train.batch_size, cfg.train.seq_len + 1))
        weights = rng.random(tokens.shape) > 0.3
        weights[0] = False  # a row with no weighted tokens
        state, metrics = step(state, make_batch(tokens, weights))
        losses.append(float(metrics["loss"]))
    return state, losses, mesh


def test_rules_table_maps_logical_names():
    assert dict(LOGICAL_AXIS_RULES)["batch"] == ("data", "fsdp")
    assert logical_to_spec(("embed", "mlp")) == P("fsdp", "tensor")
    assert logical_to_spec(("layers", "heads", "head_dim", "embed")) == P(None, "tensor", None, "fsdp")


def test_mesh_from_config(tiny_config):
    mesh = make_mesh(tiny_config("mesh.data=-1", "mesh.fsdp=2", "mesh.tensor=2"))
    assert dict(mesh.shape) == {"data": 2, "fsdp": 2, "tensor": 2}
    with pytest.raises(ConfigError, match="device count 8"):
        make_mesh(tiny_config("mesh.data=3"))


def test_sharded_step_matches_single_device_and_shards_state(tiny_config):
    single, ref_losses, _ = _run(tiny_config("mesh.data=1"), jax.devices()[:1])
    state, losses, mesh = _run(tiny_config("mesh.data=2", "mesh.fsdp=2", "mesh.tensor=2"), jax.devices())
    np.testing.assert_allclose(losses, ref_losses, rtol=2e-6)

    p = state.params
    spec = lambda x: x.sharding.spec  # noqa: E731
    assert spec(p["layers"]["attn"]["q"][...]) == P(None, "fsdp", "tensor", None)
    assert spec(p["layers"]["attn"]["o"][...]) == P(None, "tensor", None, "fsdp")
    assert spec(p["layers"]["mlp"]["gate"][...]) == P(None, "fsdp", "tensor")
    assert spec(p["layers"]["mlp"]["down"][...]) == P(None, "tensor", "fsdp")
    assert spec(p["embed"][...]) == P("tensor", None)
    assert spec(p["final_norm"]["scale"][...]) == P(None)
    # A weight is really split: each of the 8 devices holds a quarter of the [L, d, ffn] gate kernel.
    gate = p["layers"]["mlp"]["gate"][...]
    assert {s.data.shape for s in gate.addressable_shards} == {(2, 16, 32)}
    # Adam moments follow their parameter's sharding.
    adam = state.opt_state[1][0]
    assert spec(adam.mu["layers"]["mlp"]["gate"][...]) == P(None, "fsdp", "tensor")
    assert spec(adam.nu["layers"]["attn"]["o"][...]) == P(None, "tensor", None, "fsdp")
    assert spec(state.step) == P()
    # Parameters after 3 sharded steps equal the single-device ones.
    for a, b in zip(jax.tree.leaves(state.params), jax.tree.leaves(single.params)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-6)


def test_grad_accumulation_equals_full_batch(tiny_config):
    _, ref, _ = _run(tiny_config("mesh.data=1"), jax.devices()[:1])
    _, acc, _ = _run(tiny_config("mesh.data=1", "train.grad_accum=4"), jax.devices()[:1])
    np.testing.assert_allclose(acc, ref, rtol=2e-6)


def test_sharded_init_never_materialises_on_one_device(tiny_config):
    cfg = tiny_config("mesh.data=1", "mesh.fsdp=4", "mesh.tensor=2")
    mesh = make_mesh(cfg)
    tx = make_optimizer(cfg.optimizer, 10)
    _, state, _ = create_train_state(cfg, tx, mesh)
    q = state.params["layers"]["attn"]["q"][...]
    assert len(q.sharding.device_set) == 8
    assert max(s.data.size for s in q.addressable_shards) == q.size // 8


def test_distributed_helper_decisions(monkeypatch):
    for k in ("SLURM_JOB_ID", "TPU_WORKER_HOSTNAMES", "MEGASCALE_COORDINATOR_ADDRESS", "JAX_COORDINATOR_ADDRESS"):
        monkeypatch.delenv(k, raising=False)
    assert not should_initialize(DistributedConfig())
    assert initialize(DistributedConfig()) is False
    assert should_initialize(DistributedConfig(enabled=True))
    monkeypatch.setenv("SLURM_JOB_ID", "1")
    monkeypatch.setenv("SLURM_NTASKS", "4")
    assert should_initialize(DistributedConfig())
    monkeypatch.setenv("SLURM_NTASKS", "1")
    assert not should_initialize(DistributedConfig())
    with pytest.raises(ValueError, match="coordinator_address"):
        initialize(DistributedConfig(enabled=True, auto=False))
