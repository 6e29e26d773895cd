"""TextWorldExpress adapter: splits and ids, oracle on every game, OOD, stored gold across JVMs,
invalid actions, replay branching, JVM options and clean shutdown."""

import os
import re
import shutil
import subprocess

import pytest

from ee_jax.envs import SPLITS, EnvError, Task, branch, check_determinism, make_env, observation_hash, reach, run_oracle
from tests.conftest import require

pytestmark = pytest.mark.envs

GAMES = ("cookingworld", "twc", "coin", "mapreader", "arithmetic", "sorting", "simonsays", "peckingorder")


def _java_children() -> list[str]:
    """Command lines of this process's child JVMs running the TWX jar."""
    out = subprocess.run(["pgrep", "-a", "-P", str(os.getpid())], capture_output=True, text=True).stdout
    return [line for line in out.splitlines() if "textworld-express.jar" in line]


@pytest.fixture(scope="module")
def env():
    require("textworld_express")
    if shutil.which("java") is None and os.environ.get("CI", "").lower() not in ("1", "true", "yes"):
        pytest.skip("java is not on PATH")
    e = make_env("twx")
    yield e
    e.close()
    assert _java_children() == []


@pytest.fixture(scope="module")
def tasks(env):
    """One task per game (difficulty 1) for every split: 8 x 4 = 32 tasks."""
    return {split: env.make_tasks(split, len(GAMES), difficulty=1) for split in SPLITS}


def _texts(env, task):
    """Every observation and admissible action along the task's gold path."""
    out = [env.reset(task)] + env.admissible_actions()
    for a in task.gold:
        r = env.step(a)
        out += [r.observation] + env.admissible_actions()
    return out


def test_task_ids_seeds_and_params(env, tasks):
    first_seed = {"train": 0, "valid": 800, "test": 900, "ood": 20000}
    for split, ts in tasks.items():
        assert [t.id for t in ts] == [f"{g}-{split}-d1-0" for g in GAMES]
        for t in ts:
            assert t.seed == first_seed[split] and t.param("fold") == ("test" if split == "ood" else "train")
            assert t.goal and t.gold
    t = env.make_tasks("valid", 1, start=len(GAMES) * 3 + 2)[0]  # round-robin: game 2, per-game index 3
    assert (t.id, t.seed, t.param("game")) == ("coin-valid-d1-3", 803, "coin")
    again = env.get_task("coin-valid-d1-3")
    assert (again.seed, again.params, again.goal) == (t.seed, t.params, t.goal)
    assert re.fullmatch(r"includeDoors=0,numDistractorItems=0,numLocations=[234]", t.param("game_params"))
    d3 = env.get_task("cookingworld-train-d3-4").param("game_params")
    assert int(re.search(r"numLocations=(\d+)", d3).group(1)) >= 7
    single = make_env("twx", games="sorting")
    assert [t.id for t in single.make_tasks("test", 2)] == ["sorting-test-d1-0", "sorting-test-d1-1"]
    single.close()
    for bad in ("cookingworld-train-5", "chess-train-d1-0", "coin-dev-d1-0"):
        with pytest.raises(EnvError, match="GAME-SPLIT"):
            env.get_task(bad)
    with pytest.raises(EnvError, match="100 tasks per game"):
        env.get_task("coin-test-d1-100")
    with pytest.raises(EnvError, match="difficulty"):
        env.get_task("coin-test-d4-1")
    with pytest.raises(EnvError, match="unknown game"):
        make_env("twx", games=["chess"])
    with pytest.raises(EnvError, match="unknown option"):
        make_env("twx", bogus=1)


def test_oracle_wins_every_game_and_split(env, tasks):
    for ts in tasks.values():
        for t in ts:
            ep = run_oracle(env, t)
            assert ep.won and ep.score == 1.0 and ep.invalid == 0, (t.id, ep.actions, ep.observations[-1])
            assert len(ep.actions) == len(t.gold)
            assert abs(sum(ep.rewards) - ep.score) < 1e-9
            assert all(c > 0 for c in ep.admissible_counts)


def test_ood_is_held_out(env, tasks):
    # cookingworld and coin: doors only in ood; their TWX test fold has no new vocabulary
    for g in ("cookingworld", "coin"):
        for split in SPLITS:
            t = env.get_task(f"{g}-{split}-d1-1")
            has_door = any("door" in s for s in _texts(env, t))
            assert has_door == (split == "ood"), (t.id, t.param("game_params"))
    # twc: the objects to put away never overlap between the TWX train and test folds
    def objects(split):
        return {a[5:] for i in range(4) for a in env.get_task(f"twc-{split}-d2-{i}").gold if a.startswith("take ")}
    train, ood = objects("train"), objects("ood")
    assert train and ood and not train & ood


