"""The built-in ``shop`` environment (WebShop-like): oracle, determinism, splits, scoring, invalid actions."""

import os
import random
import statistics
import subprocess
import sys
import time

import pytest

from ee_jax.envs import SPLITS, EnvError, branch, check_determinism, check_env, make_env, observation_hash, run_oracle
from ee_jax.envs.worlds.shop.catalog import (
    CATEGORY,
    OOD_CATEGORIES,
    RESERVED_PAIRS,
    build_world,
    matches,
    score_purchase,
    uses_ood,
)
from ee_jax.envs.worlds.shop.env import PER_PAGE, ShopEnv, rank

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _state(env):
    return {k: getattr(env, k) for k in env._state_attrs}


def _world(task):
    return build_world(task.seed, task.difficulty, task.split)


@pytest.mark.parametrize("split", SPLITS)
@pytest.mark.parametrize("difficulty", [1, 2, 3])
def test_oracle_wins_every_split_and_difficulty(split, difficulty):
    env = make_env("shop")
    report = check_env(env, split, 25, difficulty=difficulty)
    assert report["oracle_success"] == 1.0, report["failed_tasks"]
    assert report["invalid_oracle_actions"] == 0
    assert 4 <= report["mean_steps"] <= 8 and report["max_steps"] <= env.max_steps
    for task in env.make_tasks(split, 10, difficulty=difficulty):
        ep = run_oracle(env, task)
        assert tuple(ep.actions) == task.gold  # the stored gold path is the oracle's path
        assert sum(ep.rewards) == ep.score == 1.0 and ep.rewards[:-1] == [0.0] * (len(ep.rewards) - 1)


def test_difficulty_scales_catalogue_goal_and_pages():
    env = ShopEnv()
    sizes, attrs, opts, pages = {}, {}, {}, {}
    for d in (1, 2, 3):
        tasks = env.make_tasks("train", 60, difficulty=d)
        worlds = [_world(t) for t in tasks]
        sizes[d] = {len(w.products) for w in worlds}
        attrs[d] = statistics.fmean(len(w.goal.attributes) for w in worlds)
        opts[d] = {len(w.goal.options) for w in worlds}
        pages[d] = statistics.fmean(t.gold.count("click[next >]") for t in tasks)
    assert sizes == {1: {9}, 2: {18}, 3: {30}}
    assert attrs[1] == 1 and attrs[2] == 2 and 2 < attrs[3] < 3
    assert opts == {1: {1}, 2: {2}, 3: {2}}
    assert pages[1] < pages[2] < pages[3] and pages[3] > 0.4  # the target is often past page 1 at d3


def test_exactly_one_target_and_close_distractors():
    env = ShopEnv()
    for d, n_distractors in ((1, 2), (2, 4), (3, 7)):
        for task in env.make_tasks("test", 20, difficulty=d):
            w = _world(task)
            assert [p.pid for p in w.products if matches(p, w.goal)] == [w.goal.target]
            close = [p for p in w.products if p.kind not in ("target", "filler")]
            assert len(close) == n_distractors and all(p.category == w.goal.category for p in close)
            if "color" in dict(w.goal.options):
                assert any(p.kind == "decoy" for p in close)


def test_paper_case_blue_shirt_under_budget_vs_pricier_red_one():
    """A $<20 blue shirt (target) and a >$20 red shirt with the same attributes but no blue (decoy)."""
    env = ShopEnv()
    found = None
    for task in env.make_tasks("train", 400, difficulty=2):
        w = _world(task)
        g = w.goal
        if g.category != "shirt" or dict(g.options).get("color") != "blue" or g.budget != 20:
            continue
        decoys = [p for p in w.products if p.kind == "decoy" and "red" in dict(p.options)["color"]]
        if decoys:
            found = task, w, decoys[0]
            break
    assert found, "no blue-shirt / red-decoy task with a $20 budget in the first 400 train-d2 tasks"
    task, w, decoy = found
    target = w.product(w.goal.target)
    assert target.price < 20 < decoy.price and "blue" not in dict(decoy.options)["color"]
    assert decoy.attributes == w.goal.attributes or set(w.goal.attributes) <= set(decoy.attributes)
    # both show up for the expert query; the decoy looks the same in the results except for its price
    assert {target.pid, decoy.pid} <= set(rank(w, w.goal.query))
    # buying the decoy: attributes right, colour and price wrong -> partial score, lost
    env.reset(task)
    env.step(f"search[{w.goal.query}]")
    while f"click[{decoy.pid}]" not in env.admissible_actions():
        env.step("click[next >]")
    env.step(f"click[{decoy.pid}]")
    size = dict(w.goal.options)["size"]
    assert env.step(f"click[{size}]").info["valid"]
    assert not env.step("click[blue]").info["valid"]  # the decoy is not offered in blue
    obs, reward, done, info = env.step("click[buy now]")
    n = len(w.goal.attributes)
    assert done and not info["won"] and info["lost"]
    assert reward == info["score"] == round((n + 1) / (n + 3), 4)
    assert "price over the $20.00 budget" in obs
    assert run_oracle(env, task).won


