"""Rollouts -> turn samples with advantages (the estimators of :mod:`ee_jax.rl.advantages`).

GRPO: every turn carries its episode's group-normalised return; with step groups, plus ``omega`` x its
step-group advantage (turns of the same task at the same state, e.g. the K+1 branches of one expert
state). PPO: per-turn GAE over each episode with the critic's values, whitened over the batch.
"""

from __future__ import annotations

import numpy as np

from ee_jax.config import RLConfig
from ee_jax.rl import advantages as adv
from ee_jax.rl.batching import TurnSample
from ee_jax.rl.rollout import Rollout


def grpo_turn_advantages(rollouts: list[Rollout], rl: RLConfig) -> list[np.ndarray]:
    """Per rollout, the advantage of each of its turns."""
    returns = np.asarray([r.episode_return for r in rollouts], np.float64)
    ep = adv.grpo_advantages(returns, [r.group for r in rollouts], normalize_std=rl.normalize_std)
    per_turn = [np.full(len(r.turns), a, np.float32) for r, a in zip(rollouts, ep)]
    if not rl.step_groups.enabled:
        return per_turn
    tasks, keys, rtg = [], [], []
    for r in rollouts:
        tasks += [r.task_id] * len(r.turns)
        keys += [t.state_key for t in r.turns]
        rtg += list(adv.returns_to_go([t.reward for t in r.turns], rl.gamma))
    step = adv.step_group_advantages(tasks, keys, np.asarray(rtg), normalize_std=rl.normalize_std)
    combined = adv.combine_advantages(np.concatenate(per_turn), step, rl.step_groups.omega)
    return np.split(combined, np.cumsum([len(r.turns) for r in rollouts])[:-1])


def ppo_turn_advantages(rollouts: list[Rollout], values: list[np.ndarray], rl: RLConfig):
    """Per rollout, ``(advantages, returns)`` of its turns: GAE with the end of an episode as terminal."""
    advs, rets = [], []
    for r, v in zip(rollouts, values):
        a, ret = adv.gae([t.reward for t in r.turns], v, gamma=rl.gamma, lam=rl.lam, bootstrap=0.0)
        advs.append(a)
        rets.append(ret)
    flat = np.concatenate(advs) if advs else np.zeros(0, np.float32)
    white = adv.whiten(flat, np.ones_like(flat)) if flat.size > 1 else flat
    return np.split(white, np.cumsum([len(a) for a in advs])[:-1]), rets


def turn_samples(rollouts: list[Rollout], turn_adv: list[np.ndarray], turn_returns=None) -> list[TurnSample]:
    """One :class:`TurnSample` per turn, in rollout order."""
    out = []
    for i, r in enumerate(rollouts):
        for j, t in enumerate(r.turns):
            out.append(TurnSample(t.prompt, t.response, float(turn_adv[i][j]),
                                  0.0 if turn_returns is None else float(turn_returns[i][j]),
                                  t.logprobs or None))
    return out


def rollout_metrics(rollouts: list[Rollout]) -> dict[str, float]:
    """Episode statistics of a step: task starts and branch starts separately."""
    tasks = [r for r in rollouts if r.group.startswith("task:")]
    branches = [r for r in rollouts if r.group.startswith("branch:")]
    turns = [t for r in rollouts for t in r.turns]
    sampled = [t for t in turns if not t.forced]
    m = {
        "episodes": float(len(rollouts)), "turns": float(len(turns)),
        "reward": float(np.mean([r.episode_return for r in tasks])) if tasks else 0.0,
        "success": float(np.mean([r.won for r in tasks])) if tasks else 0.0,
        "episode_turns": float(np.mean([len(r.turns) for r in tasks])) if tasks else 0.0,
        "invalid_rate": float(np.mean([not t.valid for t in turns])) if turns else 0.0,
        "response_tokens": float(np.mean([len(t.response) for t in sampled])) if sampled else 0.0,
        "truncated_rate": float(np.mean([t.truncated for t in sampled])) if sampled else 0.0,
    }
    if branches:
        expert = [r for r in branches if r.member == 0]
        alts = [r for r in branches if r.member > 0]
        m["branch_success_expert"] = float(np.mean([r.won for r in expert])) if expert else 0.0
        m["branch_success_alternative"] = float(np.mean([r.won for r in alts])) if alts else 0.0
    return m
