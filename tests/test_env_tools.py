"""The built-in ``tools`` environment: multi-turn JSON function calling on a simulated file system."""

import json
import os
import posixpath
import random
import subprocess
import sys

import pytest

from ee_jax.envs import (
    SPLITS,
    EnvError,
    branch,
    check_determinism,
    check_env,
    make_env,
    observation_hash,
    reach,
    run_oracle,
)
from ee_jax.envs.worlds.tools.api import BASE_FUNCTIONS, HOME, parse_call
from ee_jax.envs.worlds.tools.env import ToolsEnv
from ee_jax.envs.worlds.tools.tasks import MISSING, OOD_VARIANTS, generate

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def call(function, **arguments):
    return json.dumps({"name": function, "arguments": arguments})


def state(env):
    w = env.world
    return dict(w.fs), w.cwd, list(w.sent), dict(w.known), env.turn


@pytest.fixture(scope="module")
def env():
    return make_env("tools")


# ----------------------------------------------------------------- oracle
@pytest.mark.parametrize("split", SPLITS)
@pytest.mark.parametrize("difficulty", (1, 2, 3))
def test_oracle_wins_everywhere(env, split, difficulty):
    r = check_env(env, split, 24, difficulty=difficulty)
    assert r["oracle_success"] == 1.0, r["failed_tasks"]
    assert r["invalid_oracle_actions"] == 0
    assert r["mean_admissible"] is None  # open action space: no admissible list
    lo, hi = {1: (2, 6), 2: (4, 10), 3: (6, 14)}[difficulty]
    assert lo <= r["mean_steps"] <= hi, r
    assert 100 <= r["mean_obs_chars"] <= 400, r
    assert r["max_obs_chars"] < (1500 if split == "ood" else 600), r


def test_difficulty_sets_turns_and_rewards_sum_to_score(env):
    for d, turns in ((1, 2), (2, 3), (3, 4)):
        for task in env.make_tasks("train", 5, difficulty=d):
            assert task.param("turns") == turns
            ep = run_oracle(env, task)
            assert ep.won and sum(ep.rewards) == pytest.approx(1.0)
            assert all(r in (0.0, pytest.approx(1 / turns)) for r in ep.rewards)
            assert sum(r > 0 for r in ep.rewards) == turns


def _deviation(rng, env):
    """A plausible call, valid or not: random functions on random existing paths, or broken JSON."""
    w = env.world
    files = sorted(p for p, v in w.fs.items() if v is not None)
    dirs = sorted(p for p, v in w.fs.items() if v is None)
    f, d = rng.choice(files), rng.choice(dirs)
    if rng.random() < 0.15:
        return rng.choice(['{"name": "ls", "arguments": {', "ls docs", call("copy"), call("mkdir"),
                           call("write_file", file_name="a", content="b", append="yes"),
                           call("cat", file_name="no.txt")])
    name, args = rng.choice([
        ("ls", {"path": d}), ("cd", {"folder": d}), ("cat", {"file_name": f}), ("mkdir", {"dir_name": d + "/tmp"}),
        ("write_file", {"file_name": rng.choice([f, d + "/x.txt"]), "content": "junk", "append": rng.random() < 0.3}),
        ("mv", {"source": f, "destination": d}), ("cp", {"source": f, "destination": d}), ("rm", {"path": f}),
        ("rm", {"path": d}), ("mv", {"source": f, "destination": d + "/renamed.txt"}),
        ("touch", {"file_name": d + "/t"}),
        ("send_message", {"to": rng.choice(w.contacts), "text": "hello"}), ("list_messages", {}),
        ("grep", {"file_name": f, "pattern": "e"}), ("find", {"name": "a"}), ("wc", {"file_name": f})])
    if rng.random() < 0.5:  # relative paths too
        args = {k: posixpath.relpath(v, w.cwd) if isinstance(v, str) and v.startswith("/") else v
                for k, v in args.items()}
    return json.dumps({"name": name, "arguments": args})


def test_oracle_recovers_from_deviations(env):
    """Deleting, moving or overwriting any file, wrong messages, stray directories: nothing is
    irreversible (the oracle rewrites what was destroyed), so the oracle always still wins."""
    rng = random.Random(0)
    deviated = destroyed = 0
    for split in ("train", "ood"):
        for d in (1, 2, 3):
            for task in env.make_tasks(split, 12, difficulty=d):
                env.reset(task)
                for _ in range(rng.randint(0, 3)):
                    env.step(env.oracle_action())
                for _ in range(rng.randint(1, 6)):
                    if env.done:
                        break
                    before = len(env.world.fs)
                    r = env.step(_deviation(rng, env))
                    deviated += r.info["valid"]
                    destroyed += len(env.world.fs) < before
                invalid = 0
                while not env.done:
                    r = env.step(env.oracle_action())
                    invalid += not r.info["valid"]
                assert env.score == 1.0 and invalid == 0, (task.id, env.actions)
    assert deviated > 100 and destroyed > 10


