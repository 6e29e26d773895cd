"""TextWorld adapter: generation + cache, splits, oracle, deviations, snapshot branching, determinism."""

import json
import os
import random
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ee_jax.envs import SPLITS, EnvError, branch, check_determinism, make_env, observation_hash, reach, run_oracle
from tests.conftest import require

pytestmark = pytest.mark.envs

N_PER_SPLIT = 2


@pytest.fixture(scope="module")
def game_dir(tmp_path_factory):
    require("textworld")
    return tmp_path_factory.mktemp("textworld_games")


@pytest.fixture(scope="module")
def env(game_dir):
    e = make_env("textworld", game_dir=str(game_dir))
    yield e
    e.close()


@pytest.fixture(scope="module")
def tasks(env):
    return {split: env.make_tasks(split, N_PER_SPLIT, difficulty=1) for split in SPLITS}


def _ingredients(env, task):
    from ee_jax.envs.adapters.textworld import load_meta

    return load_meta(env.game_folder(task))["ingredients"]


def test_oracle_wins_every_split(env, tasks):
    from ee_jax.envs.adapters.textworld import is_held_out, train_preparations

    table = train_preparations()
    for split, ts in tasks.items():
        for task in ts:
            assert task.id.startswith(f"{split}-d1-") and task.params[1] == ("kind", "cooking")
            assert task.goal.startswith("You are hungry!") and 4 <= len(task.gold) <= 8
            ep = run_oracle(env, task)
            assert ep.won and ep.score == 1.0 and ep.invalid == 0, (task.id, ep.actions)
            assert 3 <= len(ep.actions) <= 6 and ep.actions[-2:] == ["prepare meal", "eat meal"]
            assert "examine cookbook" in ep.actions  # the oracle reads the recipe before cooking
            assert abs(sum(ep.rewards) - 1.0) < 1e-9
            first = ep.observations[0]
            assert first.startswith(task.goal) and "-= Kitchen =-" in first and "$$" not in first
            for obs in ep.observations:
                assert obs == obs.strip() and not obs.endswith(">") and "RESTART" not in obs and "\n\n" not in obs
                assert 10 <= len(obs) <= 1500
            assert "*** The End ***" in ep.observations[-1]
            ingredients = _ingredients(env, task)
            if split == "ood":  # held out: no train/valid/test recipe can contain these ingredients
                assert is_held_out(ingredients), ingredients
            else:
                assert all((c, k) in table[f] for f, c, k in ingredients), ingredients
    # different seeds give different games
    assert len({t.params[0][1] for ts in tasks.values() for t in ts}) == len(SPLITS) * N_PER_SPLIT


def test_deviation_then_oracle_recovers(env, tasks):
    trials = wins = 0
    for ts in tasks.values():
        for task in ts:
            ep = run_oracle(env, task)
            for trial in range(2):
                rng = random.Random(f"{task.id}/{trial}")
                k = rng.randrange(len(ep.actions))
                reach(env, task, ep.actions[:k])
                r = env.step(rng.choice([a for a in env.admissible_actions() if a != ep.actions[k]]))
                assert r.info["valid"]
                while not env.done and env.oracle_action() is not None:
                    r = env.step(env.oracle_action())
                trials += 1
                wins += r.info["won"]
                # the only failures are irreversible losses (eating an ingredient, wrong cooking)
                assert r.info["won"] or r.info["lost"], (task.id, env.actions)
    assert wins / trials >= 0.7, (wins, trials)


def test_invalid_action_leaves_state_unchanged(env, tasks):
    task = tasks["train"][0]
    env.reset(task)
    before = (env.admissible_actions(), env.oracle_action())
    r = env.step("fly to the moon")
    assert not r.info["valid"] and r.reward == 0.0 and not r.done and r.info["score"] == 0.0
    assert "not possible" in r.observation and before[0][0] in r.observation
    assert (env.admissible_actions(), env.oracle_action()) == before
    assert env.step(before[1].upper()).info["valid"]  # case-insensitive match to the admissible command


