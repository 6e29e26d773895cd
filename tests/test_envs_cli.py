"""`ee-jax envs list | show | play | check` as a user runs them (subprocesses, --json last line)."""

import json
import os
import subprocess
import sys

import pytest

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
    # a number for the first expert action, a bogus action then :undo, a hint, an out-of-range number and an
    # unknown command (neither costs a step), then the rest of the expert path
    script = "\n".join([":help", str(first_number), "dance wildly", ":undo", ":hint", "99", ":foo",
                        *ep.actions[1:]]) + "\n"
    out = ee_jax("envs", "play", "household", "--split", "train", "--json", stdin=script)
    payload = last_json(out)
    assert payload["won"] and payload["actions"] == ep.actions, out.stdout[-2000:]
    assert payload["steps"] == len(ep.actions)  # :undo replays; "99" and ":foo" were never sent
    assert "(invalid action)" in out.stdout and f"hint: {ep.actions[1]}" in out.stdout
    assert "no action [99]: choose 1.." in out.stdout and "unknown command ':foo'" in out.stdout
    assert "step 1/" in out.stdout and "score 0.00" in out.stdout
    assert "[1]" in out.stdout and "You won after" in out.stdout


def test_bad_input_is_a_clear_error():
    out = ee_jax("envs", "show", "household", "train-5")
    assert out.returncode == 2 and "SPLIT-dDIFFICULTY-INDEX" in out.stderr
    out = ee_jax("envs", "check", "nope")
    assert out.returncode == 2 and "unknown environment 'nope'" in out.stderr
    out = ee_jax("envs", "show", "household", "train-d1-0", "-o", "colour")
    assert out.returncode == 2 and "KEY=VALUE" in out.stderr
    out = ee_jax("envs", "check", "household", "--n", "-3")  # a count must be positive, not "0 tasks checked"
    assert out.returncode == 2 and "argument --n: -3 is not a positive count" in out.stderr and not out.stdout


def test_version_config_show_and_debug():
    out = ee_jax("--version")
    assert out.returncode == 0 and out.stdout.startswith("ee_jax 0.1.0")
    assert "(git " in out.stdout  # run from the checkout: the commit is known
    shown = last_json(ee_jax("config", "show", "configs/quickstart.yaml", "eval.pass_k=1", "--json"))
    assert shown["eval"]["pass_k"] == [1]  # a single value for a list-valued key is a list of it
    assert shown["model"]["name"] == "ee-1m" and "optimizer" in shown
    bad = ee_jax("config", "show", "model.num_layers=x")
    assert bad.returncode == 2 and bad.stderr.strip().splitlines() == [
        "ee-jax: error: bad value for config key 'model.num_layers': Value 'x' of type 'str' could not be "
        "converted to Integer"]
    debug = ee_jax("--debug", "config", "show", "model.num_layers=x")
    assert debug.returncode == 2 and "Traceback (most recent call last)" in debug.stderr
    assert debug.stderr.strip().splitlines()[-1].startswith("ee-jax: error: bad value")


def test_a_missing_optional_dependency_names_the_extra_to_install(monkeypatch, capsys):
    from ee_jax.cli import main as cli

    def needs_transformers(args):
        raise ModuleNotFoundError("No module named 'transformers'", name="transformers")

    monkeypatch.setattr(cli, "cmd_config_show", needs_transformers)
    assert cli.main(["config", "show"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["ee-jax: error: this needs the optional package 'transformers': pip install 'ee_jax[hf]' "
                   "(from the checkout: pip install -e '.[hf]')"]

    def internal_bug(args):
        raise ModuleNotFoundError("No module named 'ee_jax.nope'", name="ee_jax.nope")

    monkeypatch.setattr(cli, "cmd_config_show", internal_bug)  # not an optional package: a real traceback
    with pytest.raises(ModuleNotFoundError):
        cli.main(["config", "show"])


def test_yaml_code_in_an_environment_option_is_a_one_line_error():
    out = ee_jax("envs", "check", "household", "--n", "1", "-o", 'x=!!python/object/apply:os.system ["echo hi"]')
    assert out.returncode == 2 and "hi" not in out.stdout
    assert out.stderr.strip().splitlines() == [
        "ee-jax: error: environment option 'x=!!python/object/apply:os.system [\"echo hi\"]': the value is not "
        "plain YAML data (could not determine a constructor for the tag "
        "'tag:yaml.org,2002:python/object/apply:os.system')"]