def test_stored_gold_replays_in_a_new_jvm(env, tasks):
    chosen = [t for split in ("train", "ood") for t in tasks[split] if t.param("game") in ("coin", "cookingworld")]
    expected = {t.id: observation_hash(reach(env, t, list(t.gold))) for t in chosen}
    other = make_env("twx")
    try:
        for t in chosen:
            t2 = Task.from_json(t.to_json())  # as stored on disk
            ep = run_oracle(other, t2)
            assert ep.won, t.id
            assert observation_hash(ep.observations) == expected[t.id]
        assert other.java.pid != env.java.pid
    finally:
        other.close()


def test_searched_expert_is_reproducible_and_shortest(env, tasks):
    from ee_jax.envs.adapters.twx import SEARCH_GAMES

    searched = [t for ts in tasks.values() for t in ts if t.param("game") in SEARCH_GAMES]
    assert len(searched) == 12 and {t.param("expert") for t in searched} == {"search"}
    assert {t.param("expert") for ts in tasks.values() for t in ts if t not in searched} == {"twx"}
    other = make_env("twx")  # another JVM: TWX's own gold would differ here on most coin tasks
    twx_gold = make_env("twx", expert="twx")
    try:
        assert [other.get_task(t.id).gold for t in searched] == [t.gold for t in searched]
        for t in searched:  # TWX's random-walk gold is never shorter than the search's path
            assert len(twx_gold.get_task(t.id).gold) >= len(t.gold), t.id
            assert twx_gold.get_task(t.id).param("expert") == "twx"
    finally:
        other.close()
        twx_gold.close()
    # over the state budget the search gives way to TWX's gold (recorded in the task)
    far = next(t for t in searched if t.param("game") == "coin" and len(t.gold) > 1)
    tight = make_env("twx", games="coin", search_states=1)
    try:
        fallback = tight.get_task(far.id)
        assert fallback.param("expert") == "twx" and run_oracle(tight, fallback).won
    finally:
        tight.close()
    for bad, match in (({"expert": "bfs"}, "expert='bfs'"), ({"search_states": 0}, "search_states=0")):
        with pytest.raises(EnvError, match=match):
            make_env("twx", **bad)


def test_invalid_action_changes_nothing(env, tasks):
    t = tasks["train"][0]  # cookingworld
    env.reset(t)
    before = env.admissible_actions()
    r = env.step("fly to the moon")
    assert not r.info["valid"] and r.observation.startswith("Unknown action") and r.reward == 0 and not r.done
    assert env.admissible_actions() == before
    for a in t.gold:  # the gold path still wins after the no-op
        r = env.step(a)
    assert r.info["won"] and r.done
    assert env.admissible_actions() == []
    assert env.step("look around").observation == "The episode is over."


def test_task_generation_mid_episode_keeps_the_episode(env, tasks):
    t = tasks["valid"][0]
    env.reset(t)
    for a in t.gold[:3]:
        env.step(a)
    before = env.admissible_actions()
    env.make_tasks("ood", 2, start=40, difficulty=3)  # loads other games in the same JVM
    assert env.admissible_actions() == before
    for a in t.gold[3:]:
        r = env.step(a)
        if r.done:
            break
    assert r.info["won"]


def test_no_step_limit_below_ours(env, tasks):
    t = tasks["train"][2]  # coin
    env.reset(t)
    for _ in range(120):  # TWX's own wrapper would stop at 100
        r = env.step("inventory")
    assert not r.done and r.info["steps"] == 120 and env.max_steps == 150
    short = make_env("twx", max_steps=3)
    short.reset(t)
    results = [short.step("inventory") for _ in range(3)]
    assert [x.info["truncated"] for x in results] == [False, False, True] and results[-1].done
    short.close()


def test_branching_is_deterministic(env, tasks):
    t = tasks["train"][0]  # cookingworld
    prefix = list(t.gold[:4])
    reach(env, t, prefix)
    alternatives = [a for a in env.admissible_actions() if a != t.gold[4]][:8]
    assert len(alternatives) == 8
    first = branch(env, t, prefix, alternatives)
    second = branch(env, t, prefix, alternatives)
    assert [b.observation for b in first] == [b.observation for b in second]
    assert len({b.observation for b in first}) > 1  # the alternatives lead to different places
    assert all(b.info["valid"] for b in first)
    h = check_determinism(env, t, list(t.gold[:6]), repeats=3)
    assert h == check_determinism(env, t, list(t.gold[:6]))


def test_heap_option_and_close(tasks):
    e = make_env("twx", java_heap_mb=256, games="arithmetic")
    assert e.java.pid is None  # lazy: no JVM yet
    t = e.make_tasks("train", 1)[0]
    pid = e.java.pid
    with open(f"/proc/{pid}/cmdline", "rb") as f:
        cmdline = f.read().split(b"\0")
    assert b"-Xmx256m" in cmdline and e.java.max_heap_mb() <= 256
    assert run_oracle(e, t).won
    e.close()
    assert not os.path.exists(f"/proc/{pid}") and e.java.pid is None
    e.close()  # idempotent
    assert run_oracle(e, t).won  # a closed env starts a fresh JVM on demand
    e.close()
    with pytest.raises(EnvError, match="too small"):
        make_env("twx", java_heap_mb=8)