def test_snapshot_branching_matches_replay(env, tasks):
    task = tasks["valid"][0]
    ep = run_oracle(env, task)
    prefix = ep.actions[:2]
    reach(env, task, prefix)
    alts = env.admissible_actions()[:8]
    first = branch(env, task, prefix, alts, ep.observations[:3])
    second = branch(env, task, prefix, alts)
    assert [b.to_json() for b in first] == [b.to_json() for b in second]
    expected = []
    for b in first:  # the same branch reached by reset + replay, without any snapshot
        reach(env, task, prefix)
        r = env.step(b.action)
        assert (r.observation, r.reward, r.done, r.info) == (b.observation, b.reward, b.done, b.info)
        expected.append((env.admissible_actions(), env.oracle_action()))
    reach(env, task, prefix)
    snap = env.snapshot()
    for b, want in zip(first, expected):  # one snapshot restored before every alternative
        env.restore(snap)
        env.step(b.action)
        assert (env.admissible_actions(), env.oracle_action()) == want, b.action
    env.restore(snap)
    assert env.actions == prefix and env.steps == 2
    h = check_determinism(env, task, ep.actions)
    assert h == check_determinism(env, task, ep.actions) == observation_hash(ep.observations)
    # restoring a snapshot of another game switches the game back
    reach(env, task, prefix)
    snap = env.snapshot()
    env.reset(tasks["test"][0])
    env.restore(snap)
    assert env.task == task and env.step(ep.actions[2]).observation == ep.observations[3]


def test_cache_reuse_and_atomic_writes(env, game_dir, tasks):
    folders = sorted(p for p in Path(game_dir).iterdir())
    assert len(folders) == len(SPLITS) * N_PER_SPLIT
    assert not [p for p in folders if p.name.startswith(".tmp")]
    for p in folders:
        assert {"game.z8", "game.json", "meta.json"} <= {f.name for f in p.iterdir()}
    mtimes = {p: (p / "game.z8").stat().st_mtime_ns for p in folders}
    t0 = time.perf_counter()
    again = {split: env.make_tasks(split, N_PER_SPLIT, difficulty=1) for split in SPLITS}
    assert time.perf_counter() - t0 < 0.5  # generation costs ~1 s per game
    assert again == tasks
    assert {p: (p / "game.z8").stat().st_mtime_ns for p in folders} == mtimes
    assert env.get_task("ood-d1-1") == tasks["ood"][1]


def test_interrupted_generation_leaves_nothing(tmp_path, monkeypatch):
    require("textworld")
    from ee_jax.envs.adapters import textworld as tw

    def boom(folder, *args):
        (folder / "game.z8").write_bytes(b"partial")
        raise KeyboardInterrupt

    monkeypatch.setattr(tw, "_generate_into", boom)
    with pytest.raises(KeyboardInterrupt):
        tw.ensure_game(tmp_path, "train", 1, 7)
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(EnvError, match="difficulty 4"):
        make_env("textworld", game_dir=str(tmp_path)).make_tasks("train", 1, difficulty=4)


_FRESH = """
import json, sys
from ee_jax.envs import make_env, run_oracle
env = make_env("textworld", game_dir=sys.argv[1])
task = env.make_tasks("train", 1, difficulty=1)[0]
ep = run_oracle(env, task)
print(json.dumps([task.to_json(), ep.actions, ep.observations]))
"""


def test_fresh_process_generates_the_same_game(env, tasks, tmp_path):
    """Same seed, new cache, new process, another PYTHONHASHSEED: same task and observations (the .z8
    bytes differ with the hash seed, so observations are compared)."""
    root = Path(__file__).resolve().parents[1]
    proc = subprocess.run([sys.executable, "-c", _FRESH, str(tmp_path)], cwd=root, capture_output=True, text=True,
                          env={**os.environ, "PYTHONHASHSEED": "12345", "PYTHONPATH": str(root)}, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    task_json, actions, observations = json.loads(proc.stdout.strip().splitlines()[-1])
    task = tasks["train"][0]
    ep = run_oracle(env, task)
    assert task_json == task.to_json()
    assert (actions, observations) == (ep.actions, ep.observations)
