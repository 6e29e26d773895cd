"""The built-in ``household`` environment: oracle, determinism, branching, splits, OOD, rules, observations."""

import collections
import os
import random
import subprocess
import sys
import time

import pytest

from ee_jax.envs import SPLITS, EnvError, Task, branch, check_determinism, check_env, make_env, run_oracle
from ee_jax.envs.base import observation_hash
from ee_jax.envs.worlds.household.world import (
    HELDOUT,
    ROOMS,
    Part,
    candidates,
    furnishing,
    generate,
    house,
    houses,
    prep,
)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture
def env():
    return make_env("household")


def _state(env):
    return (env.room, env.at, env.holding, dict(env.where), dict(env.status), dict(env.opened), env.lamp_on)


@pytest.mark.parametrize("difficulty", [1, 2, 3])
def test_oracle_wins_every_split(env, difficulty):
    for split in SPLITS:
        r = check_env(env, split, 30, difficulty=difficulty)
        assert r["oracle_success"] == 1.0, r["failed_tasks"]
        assert r["invalid_oracle_actions"] == 0
        assert 4 <= r["mean_steps"] <= 20 and r["max_steps"] <= 30
        assert 80 <= r["mean_obs_chars"] <= 400 and r["max_obs_chars"] < 600
        assert 8 <= r["mean_admissible"] <= 40


def test_difficulty_adds_rooms_receptacles_distractors_and_compound_goals():
    stats = {}
    for d in (1, 2, 3):
        worlds = [generate(s, "train", d) for s in range(200)]
        stats[d] = (max(len(w.rooms) for w in worlds), sum(len(w.room_of) for w in worlds) / 200,
                    sum(len(w.objects) for w in worlds) / 200, sum(len(w.parts) > 1 for w in worlds) / 200,
                    {p.type for w in worlds for p in w.parts})
    assert [stats[d][0] for d in (1, 2, 3)] == [1, 2, 3]
    assert stats[1][1] < stats[2][1] < stats[3][1] and stats[1][2] < stats[2][2] < stats[3][2]
    assert stats[1][3] == stats[2][3] == 0 and stats[3][3] > 0.3
    assert stats[1][4] == {"pick", "clean", "heat", "cool"}
    assert stats[2][4] == stats[1][4] | {"pick_two", "examine"}
    env = make_env("household")
    steps = [check_env(env, "test", 30, difficulty=d)["mean_steps"] for d in (1, 2, 3)]
    assert steps[0] < steps[2]


def test_oracle_wins_from_any_state_after_random_deviations(env):
    # nothing is irreversible (objects are never consumed or broken), so every state can still be won
    rng = random.Random(0)
    for d in (1, 2, 3):
        for task in env.make_tasks("train", 15, difficulty=d) + env.make_tasks("ood", 10, difficulty=d):
            env.reset(task)
            for _ in range(rng.randint(1, 8)):
                if not env.done:
                    env.step(rng.choice(env.admissible_actions()))
            while not env.done:
                action = env.oracle_action()
                assert action in env.admissible_actions(), (task.id, action)
                result = env.step(action)
                assert result.info["valid"]
            assert result.info["won"] and result.info["score"] == 1.0, (task.id, env.actions)


def test_every_admissible_action_is_valid(env):
    rng = random.Random(1)
    sizes = []
    for task in env.make_tasks("valid", 10, difficulty=3):
        env.reset(task)
        for _ in range(12):
            if env.done:
                break
            snap = env.snapshot()
            admissible = env.admissible_actions()
            sizes.append(len(admissible))
            assert len(set(admissible)) == len(admissible) and admissible[-2:] == ["inventory", "look"]
            for a in admissible:
                env.restore(snap)
                assert env.step(a).info["valid"], (task.id, a)
            env.restore(snap)
            env.step(rng.choice(admissible))
    assert min(sizes) >= 5 and max(sizes) <= 40


def test_determinism_snapshot_and_replay_agree(env):
    for d in (1, 2, 3):
        task = env.make_tasks("test", 1, start=d, difficulty=d)[0]
        ep = run_oracle(env, task)
        h = check_determinism(env, task, ep.actions)
        assert h == observation_hash(ep.observations)
        k = len(ep.actions) // 2
        env.reset(task)
        for a in ep.actions[:k]:
            env.step(a)
        alternatives = env.admissible_actions() + ["dance", "take nothing 1 from fridge 1"]
        got = branch(env, task, ep.actions[:k], alternatives, ep.observations[: k + 1])
        for b in got:  # the same alternative replayed by hand on a fresh instance
            fresh = make_env("household")
            fresh.reset(task)
            for a in ep.actions[:k]:
                fresh.step(a)
            obs, reward, done, info = fresh.step(b.action)
            assert (obs, reward, done, info) == (b.observation, b.reward, b.done, b.info)


