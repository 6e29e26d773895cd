"""The Env protocol, registry, branching and determinism checks, on the documented example environment."""

import os
import re

import pytest

from ee_jax.envs import (
    SPLITS,
    EnvError,
    NondeterministicEnvError,
    Task,
    branch,
    branch_trajectory,
    check_determinism,
    make_env,
    reach,
    run_oracle,
)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _doc_example() -> dict:
    """Execute the example environment of docs/environments.md, so the guide cannot go stale."""
    with open(os.path.join(ROOT, "docs", "environments.md")) as f:
        text = f.read()
    code = re.search(r"## Adding an environment.*?```python\n(.*?)```", text, re.S).group(1)
    namespace: dict = {}
    exec(compile(code, "docs/environments.md", "exec"), namespace)  # our own documentation, not user data
    return namespace


CorridorEnv = _doc_example()["CorridorEnv"]


class ReplayCorridor(CorridorEnv):
    """The same game, declared not to snapshot: branching must replay."""

    name = "corridor"
    branching = "replay"


class FlakyCorridor(CorridorEnv):
    """Nondeterministic: the reset observation changes on every reset."""

    resets = 0

    def _reset(self, task):
        FlakyCorridor.resets += 1
        return super()._reset(task) + f" (visit {FlakyCorridor.resets})"


def test_doc_example_is_registered_and_its_oracle_wins_every_split():
    env = make_env("corridor")
    for split in SPLITS:
        for d in env.difficulties:
            for task in env.make_tasks(split, 5, difficulty=d):
                ep = run_oracle(env, task)
                assert ep.won and ep.invalid == 0 and ep.score == 1.0
                assert len(ep.actions) == task.param("length") + 1


def test_task_json_round_trip_and_errors():
    env = make_env("corridor")
    task = env.make_tasks("ood", 1, start=4, difficulty=2)[0]
    assert Task.from_json(task.to_json()) == task
    assert env.get_task(task.id) == task
    with pytest.raises(EnvError, match="unknown field"):
        Task.from_json({**task.to_json(), "colour": "red"})
    with pytest.raises(EnvError, match="missing field"):
        Task.from_json({"env": "corridor", "id": "x"})
    with pytest.raises(EnvError, match="SPLIT-dDIFFICULTY-INDEX"):
        env.get_task("train-7")
    with pytest.raises(EnvError, match="unknown split 'dev'"):
        env.make_tasks("dev", 1)
    with pytest.raises(EnvError, match="difficulty 9 not supported"):
        env.make_tasks("train", 1, difficulty=9)


def test_registry_errors_name_the_problem():
    with pytest.raises(EnvError, match="unknown environment 'nope'.*household"):
        make_env("nope")
    with pytest.raises(EnvError, match=r"unknown option\(s\) \['colour'\]"):
        make_env("corridor", colour="red")
    env = make_env("corridor")
    with pytest.raises(EnvError, match="belongs to environment 'household'"):
        env.reset(Task("household", "train-d1-0", "train", 0, "x"))
    with pytest.raises(EnvError, match="before reset"):
        make_env("corridor").step("go east")


def test_base_class_keeps_info_step_limit_and_done_latch():
    env = make_env("corridor", max_steps=3)
    task = env.make_tasks("train", 1, difficulty=2)[0]
    env.reset(task)
    obs, reward, done, info = env.step("fly")
    assert not info["valid"] and "can't 'fly'" in obs and not done
    assert set(info) >= {"valid", "score", "won", "lost", "truncated", "steps"}
    env.step("go east")
    obs, _, done, info = env.step("go east")
    assert done and info["truncated"] and "step limit of 3" in obs and info["steps"] == 3
    assert env.step("go east").observation == "The episode is over."


def test_snapshot_branch_equals_replay_branch():
    snap_env, replay_env = make_env("corridor"), ReplayCorridor()
    task = snap_env.make_tasks("train", 1, difficulty=2)[0]
    prefix = ["go east", "go east"]
    alts = ["go west", "go east", "jump", "open door"]
    a = branch(snap_env, task, prefix, alts)
    b = branch(replay_env, task, prefix, alts)
    assert [x.to_json() for x in a] == [x.to_json() for x in b]
    assert [x.info["valid"] for x in a] == [True, True, False, False]
    # snapshot branching leaves the environment at the branching state
    assert snap_env.steps == 2 and snap_env.pos == 2


def test_branch_trajectory_snapshot_and_replay_agree_with_single_branches():
    env, replay = make_env("corridor"), ReplayCorridor()
    task = env.make_tasks("test", 1, start=2)[0]
    ep = run_oracle(env, task)
    alts = [["go west", "open door"] for _ in ep.actions]
    fast = branch_trajectory(env, task, ep.actions, alts, ep.observations)
    slow = branch_trajectory(replay, task, ep.actions, alts)
    assert [[b.to_json() for b in row] for row in fast] == [[b.to_json() for b in row] for row in slow]
    for i in (0, len(ep.actions) - 1):
        assert [b.to_json() for b in branch(env, task, ep.actions[:i], alts[i])] == [b.to_json() for b in fast[i]]
    with pytest.raises(ValueError, match="one per action"):
        branch_trajectory(env, task, ep.actions, alts[:-1])


def test_nondeterminism_is_detected_with_the_step_named():
    env = FlakyCorridor()
    task = env.make_tasks("train", 1)[0]
    with pytest.raises(NondeterministicEnvError, match="'corridor'.*reset observation differs"):
        check_determinism(env, task, ["go east"])
    replay = type("FlakyReplay", (FlakyCorridor,), {"branching": "replay"})()
    with pytest.raises(NondeterministicEnvError):
        branch(replay, task, ["go east"], ["go east", "go west"])
    # recorded prefix observations that disagree with the environment are caught too
    good = make_env("corridor")
    obs = reach(good, task, ["go east"])
    with pytest.raises(NondeterministicEnvError, match="after prefix action 1"):
        branch(good, task, ["go east"], ["go west"], prefix_observations=[obs[0], "something else"])
    twice = ["go east", "go east"]
    assert check_determinism(good, task, twice) == check_determinism(good, task, twice)


def test_env_config_section_is_validated():
    from ee_jax.config import ConfigError, load_config

    cfg = load_config(None, ["env.name=household", "env.difficulty=2", "env.options.rooms=3"])
    assert cfg.env.name == "household" and cfg.env.options == {"rooms": 3}
    with pytest.raises(ConfigError, match="env.name='nope'"):
        load_config(None, ["env.name=nope"])
    with pytest.raises(ConfigError, match="env.difficulty=42"):
        load_config(None, ["env.difficulty=42"])
    with pytest.raises(ConfigError, match="env.pool_workers=-1"):
        load_config(None, ["env.pool_workers=-1"])
