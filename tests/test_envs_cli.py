"""`ee-jax envs list | show | play | check` as a user runs them (subprocesses, --json last line)."""

import json
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def ee_jax(*args, stdin=None):
    out = subprocess.run([sys.executable, "-m", "ee_jax.cli.main", *args], cwd=ROOT, input=stdin,
                         capture_output=True, text=True, timeout=120)
    return out


def last_json(out):
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_list_shows_every_environment():
    rows = {r["name"]: r for r in last_json(ee_jax("envs", "list", "--json"))["envs"]}
    assert set(rows) >= {"coin", "household", "shop", "tools", "travel", "twx", "scienceworld", "textworld"}
    assert rows["household"]["branching"] == "snapshot" and rows["household"]["action_space"] == "closed"
    assert rows["tools"]["action_space"] == "open"


def test_show_with_oracle_solution():
    out = ee_jax("envs", "show", "household", "test-d1-2", "--solve", "--json")
    payload = last_json(out)
    assert payload["task"]["id"] == "test-d1-2" and payload["task"]["split"] == "test"
    assert payload["oracle"]["won"] and payload["admissible_actions"]
    assert "goal" in out.stdout and "oracle      won in" in out.stdout


def test_check_reports_oracle_success_and_determinism():
    r = last_json(ee_jax("envs", "check", "shop", "--split", "ood", "--n", "5", "--no-progress", "--json"))
    assert r["oracle_success"] == 1.0 and r["n"] == 5 and r["deterministic"] and r["steps_per_s"] > 0
    assert 50 < r["mean_obs_chars"] < 600


def test_play_in_the_terminal_with_numbers_hint_undo_and_win():
    from ee_jax.envs import make_env, run_oracle

    env = make_env("household")
    task = env.make_tasks("train", 1)[0]
    ep = run_oracle(env, task)
    env.reset(task)
    first_number = env.admissible_actions().index(ep.actions[0]) + 1
    # a number for the first expert action, a bogus action then :undo, a hint, then the rest of the expert path
    script = "\n".join([":help", str(first_number), "dance wildly", ":undo", ":hint", *ep.actions[1:]]) + "\n"
    out = ee_jax("envs", "play", "household", "--split", "train", "--json", stdin=script)
    payload = last_json(out)
    assert payload["won"] and payload["actions"] == ep.actions, out.stdout[-2000:]
    assert "(invalid action)" in out.stdout and f"hint: {ep.actions[1]}" in out.stdout
    assert "[1]" in out.stdout and "You won after" in out.stdout


def test_bad_input_is_a_clear_error():
    out = ee_jax("envs", "show", "household", "train-5")
    assert out.returncode == 2 and "SPLIT-dDIFFICULTY-INDEX" in out.stderr
    out = ee_jax("envs", "check", "nope")
    assert out.returncode == 2 and "unknown environment 'nope'" in out.stderr
    out = ee_jax("envs", "show", "household", "train-d1-0", "-o", "colour")
    assert out.returncode == 2 and "KEY=VALUE" in out.stderr