def test_oracle_restores_collateral_damage_and_hint(env):
    """Deleting a file the task did not mention blocks the request (with a hint naming it) until restored."""
    task = env.get_task("train-d1-3")
    first = run_oracle(env, task)
    n = next(i for i, o in enumerate(first.observations) if "Request 1 done." in o)
    env.reset(task)
    turn = env.scen.turns[0]
    victim = next(p for p, kind, _ in turn.target if kind == "file" and p not in turn.own)
    content = env.world.fs[victim]
    assert env.step(call("rm", path=victim)).info["valid"]
    for action in first.actions[:n]:  # the request's own change
        r = env.step(action)
    assert r.info["score"] == 0.0 and f"(Not complete: {victim} is missing; restore it.)" in r.observation
    while env.turn == 0:
        r = env.step(env.oracle_action())
    assert env.world.fs[victim] == content and r.info["score"] == 0.5 and "Request 1 done." in r.observation


# ----------------------------------------------------------------- determinism and branching
def test_determinism_and_branching(env):
    for task in env.make_tasks("train", 3, difficulty=3) + env.make_tasks("ood", 3, difficulty=2):
        actions = run_oracle(env, task).actions
        assert len(check_determinism(env, task, actions)) == 16
        k = len(actions) // 2
        alts = [call("ls"), call("rm", path="nothing"), actions[k], "not json", call("cd", folder="~")]
        got = branch(env, task, actions[:k], alts)
        for alt, b in zip(alts, got):
            fresh = ToolsEnv()
            obs = reach(fresh, task, actions[:k])
            res = fresh.step(alt)
            assert (b.observation, b.reward, b.done, b.info) == (res.observation, res.reward, res.done, res.info)
            assert obs[-1] != b.observation
        assert got[2].info["valid"] and not got[1].info["valid"] and not got[3].info["valid"]


_PROGRAM = """
from ee_jax.envs import make_env, observation_hash, run_oracle
env = make_env("tools")
obs = []
for tid in ("train-d3-4", "ood-d2-0", "ood-d2-1", "ood-d2-2"):
    obs += run_oracle(env, env.get_task(tid)).observations
print(observation_hash(obs))
"""


def test_same_observations_across_processes(env):
    obs = []
    for tid in ("train-d3-4", "ood-d2-0", "ood-d2-1", "ood-d2-2"):
        obs += run_oracle(env, env.get_task(tid)).observations
    for seed in ("1", "987"):
        out = subprocess.run([sys.executable, "-c", _PROGRAM], cwd=ROOT, capture_output=True, text=True, check=True,
                             env={**os.environ, "PYTHONHASHSEED": seed})
        assert out.stdout.strip() == observation_hash(obs)


# ----------------------------------------------------------------- tasks and splits
def test_make_tasks_deterministic_and_ids_round_trip(env):
    a = env.make_tasks("valid", 6, start=3, difficulty=2)
    assert [t.id for t in a] == [f"valid-d2-{i}" for i in range(3, 9)]
    assert a == ToolsEnv().make_tasks("valid", 6, start=3, difficulty=2)
    for t in a + env.make_tasks("ood", 3, difficulty=3):
        assert env.get_task(t.id) == t
    assert len({t.seed for s in SPLITS for t in env.make_tasks(s, 5)}) == 20
    assert len({t.goal for t in env.make_tasks("train", 20)}) == 20
    with pytest.raises(EnvError, match="difficulty 4"):
        env.make_tasks("train", 1, difficulty=4)
    with pytest.raises(EnvError, match="unknown split"):
        env.make_tasks("dev", 1)
    with pytest.raises(EnvError, match="unknown option"):
        make_env("tools", size=3)