def test_score_formula():
    env = ShopEnv()
    task = env.make_tasks("valid", 1, difficulty=2)[0]
    w = _world(task)
    g, target = w.goal, w.product(w.goal.target)
    right = dict(g.options)
    assert score_purchase(target, right, g) == (1.0, {"type": 1.0, "attributes": 2, "options": 2, "price": True})
    one_wrong = {**right, g.options[0][0]: "nope"}
    assert score_purchase(target, one_wrong, g)[0] == 0.8  # (2 + 1 + 1) / 5
    assert score_purchase(target, {}, g)[0] == 0.6
    other = next(p for p in w.products if p.category != g.category)
    r_type = 0.5 if CATEGORY[other.category].department == CATEGORY[g.category].department else 0.0
    s, parts = score_purchase(other, right, g)
    assert parts["type"] == r_type and s == round(r_type * (parts["attributes"] + parts["options"]
                                                            + parts["price"]) / 5, 4)


def test_oracle_recovers_from_random_deviations():
    """Deviations are any admissible action except ``click[buy now]`` (the one irreversible action),
    plus free-text searches; the oracle then plans from wherever the episode is."""
    rng = random.Random(0)
    words = ["cheap", "blue", "shirt", "leather", "wireless", "mug", "xyz"]
    env = make_env("shop")
    for split in SPLITS:
        for d in (1, 2, 3):
            for task in env.make_tasks(split, 6, start=100, difficulty=d):
                env.reset(task)
                for _ in range(rng.randint(0, 3)):
                    env.step(env.oracle_action())
                for _ in range(3):
                    options = [a for a in env.admissible_actions() if a != "click[buy now]"]
                    if env._page == "search":
                        options.append(f"search[{' '.join(rng.sample(words, 2))}]")
                    assert env.step(rng.choice(options)).info["valid"]
                while not env.done:
                    res = env.step(env.oracle_action())
                    assert res.info["valid"]
                assert res.info["won"], (task.id, env.actions)
                assert len(env.actions) <= env.max_steps


def test_every_admissible_action_is_valid_along_the_oracle_path():
    env = make_env("shop")
    for task in env.make_tasks("train", 5, difficulty=3) + env.make_tasks("ood", 5, difficulty=1):
        env.reset(task)
        while not env.done:
            snap = env.snapshot()
            admissible = env.admissible_actions()
            assert admissible and len(admissible) <= 15
            if env._page == "search":
                assert all(a.startswith("search[") for a in admissible)
                assert f"search[{_world(task).goal.query}]" not in admissible
            for a in admissible:
                env.restore(snap)
                assert env.step(a).info["valid"], (task.id, a)
            env.restore(snap)
            env.step(env.oracle_action())
        assert env.admissible_actions() == [] and env.oracle_action() is None


def test_determinism_snapshot_vs_replay_and_processes():
    env = make_env("shop")
    task = env.make_tasks("test", 1, start=7, difficulty=3)[0]
    actions = list(task.gold)
    h = check_determinism(env, task, actions)
    # branch on a snapshot env vs the same alternatives replayed by hand from reset on a fresh env
    for i in range(len(actions)):
        env.reset(task)
        for a in actions[:i]:
            env.step(a)
        alternatives = env.admissible_actions()[:6] + ["click[nothing]", "search[red mug]"]
        branches = branch(env, task, actions[:i], alternatives)
        for b in branches:
            fresh = make_env("shop")
            fresh.reset(task)
            for a in actions[:i]:
                fresh.step(a)
            assert tuple(fresh.step(b.action)) == (b.observation, b.reward, b.done, b.info)
    # another process with another string-hash seed sees the same episode
    code = ("from ee_jax.envs import make_env, observation_hash, run_oracle; env = make_env('shop'); "
            "t = env.get_task('test-d3-7'); print(observation_hash(run_oracle(env, t).observations))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True,
                         env={**os.environ, "PYTHONHASHSEED": "12345"})
    assert out.stdout.strip() == h == observation_hash(run_oracle(env, task).observations)


