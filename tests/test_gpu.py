"""What only a GPU can check: cuDNN attention, the bf16 train step and the sampler on the device.

Skipped without a GPU (CI has none); ``bench/device_check.sh`` runs them on a GPU machine."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tests.conftest import TINY


def _gpus():
    try:
        return jax.devices("gpu")
    except RuntimeError:
        return []


pytestmark = pytest.mark.skipif(not _gpus(), reason="needs an NVIDIA GPU (bench/device_check.sh runs these)")


def test_cudnn_attention_matches_xla_in_bf16():
    from ee_jax.models.attention import attention_mask, dot_product_attention

    rng = np.random.default_rng(0)
    b, t, h, d = 2, 128, 4, 64
    q, k, v = (jnp.asarray(rng.standard_normal((b, t, h, d)), jnp.bfloat16) for _ in range(3))
    pos = jnp.broadcast_to(jnp.arange(t), (b, t))
    seg = jnp.ones((b, t), jnp.int32)
    mask = attention_mask(pos, seg, pos, seg, 0)
    ref = dot_product_attention(q, k, v, mask, d**-0.5, "xla")
    out = dot_product_attention(q, k, v, mask, d**-0.5, "cudnn", segment_ids=seg)
    np.testing.assert_allclose(np.asarray(out, np.float32), np.asarray(ref, np.float32), atol=2e-2, rtol=2e-2)


def test_bf16_train_step_learns_on_the_gpu():
    from ee_jax.config import load_config
    from ee_jax.data.batch import batch_sharding, make_batch
    from ee_jax.parallel import single_device_mesh
    from ee_jax.train.optimizer import make_optimizer
    from ee_jax.train.state import create_train_state
    from ee_jax.train.step import make_train_step

    cfg = load_config(None, TINY + ["model.dtype=bfloat16", "model.attention_impl=cudnn", "optimizer.lr=1e-2"])
    mesh = single_device_mesh(_gpus()[0])
    tx = make_optimizer(cfg.optimizer, 50)
    graphdef, state, shardings = create_train_state(cfg, tx, mesh)
    step = make_train_step(graphdef, tx, shardings, mesh)
    tokens = np.tile(np.arange(17, dtype=np.int32) % 50 + 1, (8, 1))  # one repeated sequence: learnable
    batch = {k: jax.device_put(v, batch_sharding(mesh)) for k, v in make_batch(tokens).items()}
    losses = []
    for _ in range(30):
        state, m = step(state, batch)
        losses.append(float(m["loss"]))
    assert jax.tree.leaves(state.params)[0].devices() == {_gpus()[0]}
    assert losses[-1] < 0.5 * losses[0]


def test_sampler_greedy_on_the_gpu_matches_cpu():
    from ee_jax.config import load_config
    from ee_jax.models.factory import init_params
    from ee_jax.models.sampler import Sampler
    from ee_jax.parallel import single_device_mesh

    cfg = load_config(None, TINY)
    out = []
    with jax.default_matmul_precision("float32"):  # no TF32 on the GPU: the same argmax as the CPU
        for device in (_gpus()[0], jax.devices("cpu")[0]):
            mesh = single_device_mesh(device)
            graphdef, params = init_params(cfg.model, mesh, seed=3)
            s = Sampler(graphdef, params, cfg.model, mesh)
            out.append([r.ids for r in s.generate([[1, 2, 3], [4, 5, 6, 7]], max_new_tokens=12, temperature=0.0)])
    assert out[0] == out[1]