def test_ood_variants_never_in_other_splits(env):
    def largest_dir(scen):
        fs = dict(scen.fs)
        return max(sum(posixpath.dirname(p) == d for p in fs) for d, v in fs.items() if v is None)

    for split in ("train", "valid", "test"):
        for d in (1, 2, 3):
            for t in env.make_tasks(split, 15, difficulty=d):
                scen = generate(t.seed, d, t.param("variant"))
                assert t.param("variant") == "base" and scen.functions == BASE_FUNCTIONS
                assert all(turn.answer is None for turn in scen.turns) and largest_dir(scen) <= 8
    seen = set()
    for d in (1, 2, 3):
        for t in env.make_tasks("ood", 15, difficulty=d):
            v = t.param("variant")
            seen.add(v)
            scen = generate(t.seed, d, v)
            if v == "missing_function":
                gone = t.param("missing_function")
                assert gone not in scen.functions and len(scen.functions) == len(BASE_FUNCTIONS) - 1
                assert any(turn.kind in MISSING[gone] for turn in scen.turns)
                assert gone not in [json.loads(a)["name"] for a in run_oracle(env, t).actions]
            elif v == "missing_parameter":
                assert "ask_user" in scen.functions and sum(turn.answer is not None for turn in scen.turns) == 1
            else:
                assert v == "long_context" and largest_dir(scen) >= 60 and scen.limit == 1200
    assert seen == set(OOD_VARIANTS)


def test_missing_function_is_composed(env):
    t = next(t for t in env.make_tasks("ood", 60, difficulty=1) if t.param("missing_function") == "cp")
    names = [json.loads(a)["name"] for a in run_oracle(env, t).actions]
    assert "cat" in names and "write_file" in names and names.index("cat") < names.index("write_file")
    env.reset(t)
    r = env.step(call("cp", source="a", destination="b"))
    assert not r.info["valid"] and "Unknown function 'cp'" in r.observation and "write_file" in r.observation


def test_missing_parameter_needs_ask_user(env):
    t = next(t for t in env.make_tasks("ood", 6, difficulty=2) if t.param("variant") == "missing_parameter")
    env.reset(t)
    hidden = next(i for i, turn in enumerate(env.scen.turns) if turn.answer)
    answer = env.scen.turns[hidden].answer
    while env.turn < hidden:
        env.step(env.oracle_action())
    assert json.loads(env.oracle_action())["name"] == "ask_user"
    snap = env.snapshot()
    r = env.step(call("ask_user", question="What exactly do you mean?"))
    assert r.info["valid"] and r.observation.startswith(f"User: {answer}") and f"[User: {answer}]" in r.observation
    env.restore(snap)  # the other requests need no clarification
    assert env.scen.turns[hidden].request in t.goal and answer not in t.goal
    ep = run_oracle(env, t)
    assert ep.won and sum('"ask_user"' in a for a in ep.actions) == 1


def test_long_context_truncates_with_a_note(env):
    t = next(t for t in env.make_tasks("ood", 6, difficulty=1) if t.param("variant") == "long_context")
    env.reset(t)
    big = max((d for d, v in env.world.fs.items() if v is None), key=lambda d: len(env.world.children(d)))
    r = env.step(call("ls", path=big))
    assert r.info["valid"] and "more not shown; use find(name=...)" in r.observation
    assert 900 < len(r.observation) <= 1500
    log = next(p for p in env.world.fs if p.endswith("server_events.log"))
    r = env.step(call("cat", file_name=log))
    assert "more not shown; use grep or wc" in r.observation and len(r.observation) <= 1500


# ----------------------------------------------------------------- actions and observations
def test_invalid_actions_are_informative_and_change_nothing(env):
    env.reset(env.get_task("train-d2-0"))
    env.step(call("cd", folder=next(p for p, v in env.world.fs.items() if v is None and p != HOME)))
    here = posixpath.basename(next(p for p in env.world.children(env.world.cwd) if env.world.is_file(p)))
    cases = [
        (call("mkdir", dir_name=here), "execution", f"Already exists: {here} in {env.world.cwd}"),
        (call("write_file", file_name="..", content="x"), "execution", "Invalid file name '..'"),
        (call("cd", folder=here), "execution", f"Not a directory: {env.world.cwd}/{here}"),
        ('{"name": "ls", "arguments": {', "parse", "Malformed JSON: Expecting property name enclosed in double quotes "
                                                   "at line 1 column 30 (char 29)"),
        ("ls -la", "parse", "line 1 column 1"),
        (call("copy", source="a"), "unknown_function", "Unknown function 'copy'. Available: ls, cd, pwd, mkdir"),
        (call("mkdir"), "arguments", "mkdir: missing required argument 'dir_name' (string)"),
        (call("mkdir", name="x"), "arguments", "mkdir: unexpected argument 'name'. Parameters: dir_name (string)"),
        (call("write_file", file_name="a.txt", content="x", append="yes"), "arguments",
         "write_file: argument 'append' must be a boolean, got string \"yes\""),
        (call("cat", file_name=7), "arguments", "argument 'file_name' must be a string, got integer 7"),
        (call("wc", file_name="a", mode="lines"), "arguments", "must be one of 'l', 'w', 'c'"),
        (call("cat", file_name="a.txt"), "execution", f"No such file: a.txt in {env.world.cwd}"),
        (call("mv", source="zz/a.txt", destination="b"), "execution", f"No such directory: {env.world.cwd}/zz"),
        (call("rm", path="/etc/passwd"), "execution", "Permission denied: /etc/passwd is outside /home/user"),
        (call("rm", path="~"), "execution", "Cannot remove /home/user"),
        (call("send_message", to="zed", text="hi"), "execution", "Unknown contact 'zed'. Contacts:"),
        (call("ask_user", question="?"), "unknown_function", "Unknown function 'ask_user'"),
        ('[{"name": "pwd"}, {"name": "ls"}]', "parse", "one call per action; got a list of 2 calls"),
        ('{"name": "ls", "args": {}}', "parse", "Unexpected key 'args'"),
    ]
    for action, kind, text in cases:
        before = state(env)
        r = env.step(action)
        assert not r.info["valid"] and r.info["error"] == kind and r.reward == 0.0 and not r.done, action
        assert text in r.observation, (text, r.observation)
        assert "Request 1/3:" in r.observation  # the request stays in view
        assert state(env) == before, action


