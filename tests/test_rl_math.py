"""RL math: advantage estimators and token losses against values worked out by hand."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ee_jax.rl.advantages import (
    combine_advantages,
    gae,
    grpo_advantages,
    returns_to_go,
    step_group_advantages,
    whiten,
)
from ee_jax.rl.losses import entropy_sum, kl_penalty, policy_loss, token_logprobs, value_loss

LN2 = math.log(2.0)


# ---------------------------------------------------------------- returns


def test_returns_to_go_discounted():
    # G2 = 2; G1 = 0 + 0.5 * 2 = 1; G0 = 1 + 0.5 * 1 = 1.5
    np.testing.assert_allclose(returns_to_go([1.0, 0.0, 2.0], 0.5), [1.5, 1.0, 2.0])


def test_returns_to_go_paper_reward_undiscounted():
    # reward 10 * success - 0.1 per invalid action: an invalid first turn, success on the third.
    # gamma = 1: G2 = 10; G1 = 0 + 10 = 10; G0 = -0.1 + 10 = 9.9
    out = returns_to_go([-0.1, 0.0, 10.0], 1.0)
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, [9.9, 10.0, 10.0], rtol=1e-6)
    assert returns_to_go([], 0.9).shape == (0,)


def test_returns_to_go_validation():
    with pytest.raises(ValueError, match="gamma"):
        returns_to_go([1.0], 1.5)
    with pytest.raises(ValueError, match="rewards must be 1-D"):
        returns_to_go([[1.0]], 0.9)
    with pytest.raises(ValueError, match="rewards must be finite"):
        returns_to_go([1.0, float("nan")], 0.9)


# ---------------------------------------------------------------- GRPO


def test_grpo_one_group():
    # [1, 0, 0, 1]: mean 0.5, deviations +-0.5, sum of squares 1, var (ddof=1) 1/3, std 0.57735
    # -> A = +-0.5 / 0.57735 = +-0.866025
    out = grpo_advantages([1.0, 0.0, 0.0, 1.0], [7, 7, 7, 7])
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, [0.866025, -0.866025, -0.866025, 0.866025], rtol=1e-5)


def test_grpo_interleaved_groups_any_hashable():
    # group "a" = [1, 0]: mean 0.5, std sqrt(0.5 / 1) = 0.707107 -> +-0.707107
    # group ("b", 1) = [2, 4, 9]: mean 5, deviations -3, -1, 4, sum sq 26, var 13, std 3.605551
    #   -> -3 / 3.605551 = -0.832050, -1 / 3.605551 = -0.277350, 4 / 3.605551 = 1.109400
    ids = ["a", ("b", 1), "a", ("b", 1), ("b", 1)]
    out = grpo_advantages([1.0, 2.0, 0.0, 4.0, 9.0], ids)
    np.testing.assert_allclose(out, [0.707107, -0.832050, -0.707107, -0.277350, 1.109400], rtol=1e-5)


def test_grpo_without_std_is_mean_centred():
    # Dr. GRPO: [1, 0, 0, 1] - 0.5
    out = grpo_advantages([1.0, 0.0, 0.0, 1.0], [0, 0, 0, 0], normalize_std=False)
    np.testing.assert_allclose(out, [0.5, -0.5, -0.5, 0.5])


def test_grpo_singleton_and_constant_groups_get_zero():
    # group 0 = [1, 3] -> +-0.707107; group 1 = [7] alone -> 0 (no baseline);
    # group 2 = [0.1, 0.1, 0.1] all equal -> exactly 0
    out = grpo_advantages([1.0, 3.0, 7.0, 0.1, 0.1, 0.1], [0, 0, 1, 2, 2, 2])
    np.testing.assert_allclose(out, [-0.707107, 0.707107, 0.0, 0.0, 0.0, 0.0], rtol=1e-5)
    assert np.all(out[2:] == 0.0)
    assert np.all(grpo_advantages([5.0], ["x"], normalize_std=False) == 0.0)
    assert grpo_advantages([], []).shape == (0,)


def test_grpo_validation():
    with pytest.raises(ValueError, match="group_ids must have one entry per return"):
        grpo_advantages([1.0, 0.0], [0])
    with pytest.raises(ValueError, match="returns must be finite"):
        grpo_advantages([1.0, float("inf")], [0, 0])
    with pytest.raises(ValueError, match="eps"):
        grpo_advantages([1.0, 0.0], [0, 0], eps=-1.0)
    with pytest.raises(TypeError, match="group_ids must hold hashable"):
        grpo_advantages([1.0, 0.0], [[0], [0]])


# ---------------------------------------------------------------- GAE


def test_gae_three_turns_terminated():
    # rewards [1, 0, 2], values [0.5, 1.0, 1.5], gamma 0.9, lam 0.8 (gamma * lam = 0.72), V_3 = 0
    # delta2 = 2 + 0.9 * 0   - 1.5 = 0.5
    # delta1 = 0 + 0.9 * 1.5 - 1.0 = 0.35
    # delta0 = 1 + 0.9 * 1.0 - 0.5 = 1.4
    # A2 = 0.5; A1 = 0.35 + 0.72 * 0.5 = 0.71; A0 = 1.4 + 0.72 * 0.71 = 1.9112
    # returns = A + V = [2.4112, 1.71, 2.0]
    adv, ret = gae([1.0, 0.0, 2.0], [0.5, 1.0, 1.5], gamma=0.9, lam=0.8)
    assert adv.dtype == ret.dtype == np.float32
    np.testing.assert_allclose(adv, [1.9112, 0.71, 0.5], rtol=1e-6)
    np.testing.assert_allclose(ret, [2.4112, 1.71, 2.0], rtol=1e-6)


def test_gae_truncated_bootstraps():
    # as above with V_3 = 1.0: delta2 = 2 + 0.9 - 1.5 = 1.4
    # A2 = 1.4; A1 = 0.35 + 0.72 * 1.4 = 1.358; A0 = 1.4 + 0.72 * 1.358 = 2.37776
    adv, ret = gae([1.0, 0.0, 2.0], [0.5, 1.0, 1.5], gamma=0.9, lam=0.8, bootstrap=1.0)
    np.testing.assert_allclose(adv, [2.37776, 1.358, 1.4], rtol=1e-6)
    np.testing.assert_allclose(ret, [2.87776, 2.358, 2.9], rtol=1e-6)


def test_gae_lambda_one_is_return_minus_value():
    # lam = 1: A = G - V; G (gamma 0.9) = [1 + 0.9 * 1.8, 0 + 0.9 * 2, 2] = [2.62, 1.8, 2] -> [2.12, 0.8, 0.5]
    adv, _ = gae([1.0, 0.0, 2.0], [0.5, 1.0, 1.5], gamma=0.9, lam=1.0)
    np.testing.assert_allclose(adv, [2.12, 0.8, 0.5], rtol=1e-6)
    np.testing.assert_allclose(adv, returns_to_go([1.0, 0.0, 2.0], 0.9) - np.array([0.5, 1.0, 1.5]), rtol=1e-6)


def test_gae_validation():
    with pytest.raises(ValueError, match="same length, got 3 and 2"):
        gae([1.0, 0.0, 2.0], [0.5, 1.0], gamma=0.9, lam=0.8)
    with pytest.raises(ValueError, match="lam must be in"):
        gae([1.0], [0.5], gamma=0.9, lam=-0.1)
    with pytest.raises(ValueError, match="bootstrap"):
        gae([1.0], [0.5], gamma=0.9, lam=0.8, bootstrap=float("nan"))


# ---------------------------------------------------------------- step groups (GiGPO)


def test_step_groups_do_not_mix_tasks_with_the_same_state_key():
    # turn: task, state key, turn return
    #   0: t1 s0 1.0 | 1: t1 s0 0.0               -> group (t1, s0) = [1, 0] -> +-0.707107
    #   2: t2 s0 5.0 | 3: t2 s0 3.0 | 4: t2 s0 4.0 -> group (t2, s0) = [5, 3, 4]: mean 4, var 2/2 = 1 -> [1, -1, 0]
    #   5: t1 s1 2.0                              -> singleton -> 0
    # (grouping by key alone would normalise [1, 0, 5, 3, 4] together: mean 2.6.)
    groups = ["t1", "t1", "t2", "t2", "t2", "t1"]
    keys = ["s0", "s0", "s0", "s0", "s0", "s1"]
    step = step_group_advantages(groups, keys, [1.0, 0.0, 5.0, 3.0, 4.0, 2.0])
    assert step.dtype == np.float32
    np.testing.assert_allclose(step, [0.707107, -0.707107, 1.0, -1.0, 0.0, 0.0], rtol=1e-5, atol=1e-7)
    # without std: [1, 0] - 0.5 and [5, 3, 4] - 4
    flat = step_group_advantages(groups, keys, [1.0, 0.0, 5.0, 3.0, 4.0, 2.0], normalize_std=False)
    np.testing.assert_allclose(flat, [0.5, -0.5, 1.0, -1.0, 0.0, 0.0])


def test_combine_advantages():
    # A = A_episode + omega * A_step, omega 0.5:
    # [0.5 + 0.5*1, 0.5 - 0.5*1, -1 + 0.5*2, -1 + 0] = [1.0, 0.0, 0.0, -1.0]
    out = combine_advantages([0.5, 0.5, -1.0, -1.0], [1.0, -1.0, 2.0, 0.0], 0.5)
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, [1.0, 0.0, 0.0, -1.0])
    np.testing.assert_allclose(combine_advantages([0.5, -1.0], [3.0, 4.0], 0.0), [0.5, -1.0])


def test_step_group_validation():
    with pytest.raises(ValueError, match="state_keys must have one entry per return"):
        step_group_advantages(["t1", "t1"], ["s0"], [1.0, 0.0])
    with pytest.raises(ValueError, match="episode_group must have one entry per return"):
        step_group_advantages(["t1"], ["s0", "s0"], [1.0, 0.0])
    with pytest.raises(ValueError, match="same length, got 2 and 1"):
        combine_advantages([0.5, 0.5], [1.0], 1.0)
    with pytest.raises(ValueError, match="omega"):
        combine_advantages([0.5], [1.0], float("nan"))


def test_whiten_masked():
    # masked entries [1, 2, 3]: mean 2, std (ddof=1) sqrt(2 / 2) = 1 -> [-1, 0, 1]; masked-out -> 0
    out = whiten(np.array([[1.0, 2.0], [3.0, 100.0]]), np.array([[1, 1], [1, 0]]))
    np.testing.assert_allclose(out, [[-1.0, 0.0], [1.0, 0.0]], atol=1e-6)
    # one masked entry: only centred
    np.testing.assert_allclose(whiten([4.0, 9.0], [0, 1]), [0.0, 0.0])
    with pytest.raises(ValueError, match="same shape"):
        whiten([1.0, 2.0], [1])


# ---------------------------------------------------------------- token log-probs


def test_token_logprobs_and_entropy():
    # logits [0, 0, ln2] -> probs [1/4, 1/4, 1/2]
    # logp(target 2) = ln(1/2) = -0.693147; logp(target 0) = ln(1/4) = -1.386294
    # entropy = 2 * (1/4) * ln4 + (1/2) * ln2 = 0.693147 + 0.346574 = 1.039721
    # row 2: logits [0, 0, -inf] -> probs [1/2, 1/2, 0], logp(1) = -ln2, entropy ln2 (the -inf adds 0)
    logits = jnp.array([[[0.0, 0.0, LN2], [0.0, 0.0, LN2]], [[0.0, 0.0, -jnp.inf], [0.0, 0.0, -jnp.inf]]],
                       jnp.bfloat16)
    targets = jnp.array([[2, 0], [1, 1]])
    logp, ent = token_logprobs(logits, targets)
    assert logp.dtype == ent.dtype == jnp.float32
    # bf16 stores ln2 as 0.69140625: tolerance 3e-3
    np.testing.assert_allclose(logp, [[-0.693147, -1.386294], [-LN2, -LN2]], atol=3e-3)
    np.testing.assert_allclose(ent, [[1.039721, 1.039721], [LN2, LN2]], atol=3e-3)
    # the gradient through the -inf column is finite
    g = jax.grad(lambda x: jnp.sum(token_logprobs(x, targets)[1]))(logits.astype(jnp.float32))
    assert bool(jnp.all(jnp.isfinite(g)))
    with pytest.raises(ValueError, match="vocabulary axis"):
        token_logprobs(jnp.zeros((2, 3, 5)), jnp.zeros((2, 4), jnp.int32))


# ---------------------------------------------------------------- policy loss

# row 0, A = +1: ratios 1.5 (> 1.2: pg1 = -1.5, pg2 = -1.2, max -1.2, CLIPPED), 1.1 (inside: -1.1),
#                masked token with log-ratio 100 (clamped, never reaches the sum)
# row 1, A = -1: ratios 0.5 (< 0.8: pg1 = 0.5, pg2 = 0.8, max 0.8, CLIPPED),
#                1.5 (> 1.2 but pg1 = 1.5 > pg2 = 1.2: the unclipped branch is active, NOT clipped),
#                1.0 (pg = 1.0)
# pg_sum = (-1.2 - 1.1) + (0.8 + 1.5 + 1.0) = -2.3 + 3.3 = 1.0; clipped 2;
# ratio_sum = 1.5 + 1.1 + 0.5 + 1.5 + 1.0 = 5.6; count 5
OLD = jnp.zeros((2, 3))
LOGP = jnp.log(jnp.array([[1.5, 1.1, 1.0], [0.5, 1.5, 1.0]])).at[0, 2].set(100.0)
ADV = jnp.array([1.0, -1.0])
MASK = jnp.array([[1.0, 1.0, 0.0], [1.0, 1.0, 1.0]])


def test_policy_loss_clipped_and_unclipped_tokens():
    out = policy_loss(LOGP, OLD, ADV, MASK)
    assert set(out) == {"pg_sum", "clipped_sum", "ratio_sum", "count"}
    np.testing.assert_allclose(out["pg_sum"], 1.0, rtol=1e-5)
    assert float(out["clipped_sum"]) == 2.0
    np.testing.assert_allclose(out["ratio_sum"], 5.6, rtol=1e-5)
    assert float(out["count"]) == 5.0
    # [B, T] advantages give the same, and so does jit
    per_token = jnp.broadcast_to(ADV[:, None], (2, 3))
    np.testing.assert_allclose(policy_loss(LOGP, OLD, per_token, MASK)["pg_sum"], 1.0, rtol=1e-5)
    jitted = jax.jit(policy_loss, static_argnames=("clip_low", "clip_high"))(LOGP, OLD, ADV, MASK)
    np.testing.assert_allclose(jitted["pg_sum"], 1.0, rtol=1e-5)


def test_policy_loss_gradient_zero_on_clipped_tokens():
    # d pg / d logp = d(-A * exp(logp - old)) = -A * ratio where unclipped, 0 where clipped or masked:
    # row 0: [0 (clipped), -1 * 1.1, 0 (masked)]; row 1: [0 (clipped), +1 * 1.5, +1 * 1.0]
    grad = jax.grad(lambda lp: policy_loss(lp, OLD, ADV, MASK)["pg_sum"])(LOGP)
    np.testing.assert_allclose(grad, [[0.0, -1.1, 0.0], [0.0, 1.5, 1.0]], rtol=1e-5, atol=1e-7)


def test_policy_loss_ignores_nan_at_masked_tokens():
    # padding may hold anything: NaN log-probs and advantages there change neither the sum nor the gradient
    logp = LOGP.at[0, 2].set(jnp.nan)
    adv = jnp.broadcast_to(ADV[:, None], (2, 3)).at[0, 2].set(jnp.nan)
    out, grad = jax.value_and_grad(lambda lp: policy_loss(lp, OLD, adv, MASK)["pg_sum"])(logp)
    np.testing.assert_allclose(out, 1.0, rtol=1e-5)
    np.testing.assert_allclose(grad, [[0.0, -1.1, 0.0], [0.0, 1.5, 1.0]], rtol=1e-5, atol=1e-7)


def test_policy_loss_clip_higher():
    # ratio 1.25, A = +1: clip_high 0.2 -> clipped at 1.2 (pg -1.2); clip_high 0.28 -> inside (pg -1.25)
    lp, old, m = jnp.log(jnp.array([[1.25]])), jnp.zeros((1, 1)), jnp.ones((1, 1))
    sym = policy_loss(lp, old, jnp.array([1.0]), m)
    dapo = policy_loss(lp, old, jnp.array([1.0]), m, clip_low=0.2, clip_high=0.28)
    np.testing.assert_allclose([sym["pg_sum"], sym["clipped_sum"]], [-1.2, 1.0], rtol=1e-5)
    np.testing.assert_allclose([dapo["pg_sum"], dapo["clipped_sum"]], [-1.25, 0.0], rtol=1e-5)


def test_policy_loss_validation():
    with pytest.raises(ValueError, match=r"advantages must have shape \(2, 3\) or \(2,\)"):
        policy_loss(LOGP, OLD, jnp.zeros(3), MASK)
    with pytest.raises(ValueError, match="old_logp must have the shape of logp"):
        policy_loss(LOGP, jnp.zeros((2, 4)), ADV, MASK)
    with pytest.raises(ValueError, match="logp must be"):
        policy_loss(jnp.zeros(3), jnp.zeros(3), jnp.zeros(3), jnp.zeros(3))
    with pytest.raises(ValueError, match="clip_low must be in"):
        policy_loss(LOGP, OLD, ADV, MASK, clip_low=1.0)
    with pytest.raises(ValueError, match="clip_high must be in"):
        policy_loss(LOGP, OLD, ADV, MASK, clip_high=-0.1)


# ---------------------------------------------------------------- KL


def test_kl_low_var_k1_mse():
    # ref - logp = +ln2: k3 = 2 - ln2 - 1 = 0.306853; ref - logp = -ln2: k3 = 0.5 + ln2 - 1 = 0.193147
    # sum 0.5 (third token masked)
    ref = jnp.zeros((1, 3))
    logp = jnp.array([[-LN2, LN2, 5.0]])
    mask = jnp.array([[1.0, 1.0, 0.0]])
    out = kl_penalty(logp, ref, mask)
    np.testing.assert_allclose(out["kl_sum"], 0.5, rtol=1e-6)
    assert float(out["count"]) == 2.0
    # k1: (-ln2) + ln2 = 0; mse: 2 * 0.5 * ln2^2 = 0.480453
    np.testing.assert_allclose(kl_penalty(logp, ref, mask, "k1")["kl_sum"], 0.0, atol=1e-7)
    np.testing.assert_allclose(kl_penalty(logp, ref, mask, "mse")["kl_sum"], 0.480453, rtol=1e-5)
    # d k3 / d logp = 1 - exp(ref - logp): 1 - 2 = -1 and 1 - 0.5 = 0.5; masked 0
    grad = jax.grad(lambda lp: kl_penalty(lp, ref, mask)["kl_sum"])(logp)
    np.testing.assert_allclose(grad, [[-1.0, 0.5, 0.0]], rtol=1e-6)


def test_kl_low_var_clamped():
    # ref - logp = 15: exp(15) - 16 = 3.27e6 -> clamped to 10;
    # ref - logp = -30 -> clamped to -20 first: exp(-20) + 20 - 1 = 19 -> clamped to 10
    out = kl_penalty(jnp.array([[-15.0, 30.0]]), jnp.zeros((1, 2)), jnp.ones((1, 2)))
    np.testing.assert_allclose(out["kl_sum"], 20.0)
    with pytest.raises(ValueError, match="kind must be one of"):
        kl_penalty(jnp.zeros((1, 2)), jnp.zeros((1, 2)), jnp.ones((1, 2)), kind="k2")


# ---------------------------------------------------------------- value loss


def test_value_loss_clipping_active_and_inactive():
    # clip 0.2, old 0.5 everywhere:
    # token 0: v 1.0, R 1.0: clipped v 0.7; (v-R)^2 = 0, (0.7-1)^2 = 0.09 -> clipped branch active -> 0.5 * 0.09 = 0.045
    # token 1: v 0.6, R 1.0: inside the range; 0.16 both -> 0.08, not clipped
    # token 2: v 2.0, R 1.0: clipped v 0.7; (v-R)^2 = 1, (0.7-1)^2 = 0.09 -> unclipped active -> 0.5, not clipped
    # token 3: masked (NaN there must not reach the sum)
    # vf_sum = 0.045 + 0.08 + 0.5 = 0.625; vclipped 1; count 3
    v = jnp.array([[1.0, 0.6, 2.0, jnp.nan]])
    old = jnp.full((1, 4), 0.5)
    ret = jnp.array([[1.0, 1.0, 1.0, 1.0]])
    mask = jnp.array([[1.0, 1.0, 1.0, 0.0]])
    out = value_loss(v, old, ret, mask)
    np.testing.assert_allclose(out["vf_sum"], 0.625, rtol=1e-6)
    assert float(out["vclipped_sum"]) == 1.0 and float(out["count"]) == 3.0
    # unclipped: 0.5 * (0 + 0.16 + 1) = 0.58
    plain = value_loss(v, old, ret, mask, clip=None)
    np.testing.assert_allclose(plain["vf_sum"], 0.58, rtol=1e-6)
    assert float(plain["vclipped_sum"]) == 0.0
    # gradient: 0 where clipped; (v - R) elsewhere: [0, -0.4, 1.0, 0]
    grad = jax.grad(lambda x: value_loss(x, old, ret, mask)["vf_sum"])(v)
    np.testing.assert_allclose(grad, [[0.0, -0.4, 1.0, 0.0]], rtol=1e-6, atol=1e-7)
    with pytest.raises(ValueError, match="returns must have the shape of values"):
        value_loss(v, old, ret[:, :3], mask)
    with pytest.raises(ValueError, match="clip must be in"):
        value_loss(v, old, ret, mask, clip=-1.0)


def test_entropy_sum():
    # mask picks 1 and 3: sum 4, count 2
    out = entropy_sum(jnp.array([[1.0, 2.0, 3.0]]), jnp.array([[1.0, 0.0, 1.0]]))
    assert float(out["entropy_sum"]) == 4.0 and float(out["count"]) == 2.0