_HASH_SCRIPT = """
from ee_jax.envs import make_env, run_oracle
from ee_jax.envs.base import observation_hash
env = make_env("household")
obs = []
for d in (1, 2, 3):
    for t in env.make_tasks("ood", 3, difficulty=d) + env.make_tasks("train", 3, difficulty=d):
        ep = run_oracle(env, t)
        obs += ep.observations + [t.goal, repr(t.params)] + env.admissible_actions()
print(observation_hash(obs))
"""


def test_same_observations_across_processes_and_hash_seeds():
    hashes = set()
    for seed in ("0", "12345"):
        out = subprocess.run([sys.executable, "-c", _HASH_SCRIPT], capture_output=True, text=True, cwd=ROOT,
                             env={**os.environ, "PYTHONHASHSEED": seed, "PYTHONPATH": ROOT}, check=True)
        hashes.add(out.stdout.strip())
    assert len(hashes) == 1 and len(hashes.pop()) == 16


def test_make_tasks_is_deterministic_and_ids_round_trip(env):
    a = env.make_tasks("train", 5, start=3, difficulty=2)
    assert a == env.make_tasks("train", 5, start=3, difficulty=2)
    assert [t.id for t in a] == [f"train-d2-{i}" for i in range(3, 8)]
    assert len({t.seed for t in a}) == 5 and len({(t.goal, t.params) for t in a}) == 5
    for t in a + env.make_tasks("ood", 2, difficulty=3):
        assert env.get_task(t.id) == t and Task.from_json(t.to_json()) == t
    assert env.make_tasks("train", 1)[0].difficulty == 1 == env.default_difficulty
    assert env.make_tasks("valid", 3, difficulty=1) != env.make_tasks("test", 3, difficulty=1)


def test_bad_split_difficulty_and_mismatched_task_raise(env):
    with pytest.raises(EnvError, match="split"):
        env.make_tasks("dev", 1)
    with pytest.raises(EnvError, match="difficulty"):
        env.make_tasks("train", 1, difficulty=4)
    with pytest.raises(EnvError):
        env.get_task("train-d9-0")
    with pytest.raises(EnvError, match="unknown option"):
        make_env("household", rooms=3)
    t = env.make_tasks("train", 1)[0]
    with pytest.raises(EnvError, match="goal"):
        env.reset(Task(env="household", id=t.id, split="train", seed=t.seed, goal="win"))


def _combos(env, split, n):
    return collections.Counter(tuple(c.split("/")) for d in (1, 2, 3)
                               for t in env.make_tasks(split, n, difficulty=d) for c in t.param("combos").split(";"))


def test_ood_compositions_are_held_out(env):
    heldout = set(HELDOUT)
    seen = {s: _combos(env, s, 100) for s in SPLITS}
    for split in ("train", "valid", "test"):
        assert not set(seen[split]) & heldout, split
    assert set(seen["ood"]) == heldout  # every held-out triple is generated, and nothing else
    # exhaustively: every house the non-ood splits can build offers no held-out triple, and the ood
    # houses offer only held-out ones; each held-out triple's type, object and target occur in train
    universe = {False: set(), True: set()}
    for ood in (False, True):
        for d in (1, 2, 3):
            for plan, variants in houses(d, ood):
                _, room_of, lamp = house(plan, variants, d)
                universe[ood] |= {Part(*c).combo for c in candidates(room_of, lamp, ood)}
    assert not universe[False] & heldout and universe[True] == heldout
    assert set(seen["train"]) <= universe[False] and len(universe[False]) > 10 * len(heldout)
    for triple in HELDOUT:
        for i in range(3):
            assert any(c[i] == triple[i] for c in universe[False]), triple


def test_ood_layouts_are_unseen(env):
    layouts, variants = {}, {}
    for split in SPLITS:
        tasks = [t for d in (1, 2, 3) for t in env.make_tasks(split, 120, difficulty=d)]
        layouts[split] = {t.param("layout") for t in tasks}
        variants[split] = {v for t in tasks for v in t.param("variants").split(",")}
    assert not layouts["ood"] & (layouts["train"] | layouts["valid"] | layouts["test"])
    assert all("=ood" in v for v in variants["ood"])
    assert not any("=ood" in v for s in ("train", "valid", "test") for v in variants[s])
    # the reserved furnishings differ from every training furnishing as receptacle multisets
    for room, table in ROOMS.items():
        for d in (1, 2, 3):
            train = {tuple(sorted(furnishing(room, v, d))) for v in table if not v.startswith("ood")}
            for v in table:
                if v.startswith("ood"):
                    assert tuple(sorted(furnishing(room, v, d))) not in train, (room, v, d)
    # difficulty 3: the kitchen is a hub only in ood floor plans
    assert all(generate(s, "ood", 3).ood_plan for s in range(30))
    assert not any(generate(s, s_, 3).ood_plan for s in range(30) for s_ in ("train", "test"))


