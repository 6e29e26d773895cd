"""`ee-jax collect` and `ee-jax data show` from the shipped configs, as a user runs them."""

import pytest

from ee_jax.records.store import iter_records, load_manifest
from tests.conftest import require
from tests.test_envs_cli import ee_jax, last_json


def _collect(config, run_dir, *overrides):
    return last_json(ee_jax("collect", "all", config, f"run_dir={run_dir}", *overrides, "--no-progress", "--json"))


def _check_store(run_dir, out, k):
    data = f"{run_dir}/data"
    manifest = load_manifest(data)
    for stage, kind in (("expert", "expert_step"), ("explore", "transition"), ("reflect", "reflection")):
        assert out[stage]["records"] == manifest[kind]["records"] > 0
        assert out[stage]["content_sha256"] == manifest[kind]["content_sha256"]
    experts = list(iter_records(data, "expert_step"))
    trans = list(iter_records(data, "transition"))
    refl = list(iter_records(data, "reflection"))
    assert len(trans) == len(experts) + out["explore"]["counters"]["branches"]
    assert sum(t["is_expert"] for t in trans) == len(experts)
    assert out["explore"]["counters"]["branches"] <= k * len(experts)
    assert len(refl) == len(experts) and all(r["generator"] == "grounded" for r in refl)
    assert out["reflect"]["counters"]["verdict"]["kept"] == len(refl)  # grounded monologues pass every filter
    return experts, trans, refl


def test_collect_household_config_and_data_show(tmp_path):
    run = tmp_path / "hh"
    out = _collect("configs/collect/household.yaml", run, "experience.tasks.train=8", "experience.tasks.valid=2")
    assert out["expert"]["counters"]["trajectories_by_split"] == {"train": 8, "valid": 2}
    experts, trans, refl = _check_store(run, out, 8)

    shown = last_json(ee_jax("data", "show", str(run), "--objective", "iwm", "--n", "2", "--json"))
    ex = shown["examples"][0]
    first = trans[0]
    assert ex["target_text"].startswith(first["next_observation"][:40])
    assert "world model" in ex["prompt_text"] and first["action"] in ex["prompt_text"]
    shown = last_json(ee_jax("data", "show", str(run), "--objective", "il", "--n", "1", "--json"))
    assert shown["examples"][0]["target_text"].startswith(experts[0]["action"])
    text = ee_jax("data", "show", str(run), "--objective", "sr", "--n", "1", "--no-color").stdout
    assert "[[" in text and "Action: " + refl[0]["expert"]["action"] in text


@pytest.mark.envs
def test_collect_twx_config(tmp_path):
    require("textworld_express")
    run = tmp_path / "twx"
    out = _collect("configs/collect/twx.yaml", run, "experience.tasks.train=4", "experience.tasks.valid=0",
                   "env.pool_workers=1")
    assert out["expert"]["counters"]["won"] == 4
    experts, trans, _ = _check_store(run, out, 4)
    assert {e["task_id"].split("-")[0] for e in experts} == {"coin", "mapreader", "sorting", "arithmetic"}
    assert any(not t["valid"] or t["next_observation"] != trans[0]["next_observation"] for t in trans)
