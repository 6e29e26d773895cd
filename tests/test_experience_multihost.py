"""Collection under jax.distributed: 2 processes on localhost split the shards, process 0 writes the
manifest, and the store equals a single-process collection record for record."""

import json
import os
import subprocess
import sys

import portpicker

from ee_jax.config import load_config
from ee_jax.experience.collect import run_stage
from ee_jax.records.store import finished_shards, iter_records, load_manifest

ARGS = ["experience.tasks.train=10", "experience.tasks.valid=3", "experience.tasks_per_shard=3",
        "experience.explore.k=3", "experience.reflect.generator=grounded"]


def test_two_processes_write_their_own_shards(tmp_path):
    run = tmp_path / "multi"
    port = portpicker.pick_unused_port()
    worker = os.path.join(os.path.dirname(__file__), "collect_worker.py")
    env = {**os.environ, "PYTHONPATH": os.path.dirname(os.path.dirname(__file__))}
    env.pop("JAX_NUM_CPU_DEVICES", None)
    procs = [subprocess.Popen([sys.executable, worker, str(pid), str(port), f"run_dir={run}", *ARGS], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for pid in range(2)]
    outs = []
    for p in procs:
        out, err = p.communicate(timeout=240)
        assert p.returncode == 0, err[-3000:]
        outs.append(json.loads(out.strip().splitlines()[-1]))
    assert [o["process_count"] for o in outs] == [2, 2]
    assert outs[1]["records"] == {"expert": None, "explore": None, "reflect": None}  # only process 0 reports

    ref = load_config(None, [f"run_dir={tmp_path / 'single'}", *ARGS])
    for stage in ("expert", "explore", "reflect"):
        run_stage(ref, stage, progress=False)
    for kind in ("expert_step", "transition", "reflection"):
        shards = finished_shards(str(run / "data"), kind)
        assert len(shards) == 5  # 4 train shards (3+3+3+1 tasks) + 1 valid
        assert {i: m["process"] for i, m in shards.items()} == {i: i % 2 for i in range(5)}
        single = str(tmp_path / "single" / "data")
        assert list(iter_records(str(run / "data"), kind)) == list(iter_records(single, kind))
        assert load_manifest(str(run / "data"))[kind]["content_sha256"] == load_manifest(single)[kind]["content_sha256"]