def test_invalid_actions_explain_and_leave_state_unchanged(env):
    task = env.make_tasks("train", 1, start=2, difficulty=2)[0]
    env.reset(task)
    far = next(r for r, room in env.world.room_of.items() if room != env.room)
    here = [r for r, room in env.world.room_of.items() if room == env.room]
    closed = next(r for r in here if r in env.opened)
    cases = {
        "dance": "not an action", f"go to {far}": f"is in the {env.world.room_of[far]}",
        "go to moon 1": "From here you can go to", f"open {closed}": "Go to the",
        f"take mug 7 from {closed}": "not at", "put apple 1 in fridge 1": "not carrying",
        "heat apple 1 with microwave 1": "not carrying", "use desklamp 1": "",
        "examine unicorn 1": "do not see",
    }
    for action, words in cases.items():
        before, score = _state(env), env.score
        obs, reward, done, info = env.step(action)
        assert not info["valid"] and reward == 0 and not done, action
        assert obs.startswith("Nothing happens") and words in obs and len(obs) < 600, (action, obs)
        assert _state(env) == before and info["score"] == score
    # at a closed receptacle that holds something: its objects cannot be taken until it is opened
    task = next(t for t in env.make_tasks("train", 20) if any(
        r in generate(t.seed, "train", 1).start.values() for r in ("fridge 1", "cabinet 1")))
    env.reset(task)
    box = next(r for r in ("fridge 1", "cabinet 1") if r in env.where.values())
    obj = next(o for o, r in env.where.items() if r == box)
    assert env.step(f"go to {box}").observation == f"You arrive at {box}. The {box} is closed."
    before = _state(env)
    obs, _, _, info = env.step(f"take {obj} from {box}")
    assert not info["valid"] and "closed; open it first" in obs and _state(env) == before
    assert f"take {obj} from {box}" not in env.admissible_actions()
    obs = env.step(f"open {box}").observation
    assert obs.startswith(f"You open the {box}. The {box} is open. In it, you see ") and f" {obj}" in obs
    assert env.step(f"take {obj} from {box}").info["valid"] and env.holding == obj
    obs, _, _, info = env.step(f"take {obj} from {box}")
    assert not info["valid"] and "no " + obj in obs


def test_step_limit_truncates(env):
    small = make_env("household", max_steps=3)
    task = small.make_tasks("train", 1)[0]
    small.reset(task)
    infos = [small.step("look").info for _ in range(3)]
    assert [i["truncated"] for i in infos] == [False, False, True] and small.done
    assert small.step("look").observation == "The episode is over."
    assert env.max_steps == env.default_max_steps == 50


def test_rewards_sum_to_score_and_partial_progress(env):
    for d in (1, 2, 3):
        for task in env.make_tasks("test", 10, difficulty=d):
            ep = run_oracle(env, task)
            assert abs(sum(ep.rewards) - 1.0) < 1e-9 and ep.won
            assert all(r >= 0 for r in ep.rewards) and sum(r > 0 for r in ep.rewards) >= 2


def test_appliances_and_score_semantics(env):
    task = next(t for t in env.make_tasks("train", 40) if t.param("type") == "heat")
    target = generate(task.seed, "train", 1).parts[0].target
    ep = run_oracle(env, task)
    i = next(i for i, a in enumerate(ep.actions) if a.startswith("take"))
    env.reset(task)
    for a in ep.actions[: i + 1]:
        env.step(a)
    obj = env.holding
    assert env.score == pytest.approx(1 / 3)  # carrying the right kind of object
    assert "nothing special" in env.step(f"examine {obj}").observation
    assert "cannot" in env.step(f"clean {obj} with microwave 1").observation or env.at != "microwave 1"
    env.step("go to fridge 1")
    obs, reward, _, info = env.step(f"cool {obj} with fridge 1")
    assert info["valid"] and obs.endswith(f"The {obj} is now cool.") and reward == 0
    env.step("go to microwave 1")
    obs, reward, _, info = env.step(f"heat {obj} with microwave 1")
    assert env.status[obj] == "hot" and reward == pytest.approx(1 / 3)  # heating undoes cooling
    assert env.step("inventory").observation == f"You are carrying: {'an' if obj[0] in 'aeiou' else 'a'} {obj} (hot)."
    # put it down somewhere other than the target: the carrying credit is lost (negative reward)
    spot = next(r for r in env._here() if r != target and r not in env.opened)
    env.step(f"go to {spot}")
    put = next(a for a in env.admissible_actions() if a.startswith("put"))
    obs, reward, _, info = env.step(put)
    assert info["valid"] and reward == pytest.approx(-1 / 3) and info["score"] == pytest.approx(1 / 3)
    assert obs.startswith(f"You put the {obj} ")
    while not env.done:
        info = env.step(env.oracle_action()).info
    assert info["won"] and env.where[obj] == target