def test_snapshot_restore_is_cheap_and_exact():
    env = make_env("shop")
    task = env.make_tasks("train", 1, difficulty=3)[0]
    env.reset(task)
    for a in task.gold[:2]:
        env.step(a)
    snap = env.snapshot()
    before = _state(env), env.steps, env.admissible_actions()
    env.step("click[back to search]")
    other = make_env("shop").make_tasks("ood", 1, difficulty=1)[0]
    env.reset(other)  # restoring must also bring back the first task's catalogue
    env.restore(snap)
    assert (_state(env), env.steps, env.admissible_actions()) == before
    t0 = time.perf_counter()
    for _ in range(200):
        env.restore(env.snapshot())
    assert (time.perf_counter() - t0) / 200 < 1e-3


def test_make_tasks_deterministic_and_ood_held_out():
    a, b = ShopEnv(), ShopEnv()
    for split in SPLITS:
        assert a.make_tasks(split, 8, difficulty=2) == b.make_tasks(split, 8, difficulty=2)
        assert a.make_tasks(split, 3, start=5, difficulty=2) == b.make_tasks(split, 8, difficulty=2)[5:]
    seen_ood_cats, seen_pairs = set(), set()
    for d in (1, 2, 3):
        for split in ("train", "valid", "test"):
            for task in a.make_tasks(split, 60, difficulty=d):
                w = _world(task)
                assert not uses_ood(w.goal.category, w.goal.attributes)
                assert not any(uses_ood(p.category, p.attributes) for p in w.products), task.id
        for task in a.make_tasks("ood", 60, difficulty=d):
            g = _world(task).goal
            assert uses_ood(g.category, g.attributes), task.id
            seen_ood_cats.add(g.category) if g.category in OOD_CATEGORIES else seen_pairs.update(
                (g.category, x) for x in g.attributes if (g.category, x) in RESERVED_PAIRS)
    assert seen_ood_cats == set(OOD_CATEGORIES) and len(seen_pairs) == len(RESERVED_PAIRS)
    # train/valid/test use different seeds
    ids = {t.seed for s in ("train", "valid", "test") for t in a.make_tasks(s, 30, difficulty=1)}
    assert len(ids) == 90


def test_invalid_actions_are_informative_and_change_nothing():
    env = make_env("shop")
    task = env.make_tasks("train", 1, start=3, difficulty=2)[0]
    w = _world(task)
    env.reset(task)
    cases = {"search": ["jump", "click[buy now]", "search[]", "click[next >]"]}
    env.step("search[zzzz]")
    cases["empty results"] = ["click[next >]", "search[mug]", "click[B0XXXXXXXX]"]
    env.step("click[back to search]")
    env.step(f"search[{w.goal.query}]")
    cases["results"] = ["click[< prev]", "click[buy now]", "click[B0XXXXXXXX]", "search[mug]", "click[red]"]
    env.step(f"click[{w.goal.target}]")
    offered = {v for _, vs in w.product(w.goal.target).options for v in vs}
    missing = next(v for v in ["black", "white", "blue", "red", "green", "grey", "navy", "pink"] if v not in offered)
    cases["item"] = [f"click[{missing}]", "click[next >]", "search[shirt]", "buy"]
    env.step("click[description]")
    cases["description"] = ["click[buy now]", "click[description]"]
    # replay to each page and check each invalid action there
    prefixes = {"search": 0, "empty results": 1, "results": 3, "item": 4, "description": 5}
    for page, bad in cases.items():
        for action in bad:
            env.reset(task)
            for a in env_actions(w)[: prefixes[page]]:
                env.step(a)
            before, adm = _state(env), env.admissible_actions()
            obs, reward, done, info = env.step(action)
            assert not info["valid"] and reward == 0.0 and not done and info["score"] == 0.0, (page, action)
            assert obs.startswith("Invalid action.") and ("Possible:" in obs or "search[" in obs), obs
            assert _state(env) == before and env.admissible_actions() == adm


