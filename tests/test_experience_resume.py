"""Kill collection midway (SIGKILL, no clean-up) in each stage (expert, explore, reflect), rerun, and compare
with an uninterrupted run."""

import os
import signal
import subprocess
import sys
import time

from ee_jax.config import load_config
from ee_jax.experience.collect import run_stage
from ee_jax.records.store import finished_shards, iter_records, load_manifest

ARGS = ["experience.tasks.train=120", "experience.tasks.valid=8", "experience.tasks_per_shard=4",
        "experience.explore.k=4", "experience.reflect.generator=grounded"]
KINDS = ("expert_step", "transition", "reflection")


def _collect_until(run_dir, marker: str):
    """Start `ee-jax collect all` and SIGKILL it once ``marker`` exists in the data folder."""
    cmd = [sys.executable, "-m", "ee_jax.cli.main", "collect", "all", f"run_dir={run_dir}", *ARGS, "--no-progress"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    path = os.path.join(run_dir, "data", marker)
    deadline = time.time() + 240
    while not os.path.exists(path):
        if proc.poll() is not None:
            raise AssertionError(f"collection ended before {marker} appeared: {proc.stderr.read().decode()[-2000:]}")
        assert time.time() < deadline, "collection did not reach the kill point"
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    proc.wait()


def test_interrupted_collection_resumes_record_for_record(tmp_path):
    ref = load_config(None, [f"run_dir={tmp_path / 'ref'}", *ARGS])
    for stage in ("expert", "explore", "reflect"):
        run_stage(ref, stage, progress=False)

    run = tmp_path / "run"
    n_shards = load_manifest(str(tmp_path / "ref" / "data"))["expert_step"]["shards"]
    assert n_shards == 32  # 30 train + 2 valid
    _collect_until(run, "expert_step-00004.arrayrecord.json")
    assert len(finished_shards(str(run / "data"), "expert_step")) < n_shards  # killed midway
    assert "expert_step" not in load_manifest(str(run / "data"))
    _collect_until(run, "transition-00002.arrayrecord.json")
    assert len(finished_shards(str(run / "data"), "transition")) < n_shards
    manifest = load_manifest(str(run / "data"))
    assert "expert_step" in manifest and "transition" not in manifest and "reflection" not in manifest
    _collect_until(run, "reflection-00002.arrayrecord.json")  # and once more, during the reflections
    assert len(finished_shards(str(run / "data"), "reflection")) < n_shards
    assert "reflection" not in load_manifest(str(run / "data"))

    done = subprocess.run([sys.executable, "-m", "ee_jax.cli.main", "collect", "all", f"run_dir={run}", *ARGS,
                           "--no-progress", "--json"], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    for kind in KINDS:
        a = list(iter_records(str(tmp_path / "ref" / "data"), kind))
        b = list(iter_records(str(run / "data"), kind))
        assert len(a) == len(b) > 0 and a == b, kind
        ma, mb = load_manifest(str(tmp_path / "ref" / "data"))[kind], load_manifest(str(run / "data"))[kind]
        assert ma["content_sha256"] == mb["content_sha256"] and ma["by_split"] == mb["by_split"]
    assert not [f for f in os.listdir(run / "data") if ".tmp" in f]
