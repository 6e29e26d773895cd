"""The built-in ``travel`` environment: oracle, constraints, determinism, splits, invalid actions."""

import os
import random
import subprocess
import sys
import time

import pytest

from ee_jax.envs import SPLITS, EnvError, branch, check_determinism, check_env, make_env, observation_hash, run_oracle
from ee_jax.envs.base import Task
from ee_jax.envs.worlds.travel import catalog as tc
from ee_jax.envs.worlds.travel.catalog import COMMONSENSE, LEVELS, OOD_PAIR, analyze, evaluate, generate

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ORACLE_STEPS = {1: 13, 2: 23, 3: 33}  # views + sets + submit: the oracle's path length is fixed per difficulty


@pytest.fixture
def env():
    return make_env("travel")


@pytest.mark.parametrize("split", SPLITS)
def test_oracle_wins_every_split_and_difficulty(env, split):
    for d in (1, 2, 3):
        r = check_env(env, split, 25, difficulty=d)
        assert r["oracle_success"] == 1.0, r["failed_tasks"]
        assert r["invalid_oracle_actions"] == 0
        assert r["mean_steps"] == ORACLE_STEPS[d] == r["max_steps"]
        assert 100 <= r["mean_obs_chars"] <= 400 and r["max_obs_chars"] < 600, r
        assert 5 <= r["mean_admissible"] <= 40, r


def test_submit_info_of_oracle_plan(env):
    task = env.make_tasks("test", 1, difficulty=3)[0]
    ep = run_oracle(env, task)
    assert ep.actions[-1] == "submit plan" and ep.won and ep.score == 1.0 and sum(ep.rewards) == 1.0
    assert ep.rewards[:-1] == [0.0] * (len(ep.rewards) - 1)  # reward only on submit
    info = env.step("view transport day 1").info  # the episode is over: nothing changes
    assert not info["valid"] and env.done
    res = evaluate(env.world, env.plan)
    assert len(res) == len(COMMONSENSE) + 5 and all(res.values())  # d3: budget + 4 hard constraints


def _replay(env, task, actions):
    env.reset(task)
    out = None
    for a in actions:
        out = env.step(a)
        assert out.info["valid"], (a, out.observation)
    return out


def test_violation_scores_and_rates(env):
    """A complete oracle plan with one restaurant repeated fails exactly `diverse_restaurants` among
    the commonsense constraints; score, reward and micro/macro rates follow from the failures."""
    for task in env.make_tasks("valid", 8, difficulty=2):
        actions = run_oracle(env, task).actions[:-1]  # everything but the submit
        _replay(env, task, actions)
        w = env.world
        city = w.cities[-1]
        meals = [s for s in w.slots if s[1] in ("lunch", "dinner") and w.day_city[s[0]] == city]
        (d0, k0), (d1, k1) = meals[0], meals[-1]
        for a in (f"clear day {d1} {k1}", f"view restaurants {city}", f"set day {d1} {k1} {env.plan[(d0, k0)]}"):
            obs, _, _, info = env.step(a)
            assert info["valid"], obs
        assert "Note:" in obs and "already booked" in obs
        obs, reward, done, info = env.step("submit plan")
        assert done and info["valid"] and not info["won"] and info["lost"] and not info["final_pass"]
        assert "diverse_restaurants" in info["failed"] and info["commonsense_micro"] == pytest.approx(4 / 5)
        assert info["commonsense_macro"] == 0.0
        n_hard = len(w.hard) + 1
        sat = 4 + info["hard_micro"] * n_hard
        assert info["score"] == pytest.approx(sat / (5 + n_hard)) == reward
        assert info["hard_macro"] == float(info["hard_micro"] == 1.0)
        assert env.step("submit plan").observation == "The episode is over."


def test_empty_submit_scores_zero(env):
    env.reset(env.make_tasks("train", 1)[0])
    obs, reward, done, info = env.step("submit plan")
    assert done and reward == 0.0 and info["score"] == 0.0 and info["lost"] and info["hard_macro"] == 0.0
    assert "complete" in info["failed"] and "Failed:" in obs


