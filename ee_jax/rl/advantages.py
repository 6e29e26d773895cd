"""Advantage estimators for RL continuation (numpy, host side).

Inputs are flat arrays: one entry per *episode* (a rollout of one task) or per *turn* (one
prompt -> generated reply step of an episode, the training sample unit). Every estimator returns
float32 (computed in float64), ready to be placed on the turn's reply tokens.

Returns
    ``returns_to_go(r, gamma)[t] = sum_{k >= t} gamma^(k - t) * r[k]`` over the turns of ONE episode.

Episode-level groups (GRPO; verl's ``grpo`` estimator)
    A *group* is the set of episodes that share a ``group_id``: the G rollouts of the same task
    (the paper: G = 8). Each episode's scalar return ``R`` (e.g. ``10 * success - 0.1 * invalid``)
    is normalised within its group::

        A = (R - mean(R_group)) / (std(R_group, ddof=1) + eps)     # normalize_std=True (GRPO)
        A =  R - mean(R_group)                                      # normalize_std=False (Dr. GRPO)

    The standard deviation is the unbiased one (``ddof=1``, as ``torch.std`` in verl).
    A group with a single member gets ``A = 0``: there is no other rollout to compare against, so
    the group carries no baseline and no learning signal (verl instead falls back to the raw
    score there; a raw score would reward a task for being easy, not an action for being good).
    A group whose returns are all equal also gets exactly ``A = 0`` (every rollout equally good).

Step-level groups (GiGPO, arXiv 2505.10978) combined with episode advantages
    A *step group* is the set of TURNS that share ``(episode_group, state_key)``: the same
    environment state of the same task, reached by different rollouts (or, in ee_jax, the K+1
    branches executed at one expert state; turns of one rollout that revisit a state join the same
    group too). Turns of different tasks never share a step group, even when their state keys are
    equal. Within a step group, each turn's discounted return-to-go is normalised by the same rule
    as episodes (``ddof=1``; ``normalize_std=False`` keeps only the mean subtraction; a singleton
    or constant step group gets 0). The turn's final advantage is::

        A_turn = A_episode + omega * A_step

    where ``A_episode`` is the GRPO advantage of the turn's episode broadcast to its turns.

PPO (GAE)
    Over the turns of ONE episode with critic values ``V_t``:
    ``delta_t = r_t + gamma * V_{t+1} - V_t`` with ``V_T = bootstrap`` (0 when the episode
    terminated, the value of the last state when it was truncated);
    ``A_t = sum_k (gamma * lam)^k * delta_{t+k}``; value targets ``returns_t = A_t + V_t``.
    ``whiten`` optionally normalises advantages over the masked entries of a batch.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence

import numpy as np


def returns_to_go(rewards, gamma: float) -> np.ndarray:
    """Discounted return from each turn of ONE episode.

    Args:
        rewards: ``[T]`` per-turn rewards.
        gamma: discount in ``[0, 1]``.

    Returns:
        ``[T]`` float32, ``G_t = r_t + gamma * G_{t+1}`` with ``G_T = 0``.
    """
    r = _vector(rewards, "rewards")
    g = _unit_interval(gamma, "gamma")
    out = np.empty_like(r)
    acc = 0.0
    for t in range(len(r) - 1, -1, -1):
        acc = r[t] + g * acc
        out[t] = acc
    return out.astype(np.float32)


def grpo_advantages(returns, group_ids: Sequence[Hashable], *, normalize_std: bool = True,
                    eps: float = 1e-6) -> np.ndarray:
    """Group-normalised episode advantages (GRPO; Dr. GRPO with ``normalize_std=False``).

    Args:
        returns: ``[N]`` one scalar return per episode.
        group_ids: ``N`` hashables; episodes with equal ids form a group (the rollouts of one task).
        normalize_std: divide by the group's unbiased std (+ ``eps``); False only subtracts the mean.
        eps: added to the std, ``>= 0``.

    Returns:
        ``[N]`` float32 advantages; 0 for singleton groups and for groups whose returns are all equal.
    """
    r = _vector(returns, "returns")
    if not (np.isfinite(eps) and eps >= 0):
        raise ValueError(f"eps must be a finite number >= 0, got {eps!r}")
    inv = _group_index(group_ids, len(r), "group_ids")
    return _group_normalise(r, inv, normalize_std, eps)


def gae(rewards, values, *, gamma: float, lam: float, bootstrap: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """Generalised advantage estimation over the turns of ONE episode.

    Args:
        rewards: ``[T]`` per-turn rewards.
        values: ``[T]`` critic values ``V_t`` of the state each turn acted in.
        gamma: discount in ``[0, 1]``.
        lam: GAE lambda in ``[0, 1]`` (1: Monte-Carlo return minus V; 0: one-step TD error).
        bootstrap: ``V_T``, the value after the last turn: 0 when the episode terminated, the
            critic's value of the final state when it was truncated.

    Returns:
        ``(advantages, returns)``, both ``[T]`` float32, ``returns = advantages + values``.
    """
    r = _vector(rewards, "rewards")
    v = _vector(values, "values")
    if len(r) != len(v):
        raise ValueError(f"rewards and values must have the same length, got {len(r)} and {len(v)}")
    g = _unit_interval(gamma, "gamma")
    gl = g * _unit_interval(lam, "lam")
    if not np.isfinite(bootstrap):
        raise ValueError(f"bootstrap must be finite, got {bootstrap!r}")
    adv = np.empty_like(r)
    acc, next_v = 0.0, float(bootstrap)
    for t in range(len(r) - 1, -1, -1):
        acc = (r[t] + g * next_v - v[t]) + gl * acc
        adv[t] = acc
        next_v = v[t]
    return adv.astype(np.float32), (adv + v).astype(np.float32)


def step_group_advantages(episode_group: Sequence[Hashable], state_keys: Sequence[Hashable], turn_returns, *,
                          normalize_std: bool = True, eps: float = 1e-6) -> np.ndarray:
    """Per-turn step-level advantages (GiGPO): normalise turn returns within ``(episode_group, state_key)``.

    Args:
        episode_group: ``N`` hashables, per TURN: the group id of the turn's episode (its task).
        state_keys: ``N`` hashables, per TURN: identifies the environment state the turn acted in.
        turn_returns: ``[N]`` the turn's discounted return-to-go (see ``returns_to_go``).
        normalize_std: as in ``grpo_advantages``.
        eps: as in ``grpo_advantages``.

    Returns:
        ``[N]`` float32 step advantages; 0 for singleton or constant step groups.
    """
    r = _vector(turn_returns, "turn_returns")
    groups = _as_list(episode_group, len(r), "episode_group")
    keys = _as_list(state_keys, len(r), "state_keys")
    # The pair, not the key alone: equal observations in two different tasks are different states.
    return grpo_advantages(r, list(zip(groups, keys)), normalize_std=normalize_std, eps=eps)


def combine_advantages(episode_adv_per_turn, step_adv, omega: float) -> np.ndarray:
    """``A = A_episode + omega * A_step`` per turn (GiGPO's combination).

    Args:
        episode_adv_per_turn: ``[N]`` each turn's episode advantage (its episode's GRPO advantage).
        step_adv: ``[N]`` from ``step_group_advantages``.
        omega: weight of the step-level term (finite; 0 gives plain GRPO).

    Returns:
        ``[N]`` float32.
    """
    a = _vector(episode_adv_per_turn, "episode_adv_per_turn")
    s = _vector(step_adv, "step_adv")
    if len(a) != len(s):
        raise ValueError(f"episode_adv_per_turn and step_adv must have the same length, got {len(a)} and {len(s)}")
    if not np.isfinite(omega):
        raise ValueError(f"omega must be finite, got {omega!r}")
    return (a + float(omega) * s).astype(np.float32)


def whiten(x, mask, *, eps: float = 1e-8) -> np.ndarray:
    """Normalise ``x`` to zero mean, unit std over the entries where ``mask`` is nonzero.

    The std is unbiased (``ddof=1``, as verl's ``masked_whiten``). Entries outside the mask are
    set to 0 (they carry no loss). Fewer than two masked entries: the result is only centred.

    Args:
        x: any-shape array (e.g. ``[B, T]`` token advantages).
        mask: same shape; nonzero marks the entries that count.
        eps: added to the std.

    Returns:
        float32 array of ``x``'s shape.
    """
    xs = np.asarray(x, dtype=np.float64)
    m = np.asarray(mask)
    if xs.shape != m.shape:
        raise ValueError(f"x and mask must have the same shape, got {xs.shape} and {m.shape}")
    sel = m != 0
    n = int(sel.sum())
    if n == 0:
        return np.zeros(xs.shape, np.float32)
    if not np.all(np.isfinite(xs[sel])):
        raise ValueError("x must be finite where mask is set")
    centred = xs - xs[sel].mean()
    if n > 1:
        centred = centred / (np.sqrt(np.sum(centred[sel] ** 2) / (n - 1)) + eps)
    return np.where(sel, centred, 0.0).astype(np.float32)


def _group_normalise(r: np.ndarray, inv: np.ndarray, normalize_std: bool, eps: float) -> np.ndarray:
    """Per-group ``(r - mean) / (std_ddof1 + eps)`` (or ``r - mean``); singleton/constant groups -> 0."""
    if len(r) == 0:
        return np.zeros(0, np.float32)
    n_groups = int(inv.max()) + 1
    counts = np.bincount(inv, minlength=n_groups).astype(np.float64)
    mean = np.bincount(inv, weights=r, minlength=n_groups) / counts
    dev = r - mean[inv]
    if normalize_std:
        var = np.bincount(inv, weights=dev**2, minlength=n_groups) / np.maximum(counts - 1, 1)
        dev = dev / (np.sqrt(var)[inv] + eps)
    hi = np.full(n_groups, -np.inf)
    lo = np.full(n_groups, np.inf)
    np.maximum.at(hi, inv, r)
    np.minimum.at(lo, inv, r)
    # Singleton: no other rollout to compare against, so no baseline. Constant: every rollout equally
    # good; set exactly 0 (a float mean of equal values can be off by one ulp).
    no_signal = (counts[inv] < 2) | (hi == lo)[inv]
    return np.where(no_signal, 0.0, dev).astype(np.float32)


def _group_index(ids, n: int, name: str) -> np.ndarray:
    """Dense ``[n]`` int index of each id's group, in order of first appearance."""
    ids = _as_list(ids, n, name)
    index: dict = {}
    try:
        return np.fromiter((index.setdefault(g, len(index)) for g in ids), dtype=np.int64, count=n)
    except TypeError as e:
        raise TypeError(f"{name} must hold hashable ids: {e}") from None


def _as_list(ids, n: int, name: str) -> list:
    ids = list(ids)
    if len(ids) != n:
        raise ValueError(f"{name} must have one entry per return ({n} returns), got {len(ids)}")
    return ids


def _vector(x, name: str) -> np.ndarray:
    """A finite 1-D float64 copy of ``x``."""
    a = np.asarray(x, dtype=np.float64)
    if a.ndim != 1:
        raise ValueError(f"{name} must be 1-D, got shape {a.shape}")
    bad = np.flatnonzero(~np.isfinite(a))
    if len(bad):
        raise ValueError(f"{name} must be finite, got {a[bad[0]]} at index {bad[0]}")
    return a


def _unit_interval(x: float, name: str) -> float:
    if not (np.isfinite(x) and 0.0 <= x <= 1.0):
        raise ValueError(f"{name} must be in [0, 1], got {x!r}")
    return float(x)