def test_accepted_call_forms(env):
    env.reset(env.get_task("train-d1-0"))
    for action in ('  {"name": "pwd"}  \n', '[{"name": "pwd", "arguments": {}}]', '```json\n{"name": "pwd"}\n```',
                   '{"name": "pwd", "arguments": "{}"}', '{"name": "pwd", "arguments": null}'):
        r = env.step(action)
        assert r.info["valid"] and r.observation.startswith(HOME + "\n"), action
    text_args = '{"name": "cd", "arguments": "{\\"folder\\": \\" docs \\"}"}'
    assert parse_call(text_args, ("cd",)) == ("cd", {"folder": "docs"})


def test_file_system_semantics(env):
    env.reset(env.get_task("train-d1-0"))
    steps = [
        (call("mkdir", dir_name="tmp"), "Created directory /home/user/tmp."),
        (call("cd", folder="tmp"), "Now in /home/user/tmp."),
        (call("write_file", file_name="a.txt", content="one"), "Wrote 3 characters to /home/user/tmp/a.txt."),
        (call("write_file", file_name="a.txt", content="two", append=True), "(now 2 lines)"),
        (call("cp", source="a.txt", destination="b.txt"), "Copied /home/user/tmp/a.txt to /home/user/tmp/b.txt."),
        (call("mkdir", dir_name="sub"), "Created directory"),
        (call("mv", source="b.txt", destination="sub"), "Moved /home/user/tmp/b.txt to /home/user/tmp/sub/b.txt."),
        (call("ls"), "/home/user/tmp: a.txt  sub/"),
        (call("cat", file_name="sub/b.txt"), "one\ntwo"),
        (call("grep", file_name="a.txt", pattern="TW"), "2: two"),
        (call("wc", file_name="a.txt"), "2 lines in /home/user/tmp/a.txt."),
        (call("find", name="b.t", path="~"), "/home/user/tmp/sub/b.txt"),
        (call("rm", path="sub"), "Directory not empty: /home/user/tmp/sub has 1 entries"),
        (call("cd", folder=".."), "Now in /home/user."),
        (call("mv", source="tmp", destination="tmp2"), "Moved /home/user/tmp to /home/user/tmp2."),
        (call("cat", file_name="tmp2/sub/b.txt"), "one\ntwo"),
        (call("touch", file_name="tmp2/e.md"), "Created empty file /home/user/tmp2/e.md."),
        (call("cat", file_name="tmp2/e.md"), "(/home/user/tmp2/e.md is empty)"),
    ]
    for action, text in steps:
        r = env.step(action)
        assert text in r.observation, (action, r.observation)


def test_step_limit_truncates():
    env = make_env("tools", max_steps=3)
    env.reset(env.get_task("train-d3-0"))
    results = [env.step(call("pwd")) for _ in range(3)]
    assert [r.info["truncated"] for r in results] == [False, False, True] and results[-1].done
    assert "[step limit of 3 reached]" in results[-1].observation and not results[-1].info["won"]
    assert env.step(call("pwd")).observation == "The episode is over."


def test_reset_observation_and_description(env):
    t = env.get_task("train-d2-5")
    obs = env.reset(t)
    assert obs.startswith("You are in /home/user.") and "Functions: ls(path?) cd(folder)" in obs
    assert "write_file(file_name, content, append?:bool)" in obs and "Request 1/3: " in obs
    assert 300 < len(obs) < 600 and env.scen.turns[0].request in obs and env.scen.turns[0].request in t.goal
    assert ToolsEnv.description and ToolsEnv.describe()["action_space"] == "open"
    assert env.admissible_actions() is None
