"""The built-in ``coin`` world: generation, rules, both experts, splits, branching and determinism."""

import dataclasses
import re

import pytest

from ee_jax.envs import SPLITS, EnvError, branch, check_determinism, make_env, run_oracle
from ee_jax.envs.worlds.coin import NAMES, OOD_NAMES, ROOMS, build


@pytest.fixture
def env():
    return make_env("coin")


@pytest.mark.parametrize("expert", ["explore", "shortest"])
def test_both_experts_win_every_split_and_difficulty(expert):
    env = make_env("coin", expert=expert)
    for d in env.difficulties:
        for split in SPLITS:
            for task in env.make_tasks(split, 30, difficulty=d):
                ep = run_oracle(env, task)
                assert ep.won and ep.invalid == 0 and ep.score == 1.0 and ep.actions[-1] == "take coin"
                moves = sum(a.startswith("move ") for a in ep.actions)
                shortest = task.param("distance") - 1 - sum(a.startswith("open ") for a in ep.actions)
                assert moves == shortest if expert == "shortest" else moves >= shortest
                lo, hi = ROOMS[d]
                assert lo <= task.param("rooms") <= hi


def _walk(env, task, coin=None) -> tuple[list[str], list[tuple]]:
    """The explore expert's actions and the room after each, optionally with the coin moved."""
    env.reset(task)
    if coin is not None:
        env.house = dataclasses.replace(env.house, coin=coin)
    actions, cells = [], []
    while (a := env.oracle_action()) is not None:
        env.step(a)
        actions.append(a)
        cells.append(env.cell)
    return actions, cells


def test_the_exploring_expert_does_not_know_where_the_coin_is(env):
    """Move the coin to any other room: the expert acts the same until it enters one of the two rooms."""
    compared = 0
    for task in env.make_tasks("train", 15, difficulty=2):
        house = build(task.seed, "train", 2)
        actions, cells = _walk(env, task)
        for room in house.names:
            if room in (house.start, house.coin):
                continue
            moved, _ = _walk(env, task, coin=room)
            n = next(i for i, c in enumerate(cells) if c in (house.coin, room))
            assert moved[:n] == actions[:n] and moved[-1] == "take coin"
            compared += n
    assert compared > 30
    # the shortest-path expert does know: its first move changes with the coin's room
    shortest = make_env("coin", expert="shortest")
    firsts = set()
    for task in env.make_tasks("train", 15, difficulty=2):
        house = build(task.seed, "train", 2)
        firsts |= {(task.id, _walk(shortest, task, coin=r)[0][0]) for r in house.names if r != house.start}
    assert len(firsts) > 15


def test_splits_and_ood_room_names(env):
    assert not set(NAMES) & set(OOD_NAMES) and len(OOD_NAMES) >= max(hi for _, hi in ROOMS.values())
    seen = {split: set() for split in SPLITS}
    for split in SPLITS:
        for t in env.make_tasks(split, 40, difficulty=3):
            seen[split] |= set(build(t.seed, split, 3).names.values())
    assert seen["ood"] <= set(OOD_NAMES) and all(seen[s] <= set(NAMES) for s in ("train", "valid", "test"))
    assert env.make_tasks("train", 3) != env.make_tasks("test", 3)
    assert {t.param("closed_doors") > 0 for t in env.make_tasks("train", 40, difficulty=2)} == {True, False}


def test_rules_doors_coin_and_invalid_actions(env):
    task = next(t for t in env.make_tasks("train", 200, difficulty=2) if t.param("closed_doors") and
                run_oracle(env, t).actions[0].startswith("open "))
    obs = env.reset(task)
    assert obs.endswith("Your task is to: find the coin and take it.") and "You see a coin" not in obs
    d = env.oracle_action().removeprefix("open door to ")
    assert re.search(f"To the {d} you see a closed [a-z -]+ door\\.", obs)
    assert f"open door to {d}" in env.admissible_actions() and f"move {d}" not in env.admissible_actions()
    r = env.step(f"move {d}")  # through a closed door: invalid, nothing changes
    assert not r.info["valid"] and "is closed" in r.observation and r.reward == 0.0
    r = env.step("take coin")
    assert not r.info["valid"] and r.observation.startswith("Nothing happens: there is no coin here.")
    assert not env.step("fly away").info["valid"]
    r = env.step(f"open door to {d}")
    assert r.info["valid"] and r.observation.startswith("You open the ")
    assert not env.step(f"open door to {d}").info["valid"]  # already open
    assert f"move {d}" in env.admissible_actions()
    while (a := env.oracle_action()) is not None:
        assert a in env.admissible_actions()
        r = env.step(a)
    assert r.info["won"] and r.reward == 1.0 and r.done and r.observation == "You take the coin."


def test_every_admissible_action_is_valid_and_branching_restores(env):
    task = env.make_tasks("test", 1, start=4, difficulty=3)[0]
    actions = run_oracle(env, task).actions
    for i in range(len(actions)):
        env.reset(task)
        for a in actions[:i]:
            env.step(a)
        alternatives = env.admissible_actions()
        outs = branch(env, task, actions[:i], alternatives)
        assert [o.action for o in outs] == alternatives and all(o.info["valid"] for o in outs)
        assert env.admissible_actions() == alternatives  # left at the branching state
    assert len(check_determinism(env, task, actions)) == 16
    with pytest.raises(EnvError, match="unknown option"):
        make_env("coin", rooms=3)
    with pytest.raises(EnvError, match="expert"):
        make_env("coin", expert="psychic")
    assert type(env).describe()["difficulties"] == [1, 2, 3]