def test_examine_in_light_and_pick_two(env):
    tasks = env.make_tasks("train", 60, difficulty=2)
    for type_ in ("examine", "pick_two"):
        task = next(t for t in tasks if t.param("type") == type_)
        ep = run_oracle(env, task)
        assert ep.won
        if type_ == "examine":
            assert ep.actions[-1] == "use desklamp 1" and "look at the" in task.goal
            assert "You turn on the desklamp 1." in ep.observations[-1]
        else:
            assert sum(a.startswith("put") for a in ep.actions) == 2 and "put two" in task.goal
            assert [round(s, 2) for s in _scores(ep.rewards)] == [0.25, 0.5, 0.75, 1.0]


def _scores(rewards):
    total, out = 0.0, []
    for r in rewards:
        if r:
            total += r
            out.append(total)
    return out


def test_observations_read_naturally(env):
    task = env.make_tasks("train", 1, start=5, difficulty=1)[0]
    obs = env.reset(task)
    assert obs.startswith("You are in the kitchen. Looking quickly around you, you see a ")
    assert obs.endswith(f"Your task is to: {task.goal}.") and 100 <= len(obs) <= 400
    ep = run_oracle(env, task)
    arrivals = [o for a, o in zip(ep.actions, ep.observations[1:]) if a.startswith("go to")]
    assert arrivals and all(o.startswith("You arrive at ") for o in arrivals)
    for o in arrivals:
        assert " is closed." in o or ", you see " in o
    look = env.step("look").observation if not env.done else ""
    assert look == ""  # the oracle finished the episode
    d3 = [len(env.reset(t)) for t in env.make_tasks("train", 50, difficulty=3)]
    assert max(d3) < 600


def test_snapshot_is_cheap_and_complete(env):
    task = env.make_tasks("train", 1, difficulty=3)[0]
    ep = run_oracle(env, task)
    env.reset(task)
    for a in ep.actions[:3]:
        env.step(a)
    snap, before = env.snapshot(), _state(env)
    for a in ep.actions[3:]:
        env.step(a)
    assert env.done
    env.restore(snap)
    assert _state(env) == before and not env.done and env.steps == 3
    fresh = make_env("household")
    fresh.restore(snap)  # a snapshot carries the world too: restoring into a fresh instance works
    assert fresh.admissible_actions() == env.admissible_actions() and fresh.oracle_action() == ep.actions[3]
    t0 = time.perf_counter()
    for _ in range(500):
        env.restore(env.snapshot())
    assert (time.perf_counter() - t0) / 500 < 1e-3


def test_registry_metadata():
    cls = type(make_env("household"))
    d = cls.describe()
    assert d["name"] == "household" and d["branching"] == "snapshot" and d["oracle"] == "state"
    assert d["action_space"] == "closed" and d["difficulties"] == [1, 2, 3] and len(cls.description) > 50


def test_visible_option_puts_the_state_in_every_observation_and_changes_nothing_else():
    """``visible``: every observation ends with where each object of the room lies (closed receptacles
    too) and what the agent carries, so the expert's moves can be read off it; goals, actions, rewards
    and the oracle are unchanged."""
    plain, seen = make_env("household"), make_env("household", visible=True)
    for t in plain.make_tasks("train", 6, difficulty=2) + plain.make_tasks("ood", 2, difficulty=3):
        first, obs = plain.reset(t), seen.reset(t)
        head, goal = first.split(" Your task is to:")
        assert obs.startswith(head + " ") and obs.endswith(" You are not carrying anything. Your task is to:" + goal)
        for o, r in seen.world.start.items():  # every object of the start room, at its true place
            here = seen.world.room_of[r] == seen.room
            assert (f"The {o} is {prep(r)} the {r}." in obs) == here and (f"The {o} is" in obs) == here
        while (a := plain.oracle_action()) is not None:
            assert seen.oracle_action() == a and seen.admissible_actions() == plain.admissible_actions()
            ra, rb = plain.step(a), seen.step(a)
            assert (ra.reward, ra.done, ra.info["won"]) == (rb.reward, rb.done, rb.info["won"])
            assert rb.observation.startswith(ra.observation) and rb.observation.endswith(seen._carrying())
            if a.startswith("take "):  # the held object is carried, no longer anywhere in the room
                held = a.split(" from ")[0].removeprefix("take ")
                assert f"The {held} is" not in rb.observation and rb.observation.endswith(f" {held}.")
        assert rb.info["won"]
    with pytest.raises(EnvError, match="visible"):
        make_env("household", visible="yes")