def test_oracle_recovers_after_random_deviations():
    """Every action but ``submit plan`` can be undone, so from any state reached by random admissible
    actions the oracle (clearing what cannot be completed, then filling) still wins."""
    env = make_env("travel", max_steps=200)
    rng = random.Random(7)
    clears = 0
    for split in ("train", "ood"):
        for d in (1, 2, 3):
            for task in env.make_tasks(split, 12, difficulty=d):
                env.reset(task)
                for _ in range(rng.randint(1, 40)):
                    acts = [a for a in env.admissible_actions() if a != "submit plan"]
                    sets = [a for a in acts if a.startswith("set")]
                    info = env.step(rng.choice(sets if sets and rng.random() < 0.6 else acts)).info
                    assert info["valid"]
                while not env.done:
                    a = env.oracle_action()
                    clears += a.startswith("clear")
                    info = env.step(a).info
                    assert info["valid"], a
                assert info["won"], task.id
    assert clears > 20  # the deviations did make plans infeasible and the oracle repaired them


def test_oracle_clears_a_faulty_choice_first(env):
    task = env.make_tasks("train", 1, difficulty=2)[0]
    env.reset(task)
    w = env.world
    wrong = next(t for t in w.transport_by_day[1] if t.dst != w.cities[0])
    env.step("view transport day 1")
    obs = env.step(f"set day 1 transport {wrong.id}").observation
    assert f"it goes to {wrong.dst}, but your next stop is {w.cities[0]}" in obs
    assert not analyze(w, env.plan).feasible
    assert env.oracle_action() == "clear day 1 transport"
    # with good choices made before it, the faulty one (not the first slot) is what gets cleared
    actions = run_oracle(env, task).actions
    _replay(env, task, actions[: len(actions) // 2])
    last = w.days
    wrong = next(t for t in w.transport_by_day[last] if t.dst != w.origin)
    for a in (f"view transport day {last}", f"set day {last} transport {wrong.id}"):
        env.step(a)
    assert len(env.plan) > 5 and env.oracle_action() == f"clear day {last} transport"


def test_oracle_clears_the_overspend(env):
    """Over budget with every choice compliant: the clear that saves most is the one swapped in."""
    found = 0
    for task in env.make_tasks("test", 10, difficulty=3):
        actions = run_oracle(env, task).actions[:-1]
        _replay(env, task, actions)
        w = env.world
        slack = w.budget - w.plan_cost(env.plan)
        for d in w.route:
            dear = max((t for t in w.transport_by_day[d] if not w.faults((d, "transport"), t.id)),
                       key=lambda t: t.price)
            if (dear.price - w.items[env.plan[(d, "transport")]].price) * w.people > slack:
                for a in (f"clear day {d} transport", f"view transport day {d}", f"set day {d} transport {dear.id}"):
                    obs = env.step(a).observation
                assert "over by $" in obs and not analyze(w, env.plan).feasible
                assert env.oracle_action() == f"clear day {d} transport"
                while not env.done:
                    info = env.step(env.oracle_action()).info
                assert info["won"]
                found += 1
                break
    assert found >= 3


def test_checker_agrees_with_solver_on_random_complete_plans():
    """For complete plans the solver's feasibility is exactly 'every constraint satisfied'."""
    rng = random.Random(3)
    passed = 0
    for d in (1, 2, 3):
        env = make_env("travel")
        for task in env.make_tasks("train", 30, difficulty=d):
            w = generate(task.seed, task.split, task.difficulty)
            best = analyze(w, {})
            assert best.feasible and all(evaluate(w, best.completion).values())
            for _ in range(5):
                plan = dict(best.completion)
                for s in rng.sample(w.slots, rng.randint(1, 3)):
                    pool = (w.transport_by_day[s[0]] if s[1] == "transport" else w.stays_by_city[w.night_city[s[0]]]
                            if s[1] == "accommodation" else w.restaurants_by_city[w.day_city[s[0]]])
                    plan[s] = rng.choice(pool).id
                ok = all(evaluate(w, plan).values())
                assert analyze(w, plan).feasible == ok
                passed += ok
    assert 0 < passed < 450  # both outcomes occur


def test_budget_is_tight_but_feasible():
    for d in (1, 2, 3):
        for task in make_env("travel").make_tasks("test", 10, difficulty=d):
            w = generate(task.seed, task.split, d)
            cheapest = analyze(w, {}).cost
            assert cheapest <= w.budget <= cheapest * (1 + LEVELS[d].slack) + 10
            assert len(w.slots) == {1: 8, 2: 15, 3: 22}[d] and len(w.hard) == LEVELS[d].n_hard


def test_determinism_snapshot_and_replay(env):
    for split, d in (("train", 1), ("test", 2), ("ood", 3)):
        task = env.make_tasks(split, 1, start=4, difficulty=d)[0]
        actions = run_oracle(env, task).actions
        check_determinism(env, task, actions)
        prefix = actions[: len(actions) // 2]
        env.reset(task)
        for a in prefix:
            env.step(a)
        alternatives = env.admissible_actions()[:8] + ["fly away", "submit plan"]
        got = branch(env, task, prefix, alternatives)
        for b in got:  # the same alternative replayed by hand from reset on a fresh instance
            fresh = make_env("travel")
            fresh.reset(task)
            for a in prefix:
                fresh.step(a)
            obs, reward, done, info = fresh.step(b.action)
            assert (obs, reward, done, info) == (b.observation, b.reward, b.done, b.info)


_HASH_SCRIPT = """
from ee_jax.envs import make_env, observation_hash, run_oracle
env = make_env("travel")
obs = []
for split, d in (("train", 1), ("valid", 2), ("ood", 3)):
    for task in env.make_tasks(split, 3, difficulty=d):
        ep = run_oracle(env, task)
        obs += ep.observations + [task.goal, str(task.params), " | ".join(env.admissible_actions())]
print(observation_hash(obs))
"""


def test_determinism_across_processes():
    hashes = set()
    for seed in ("1", "4242"):
        out = subprocess.run([sys.executable, "-c", _HASH_SCRIPT], cwd=ROOT, capture_output=True, text=True,
                             env={**os.environ, "PYTHONHASHSEED": seed}, check=True)
        hashes.add(out.stdout.strip())
    env = make_env("travel")
    obs = []
    for split, d in (("train", 1), ("valid", 2), ("ood", 3)):
        for task in env.make_tasks(split, 3, difficulty=d):
            ep = run_oracle(env, task)
            obs += ep.observations + [task.goal, str(task.params), " | ".join(env.admissible_actions())]
    assert hashes == {observation_hash(obs)}


def test_make_tasks_deterministic_and_ood_held_out(env):
    assert env.make_tasks("train", 6, difficulty=2) == env.make_tasks("train", 6, difficulty=2)
    assert env.make_tasks("train", 3, start=4, difficulty=3) == env.make_tasks("train", 7, difficulty=3)[4:]
    assert len({t.seed for s in SPLITS for t in env.make_tasks(s, 20)}) == 80
    for split in SPLITS:
        for d in (1, 2, 3):
            for task in env.make_tasks(split, 40, difficulty=d):
                w = generate(task.seed, split, d)
                places = {w.origin, *w.cities, *(t.dst for t in w.transports)}
                cuisines = {r.cuisine for r in w.restaurants}
                pair = all(t in w.hard for t in OOD_PAIR)
                if split == "ood":
                    assert places <= set(tc.OOD_CITIES) and pair and cuisines & set(tc.OOD_CUISINES)
                    if "cuisine" in w.hard:
                        assert w.hard["cuisine"] in tc.OOD_CUISINES
                else:
                    assert places <= set(tc.TRAIN_CITIES) and not pair and cuisines <= set(tc.TRAIN_CUISINES)
                assert task.param("constraints") == ",".join(sorted(w.hard))


def test_invalid_actions_are_informative_and_change_nothing(env):
    task = env.make_tasks("train", 1, difficulty=2)[0]
    env.reset(task)
    w = env.world
    c1, c2 = w.cities
    env.step(f"view restaurants {c1}")
    r1 = w.restaurants_by_city[c1][0].id
    env.step(f"set day 1 dinner {r1}")
    last = w.days
    still = next(d for d in range(1, last) if d not in w.route)
    cases = {
        "fly to the moon": "Unknown action",
        "set day 1 lunch R1": "no lunch slot on day 1",
        "set day 1 transport F1": "view transport day 1 first",
        f"set day {last} lunch {r1}": f"view restaurants {c2} first",
        f"set day 1 dinner {w.restaurants_by_city[c1][1].id}": "clear day 1 dinner first",
        "clear day 2 lunch": "already empty",
        "view restaurants Atlantis": f"cities on this trip: {c1}, {c2}",
        f"view transport day {still}": "travel days: 1, ",
        "set day 9 transport T1": "no transport slot on day 9",
    }
    for action, text in cases.items():
        before = (dict(env.plan), env.view, env.score, env.done)
        obs, reward, done, info = env.step(action)
        assert not info["valid"] and text in obs and reward == 0.0 and not done, (action, obs)
        assert (dict(env.plan), env.view, env.score, env.done) == before


def test_admissible_actions_are_all_valid(env):
    task = env.make_tasks("valid", 1, difficulty=3)[0]
    actions = run_oracle(env, task).actions
    env.reset(task)
    w = env.world
    assert env.admissible_actions() == ([f"view transport day {d}" for d in w.route]
                                        + [f"view {k} {c}" for c in w.cities for k in ("accommodations", "restaurants")]
                                        + ["submit plan"])
    for a in actions[:-1:3]:
        snap = env.snapshot()
        for alt in env.admissible_actions():
            env.restore(snap)
            assert env.step(alt).info["valid"], alt
        env.restore(snap)
        env.step(a)


def test_state_messages(env):
    task = env.make_tasks("train", 2, difficulty=1)[1]
    env.reset(task)
    w = env.world
    obs = env.step("view transport day 1").observation
    assert obs.startswith(f"Day 1 departures from {w.origin} (next stop {w.cities[0]})")
    t = next(t for t in w.transport_by_day[1] if t.dst == w.cities[0])
    obs = env.step(f"set day 1 transport {t.id}").observation
    spent = t.price * w.people
    assert f"You have spent ${spent} of your ${w.budget} budget." in obs
    assert obs.endswith("Empty: transport 3; accommodation 1,2; lunch 2,3; dinner 1,2.")
    obs = env.step("clear day 1 transport").observation
    assert obs.startswith(f"Cleared day 1 transport (was {t.id}).") and "spent $0 of" in obs


def test_step_limit_truncates():
    env = make_env("travel", max_steps=5)
    env.reset(env.make_tasks("train", 1)[0])
    for _ in range(5):
        obs, _, done, info = env.step("view transport day 1")
    assert done and info["truncated"] and info["steps"] == 5 and "step limit" in obs


def test_task_ids_errors_and_costs(env):
    task = env.make_tasks("ood", 3, difficulty=3)[2]
    assert env.get_task(task.id) == task and Task.from_json(task.to_json()) == task
    with pytest.raises(EnvError):
        env.make_tasks("train", 1, difficulty=4)
    with pytest.raises(EnvError):
        env.make_tasks("dev", 1)
    with pytest.raises(EnvError):
        make_env("travel", colour="red")
    assert env.describe()["description"] and env.branching == "snapshot" and env.oracle == "state"
    actions = run_oracle(env, task).actions
    env.reset(task)
    for a in actions[:15]:
        env.step(a)
    t0 = time.perf_counter()
    for _ in range(200):
        env.restore(env.snapshot())
    assert (time.perf_counter() - t0) / 200 < 1e-3  # snapshot + restore well under a millisecond each
