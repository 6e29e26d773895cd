"""Branching: execute K alternative actions at a state reached by an action prefix.

Environments that can ``snapshot()`` are walked to the state once and restored before every
alternative; the others are reset and the prefix replayed once per alternative. Either way every
alternative starts from the same point, and the observations along the prefix are hashed and compared
so a nondeterministic environment fails loudly instead of producing wrong transitions.
"""

from __future__ import annotations

import dataclasses

from ee_jax.envs.base import Env, Task, observation_hash


class NondeterministicEnvError(RuntimeError):
    """Replaying the same actions gave different observations."""


@dataclasses.dataclass
class Branch:
    """The outcome of one action executed at a branching state."""

    action: str
    observation: str
    reward: float
    done: bool
    info: dict

    def to_json(self) -> dict:
        return dataclasses.asdict(self)


def _diverged(env: Env, task: Task, step: int, expected: str, got: str) -> NondeterministicEnvError:
    where = "the reset observation" if step == 0 else f"the observation after prefix action {step}"
    return NondeterministicEnvError(
        f"environment {env.name!r}, task {task.id!r}: {where} differs between runs of the same actions; "
        f"branching needs a deterministic environment.\n  expected: {expected[:200]!r}\n  got:      {got[:200]!r}")


def reach(env: Env, task: Task, prefix: list[str], expected: list[str] | None = None) -> list[str]:
    """Reset and replay ``prefix``; returns the observations (reset observation first). With
    ``expected`` (a previous run's observations) a difference raises ``NondeterministicEnvError``."""
    observations = [env.reset(task)]
    for a in prefix:
        observations.append(env.step(a).observation)
    if expected is not None:
        for i, (e, g) in enumerate(zip(expected, observations)):
            if e != g:
                raise _diverged(env, task, i, e, g)
    return observations


def branch(env: Env, task: Task, prefix: list[str], alternatives: list[str],
           prefix_observations: list[str] | None = None) -> list[Branch]:
    """Execute each of ``alternatives`` at the state reached by ``prefix`` from ``reset(task)``.

    ``prefix_observations`` (the reset observation and one per prefix action, e.g. recorded with the
    expert trajectory) are checked against the replay. With snapshot branching the environment is
    left at the branching state; with replay it is left after the last alternative.
    """
    prefix = list(prefix)
    out = []
    if env.branching == "snapshot":
        reach(env, task, prefix, prefix_observations)
        snap = env.snapshot()
        for a in alternatives:
            env.restore(snap)
            out.append(Branch(a, *env.step(a)))
        env.restore(snap)
        return out
    expected = prefix_observations
    for a in alternatives:
        observations = reach(env, task, prefix, expected)
        expected = observations
        out.append(Branch(a, *env.step(a)))
    return out


def branch_trajectory(env: Env, task: Task, actions: list[str], alternatives: list[list[str]],
                      observations: list[str] | None = None) -> list[list[Branch]]:
    """Branch at every state of a trajectory: ``alternatives[i]`` are executed at the state before
    ``actions[i]``. Snapshot environments walk the trajectory once (O(N·K) steps); replay
    environments replay each prefix (O(K·N²/2) steps)."""
    if len(alternatives) != len(actions):
        raise ValueError(f"alternatives has {len(alternatives)} entries; expected one per action ({len(actions)})")
    if env.branching != "snapshot":
        if observations is None:
            observations = reach(env, task, actions[:-1] if actions else [])
        return [branch(env, task, actions[:i], alts, observations[: i + 1])
                for i, alts in enumerate(alternatives)]
    result = []
    walked = [env.reset(task)]
    for i, (a, alts) in enumerate(zip(actions, alternatives)):
        if observations is not None and observations[i] != walked[i]:
            raise _diverged(env, task, i, observations[i], walked[i])
        snap = env.snapshot()
        row = []
        for alt in alts:
            env.restore(snap)
            row.append(Branch(alt, *env.step(alt)))
        env.restore(snap)
        result.append(row)
        walked.append(env.step(a).observation)
    return result


def check_determinism(env: Env, task: Task, actions: list[str], repeats: int = 2) -> str:
    """Run ``actions`` from reset ``repeats`` times (and, for snapshot environments, once more by
    snapshot/restore around a detour at every state); return the observation hash or raise
    ``NondeterministicEnvError`` naming the first step that differs."""
    first = reach(env, task, actions)
    for _ in range(repeats - 1):
        reach(env, task, actions, first)
    if env.branching == "snapshot":
        walked = [env.reset(task)]
        for a in actions:
            snap = env.snapshot()
            admissible = env.admissible_actions()
            # a detour that restore() must undo; open action spaces detour through the expert's own action
            detour = admissible[-1] if admissible else env.oracle_action() or "look"
            env.step(detour)
            env.restore(snap)
            walked.append(env.step(a).observation)
        for i, (e, g) in enumerate(zip(first, walked)):
            if e != g:
                raise _diverged(env, task, i, e, g)
    return observation_hash(first)
