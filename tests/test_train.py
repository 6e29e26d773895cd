import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from ee_jax.config import OptimizerConfig
from ee_jax.train import (
    learning_rate_schedule,
    make_batch,
    make_optimizer,
    mean_token_loss,
    weighted_token_loss,
)
from ee_jax.train.metrics import MetricsWriter, read_metrics


def test_loss_is_mean_over_weighted_tokens_only():
    logits = jax.random.normal(jax.random.key(0), (3, 4, 11))
    targets = jax.random.randint(jax.random.key(1), (3, 4), 0, 11)
    weights = jnp.asarray([[1, 1, 0, 0], [0, 0, 0, 0], [0, 1, 1, 1]], jnp.float32)
    ce = optax.softmax_cross_entropy_with_integer_labels(logits, targets)
    expected = (ce[0, 0] + ce[0, 1] + ce[2, 1] + ce[2, 2] + ce[2, 3]) / 5
    np.testing.assert_allclose(mean_token_loss(logits, targets, weights), expected, rtol=1e-6)
    total, count, correct = weighted_token_loss(logits, targets, weights)
    assert float(count) == 5 and 0 <= float(correct) <= 5
    # Fractional weights weight the mean; an all-zero batch gives 0, not NaN.
    w2 = weights.at[0, 0].set(0.5)
    exp2 = (0.5 * ce[0, 0] + ce[0, 1] + ce[2, 1] + ce[2, 2] + ce[2, 3]) / 4.5
    np.testing.assert_allclose(mean_token_loss(logits, targets, w2), exp2, rtol=1e-6)
    assert float(mean_token_loss(logits, targets, jnp.zeros_like(weights))) == 0.0
    g = jax.grad(lambda lg: mean_token_loss(lg, targets, jnp.zeros_like(weights)))(logits)
    assert np.isfinite(np.asarray(g)).all() and float(jnp.abs(g).sum()) == 0.0


def test_make_batch_shifts_and_respects_segments():
    tokens = np.array([[10, 11, 12, 20, 21, 0]])
    seg = np.array([[1, 1, 1, 2, 2, 0]])
    pos = np.array([[0, 1, 2, 0, 1, 0]])
    mask = np.array([[0, 1, 1, 1, 1, 1]], np.float32)
    b = make_batch(tokens, mask, seg, pos)
    assert b["inputs"].tolist() == [[10, 11, 12, 20, 21]]
    assert b["targets"].tolist() == [[11, 12, 20, 21, 0]]
    # 12->20 crosses a segment boundary and 21->pad is padding: both get no loss.
    assert b["weights"].tolist() == [[1, 1, 0, 1, 0]]
    assert b["positions"].tolist() == [[0, 1, 2, 0, 1]]


@pytest.mark.parametrize("kind", ["cosine", "linear", "constant"])
def test_schedules_warm_up_then_decay(kind):
    cfg = OptimizerConfig(lr=1e-3, warmup_steps=10, schedule=kind, min_lr_ratio=0.1)
    s = learning_rate_schedule(cfg, 100)
    assert float(s(0)) == 0.0
    np.testing.assert_allclose(float(s(5)), 5e-4, rtol=1e-5)
    np.testing.assert_allclose(float(s(10)), 1e-3, rtol=1e-5)
    end = 1e-3 if kind == "constant" else 1e-4
    np.testing.assert_allclose(float(s(100)), end, rtol=1e-4)
    if kind != "constant":
        assert float(s(50)) < 1e-3


def test_optimizer_clips_and_skips_decay_on_norms():
    params = {"w": jnp.ones((2, 2)), "norm": {"scale": jnp.ones((2,))}, "q_bias": jnp.ones((2,))}
    cfg = OptimizerConfig(lr=0.1, warmup_steps=0, schedule="constant", weight_decay=0.5, grad_clip=1.0)
    tx = make_optimizer(cfg, 10)
    state = tx.init(params)
    zero = jax.tree.map(jnp.zeros_like, params)
    upd, _ = tx.update(zero, state, params)
    # Zero gradient: only decoupled weight decay moves parameters, and only the matrix.
    np.testing.assert_allclose(upd["w"], -0.1 * 0.5 * np.ones((2, 2)), rtol=1e-6)
    assert float(jnp.abs(upd["norm"]["scale"]).sum()) == 0 and float(jnp.abs(upd["q_bias"]).sum()) == 0
    huge = jax.tree.map(lambda p: 1e6 * jnp.ones_like(p), params)
    clip = optax.clip_by_global_norm(1.0)
    clipped, _ = clip.update(huge, clip.init(params))
    np.testing.assert_allclose(float(optax.tree.norm(clipped)), 1.0, rtol=1e-5)


def test_metrics_writer_jsonl_and_tensorboard(tmp_path):
    w = MetricsWriter(str(tmp_path))
    w.write(1, {"loss": jnp.float32(2.5), "tokens_per_s": 10.0}, prefix="train/")
    w.write(2, {"loss": 2.0}, prefix="train/")
    w.close()
    recs = read_metrics(str(tmp_path))
    assert recs == [{"step": 1, "train/loss": 2.5, "train/tokens_per_s": 10.0}, {"step": 2, "train/loss": 2.0}]
    assert any(p.name.startswith("events.out.tfevents") for p in (tmp_path / "tb").iterdir())
