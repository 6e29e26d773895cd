"""`ee-jax collect` and `ee-jax data show` from the shipped configs, as a user runs them."""

import json

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


def test_a_refused_command_leaves_the_run_record_byte_identical(tmp_path):
    """A command refused on an existing run (here: exploration with another K than its finished shards) does
    not rewrite ``config.yaml``; the attempt, with its resolved config and the error, goes to
    ``invocations.jsonl``. A successful command records its config."""
    import json
    import os

    run = tmp_path / "run"
    base = ["experience.tasks.train=4", "experience.tasks.valid=1", "experience.explore.k=2", f"run_dir={run}",
            "--no-progress"]
    for stage in ("expert", "explore"):
        assert ee_jax("collect", stage, *base).returncode == 0
    record = (run / "config.yaml").read_bytes()
    refused = ee_jax("collect", "explore", *base, "experience.explore.k=3")
    assert refused.returncode == 2 and "other settings" in refused.stderr
    assert (run / "config.yaml").read_bytes() == record  # byte for byte
    with open(run / "invocations.jsonl") as f:
        (attempt,) = [json.loads(line) for line in f]
    assert attempt["status"] == "failed" and "StageMismatchError" in attempt["error"]
    assert attempt["config"]["experience"]["explore"]["k"] == 3 and attempt["argv"]
    ok = ee_jax("collect", "explore", *base, "seed=0")  # the same settings: nothing to redo, and recorded
    assert ok.returncode == 0 and os.path.getsize(run / "invocations.jsonl") > 0
    assert b"k: 2" in (run / "config.yaml").read_bytes()


def test_a_garbled_sidecar_or_manifest_is_a_one_line_error_naming_the_file(tmp_path):
    run = tmp_path / "run"
    base = ["experience.tasks.train=4", "experience.tasks.valid=1", f"run_dir={run}", "--no-progress"]
    assert ee_jax("collect", "expert", *base).returncode == 0
    side = run / "data" / "expert_step-00000.arrayrecord.json"
    good = side.read_bytes()
    side.write_bytes(good[:26])  # truncated mid-write by something outside ee_jax
    out = ee_jax("data", "stats", str(run))
    assert out.returncode == 2
    (line,) = out.stderr.strip().splitlines()
    assert line.startswith(f"ee-jax: error: {side}: not valid JSON (") and "rerun `ee-jax collect expert`" in line
    side.write_bytes(good)
    manifest = run / "data" / "manifest.json"
    manifest.write_text('{"expert_step": ')
    out = ee_jax("data", "stats", str(run))
    assert out.returncode == 2 and out.stderr.strip().splitlines() == [
        f"ee-jax: error: {manifest}: not valid JSON (Expecting value at line 1 column 17); delete it and rerun the "
        "collection stage: its finished shards are kept and the manifest is written again"]
    manifest.unlink()  # the remedy works: the shards are kept and the manifest is written again
    again = ee_jax("collect", "expert", *base, "--json")
    assert again.returncode == 0 and json.loads(again.stdout.strip().splitlines()[-1])["expert"]["records"] > 0
    assert json.loads(manifest.read_text())["expert_step"]["records"] > 0


def test_a_truncated_shard_is_named_and_rerunning_the_stage_writes_it_again(tmp_path):
    run = tmp_path / "run"
    base = ["experience.tasks.train=4", "experience.tasks.valid=1", f"run_dir={run}", "--no-progress"]
    assert ee_jax("collect", "expert", *base).returncode == 0
    shard = run / "data" / "expert_step-00000.arrayrecord"
    sidecar = json.loads((run / "data" / "expert_step-00000.arrayrecord.json").read_text())
    records = shard.read_bytes()
    assert sidecar["bytes"] == len(records)
    shard.write_bytes(records[: len(records) // 2])
    for args in (("data", "stats", str(run)), ("data", "show", str(run), "--objective", "il")):
        out = ee_jax(*args)
        assert out.returncode == 2, args
        assert out.stderr.strip().splitlines() == [
            f"ee-jax: error: {shard}: {len(records) // 2} bytes, but {len(records)} were written (truncated or "
            "replaced); rerun `ee-jax collect expert` on this run: collection is deterministic and writes exactly "
            "this shard again"], args
    assert ee_jax("collect", "expert", *base).returncode == 0  # the remedy
    assert shard.read_bytes() == records
    again = json.loads((run / "data" / "expert_step-00000.arrayrecord.json").read_text())
    assert again["sha256"] == sidecar["sha256"]


def test_a_write_that_fails_midway_leaves_no_partial_file_and_a_clear_error(tmp_path):
    """A file-size limit (``ulimit -f``) stops the first shard's write: one error line, no partial file; the
    same command without the limit then writes the store a clean run writes."""
    import os
    import resource
    import subprocess
    import sys

    from tests.test_envs_cli import ROOT

    run = tmp_path / "run"
    base = ["experience.tasks.train=16", "experience.tasks.valid=1", f"run_dir={run}", "--no-progress"]

    def limit():
        resource.setrlimit(resource.RLIMIT_FSIZE, (40960, 40960))  # config.yaml fits, a shard does not

    out = subprocess.run([sys.executable, "-m", "ee_jax.cli.main", "collect", "expert", *base], cwd=ROOT,
                         capture_output=True, text=True, timeout=120, preexec_fn=limit)
    assert out.returncode == 2, out.stderr[-2000:]
    (line,) = out.stderr.strip().splitlines()
    assert line.startswith(f"ee-jax: error: writing {run}/data/expert_step-00000.arrayrecord failed (")
    assert "File too large" in line and "no partial file was kept" in line
    assert os.listdir(run / "data") == []
    done = ee_jax("collect", "expert", *base, "--json")
    clean = ee_jax("collect", "expert", *base[:-2], f"run_dir={tmp_path / 'clean'}", "--no-progress", "--json")
    assert json.loads(done.stdout.strip().splitlines()[-1])["expert"]["content_sha256"] == \
        json.loads(clean.stdout.strip().splitlines()[-1])["expert"]["content_sha256"]