def env_actions(w):
    return ["search[zzzz]", "click[back to search]", f"search[{w.goal.query}]", f"click[{w.goal.target}]",
            "click[description]"]


def test_pages_navigation_and_case_insensitive_ids():
    env = make_env("shop")
    task = next(t for t in env.make_tasks("train", 40, difficulty=3) if t.gold.count("click[next >]") >= 1)
    w = _world(task)
    env.reset(task)
    obs = env.step("search[" + w.goal.category + "]").observation
    assert "page 1 of" in obs and "[next >]" in obs and "[< prev]" not in obs
    assert len([a for a in env.admissible_actions() if a.startswith("click[B0")]) == PER_PAGE
    page2 = env.step("click[next >]").observation
    assert "page 2 of" in page2 and "[< prev]" in page2
    pid = env.admissible_actions()[0][6:-1]
    item = env.step(f"click[{pid.lower()}]").observation
    assert pid in item and "Price: $" in item and "[buy now]" in item
    assert env.step("click[< prev]").observation == page2  # back to the same results page
    assert env.step("click[< prev]").observation == obs


def test_step_limit_truncates():
    env = make_env("shop")
    assert env.max_steps == 15
    task = env.make_tasks("train", 1)[0]
    env.reset(task)
    for i in range(15):
        res = env.step("click[oops]")
        assert res.done == (i == 14)
    assert res.info["truncated"] and "step limit of 15" in res.observation and not res.info["won"]
    env3 = make_env("shop", max_steps=3)
    env3.reset(task)
    assert env3.step(task.gold[0]).done is False
    env3.step(task.gold[1])
    res = env3.step(task.gold[2])
    assert res.done and res.info["truncated"] and res.info["score"] == 0.0


def test_observation_lengths():
    env = make_env("shop")
    rng = random.Random(1)
    lengths = []
    for d in (1, 2, 3):
        for task in env.make_tasks("valid", 15, difficulty=d):
            lengths += [len(o) for o in run_oracle(env, task).observations]
            env.reset(task)
            while not env.done:  # a random walk too (buy now included)
                lengths.append(len(env.step(rng.choice(env.admissible_actions())).observation))
    assert 200 <= statistics.fmean(lengths) <= 400, statistics.fmean(lengths)
    assert max(lengths) < 600 and min(lengths) >= 100


def test_task_ids_errors_and_description():
    env = make_env("shop")
    for split in SPLITS:
        task = env.make_tasks(split, 1, start=11, difficulty=3)[0]
        assert task.id == f"{split}-d3-11" and env.get_task(task.id) == task
        assert "price lower than" in task.goal and task.param("target") == task.gold[-len(
            task.param("options")) - 2][6:-1]
    with pytest.raises(EnvError):
        env.make_tasks("train", 1, difficulty=4)
    with pytest.raises(EnvError):
        env.make_tasks("holdout", 1)
    with pytest.raises(EnvError):
        env.get_task("train-d9-0")
    with pytest.raises(EnvError):
        make_env("shop", colour="blue")
    assert "search[" in ShopEnv.description and ShopEnv.describe()["default_max_steps"] == 15


def test_oracle_takes_the_cheapest_way_back():
    env = make_env("shop")
    task = next(t for t in env.make_tasks("train", 40, difficulty=2) if "click[next >]" not in t.gold)
    w = _world(task)
    env.reset(task)
    env.step(f"search[{w.goal.query}]")
    other = next(a for a in env.admissible_actions() if a.startswith("click[B0") and w.goal.target not in a)
    env.step(other)
    assert env.oracle_action() == "click[< prev]"  # the target is on that results page
    env.step("click[description]")
    assert env.oracle_action() == "click[< prev]"
    env.step("click[back to search]")
    env.step("search[zzzz]")  # no results: only a new search helps
    assert env.oracle_action() == "click[back to search]"
    env.step("click[back to search]")
    assert env.oracle_action() == f"search[{w.goal.query}]"
    env.step(f"search[{w.goal.query}]")
    env.step(f"click[{w.goal.target}]")
    wrong = next(v for t, vs in w.product(w.goal.target).options for v in vs if t == "color" and v != dict(
        w.goal.options)["color"])
    env.step(f"click[{wrong}]")
    assert env.oracle_action() == f"click[{dict(w.goal.options)['color']}]"  # fixes a wrong selection
