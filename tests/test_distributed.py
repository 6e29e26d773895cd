"""Two real processes on localhost under jax.distributed (gloo), 4 CPU devices each, through the real
CLI: ``ee-jax collect all``, then ``ee-jax train --method il`` stopped part way (a checkpoint), resumed
and stopped again, and finished on one process (a checkpoint of two hosts resumed on one). The training
losses equal one process's on 8 devices, step for step; ``ee-jax eval``
of the checkpoint on two processes (each playing its share of the episodes) gives one process's episodes
and world-model metrics, and two GRPO
steps (``ee-jax rl``) give one process's losses."""

import json
import os
import shutil
import signal
import subprocess
import sys
import threading

import numpy as np
import portpicker
import pytest

from tests.test_recipes import AGENT
from tests.test_rl import RL

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OVERRIDES = AGENT + [
    "mesh.data=2", "mesh.fsdp=2", "mesh.tensor=2", "experience.tasks.train=6", "experience.tasks.valid=2",
    "experience.tasks_per_shard=2", "experience.reflect.alternatives=1", "recipe.epochs=2", "recipe.valid_tasks=0",
    "recipe.select=last", "train.eval_every=3", "train.checkpoint_every=100",
]


def _env(devices: int) -> dict:
    env = {**os.environ, "PYTHONPATH": ROOT, "JAX_NUM_CPU_DEVICES": str(devices), "JAX_PLATFORMS": "cpu",
           "PYTHONFAULTHANDLER": "1"}
    return env


def _cli(args: list[str], run_dir: str, devices: int = 8, flags: tuple[str, ...] = ()) -> dict:
    out = subprocess.run([sys.executable, "-m", "ee_jax.cli.main", *args, *OVERRIDES, f"run_dir={run_dir}",
                          "--no-progress", "--json", *flags], capture_output=True, text=True, env=_env(devices),
                         timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def _stderr_excerpt(err: str) -> str:
    """The first Python traceback (the cause; an abort's stack dump follows it and fills the tail) and the tail."""
    start = err.find("Traceback (most recent call last)")
    if start < 0 or start >= len(err) - 4000:
        return err[-6000:]
    return err[start:start + 4000] + "\n[...]\n" + err[-4000:]


def _two_processes(args: list[str], run_dir: str, port: int, flags: tuple[str, ...] = ()) -> list[dict]:
    procs = []
    for pid in range(2):
        dist = ["distributed.enabled=true", "distributed.auto=false",
                f"distributed.coordinator_address=127.0.0.1:{port}", "distributed.num_processes=2",
                f"distributed.process_id={pid}", "distributed.initialization_timeout_s=60"]
        procs.append(subprocess.Popen(
            [sys.executable, "-m", "ee_jax.cli.main", *args, *OVERRIDES, *dist, f"run_dir={run_dir}", "--no-progress",
             "--json", *flags], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env(4)))
    results = [None, None]

    def wait(i):
        results[i] = procs[i].communicate()

    threads = [threading.Thread(target=wait, args=(i,), daemon=True) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    if any(t.is_alive() for t in threads):  # a hang: stop both, then show where each was (faulthandler)
        for p in procs:
            p.send_signal(signal.SIGABRT)
        for t in threads:
            t.join()
        shown = [f"--- process {i} (rc {p.returncode}) stderr:\n{r[1][-6000:]}"
                 for i, (p, r) in enumerate(zip(procs, results))]
        raise AssertionError(f"{args[:3]} on two processes did not finish in 300 s:\n" + "\n".join(shown))
    if any(p.returncode != 0 for p in procs):  # both logs: one process's failure is often the other's hang
        raise AssertionError(f"{args[:3]} on two processes failed:\n" + "\n".join(
            f"--- process {i} (rc {p.returncode}) stdout (its JSON line if it got that far):\n{r[0][-500:]}\n"
            f"stderr:\n{_stderr_excerpt(r[1])}" for i, (p, r) in enumerate(zip(procs, results))))
    return [json.loads(out.strip().splitlines()[-1]) for out, _ in results]


def _losses(run_dir: str) -> dict[int, float]:
    with open(os.path.join(run_dir, "metrics.jsonl")) as f:
        rows = [json.loads(line) for line in f]
    return {r["step"]: r["il/train/loss"] for r in rows if "il/train/loss" in r}


def _rl_losses(run_dir: str) -> dict[int, float]:
    with open(os.path.join(run_dir, "metrics.jsonl")) as f:
        rows = [json.loads(line) for line in f]
    return {r["step"]: r["grpo_from_il/rl/loss"] for r in rows if "grpo_from_il/rl/loss" in r}


def test_two_process_collect_train_checkpoint_resume_matches_one_process(tmp_path):
    from ee_jax.records.store import load_manifest

    multi, single = str(tmp_path / "multi"), str(tmp_path / "single")
    _two_processes(["collect", "all"], multi, portpicker.pick_unused_port())
    first = _two_processes(["train", "--method", "il", "train.stop_after_steps=3"], multi,
                           portpicker.pick_unused_port())
    assert all(o["methods"]["il"]["stopped_at"] == 3 for o in first)
    second = _two_processes(["train", "--method", "il", "train.stop_after_steps=2"], multi,
                            portpicker.pick_unused_port())
    assert all(o["methods"]["il"].get("stopped_at") == 5 for o in second), second[0]["methods"]["il"]
    # the rest on one process: a checkpoint written by two hosts resumes on another host count
    done = _cli(["train", "--method", "il"], multi)
    steps = done["methods"]["il"]["updates"]
    assert steps > 5 and done["methods"]["il"]["stages"][0]["resumed_from"] == 5

    # The reference trains on the same store (two-process collection equals one-process collection record
    # for record: tests/test_experience_multihost.py).
    writers = set()
    for name in os.listdir(os.path.join(multi, "data")):
        if name.endswith(".arrayrecord.json"):
            with open(os.path.join(multi, "data", name)) as f:
                writers.add(json.load(f)["process"])
    assert writers == {0, 1}  # each process collected its own shards
    assert load_manifest(os.path.join(multi, "data"))["expert_step"]["units"] == 8
    for part in ("data", "tokenizer"):
        shutil.copytree(os.path.join(multi, part), os.path.join(single, part))
    ref = _cli(["train", "--method", "il"], single)
    assert ref["methods"]["il"]["updates"] == steps
    got, want = _losses(multi), _losses(single)
    assert sorted(got) == sorted(want) == list(range(1, steps + 1))
    np.testing.assert_allclose([got[s] for s in sorted(got)], [want[s] for s in sorted(want)], rtol=1e-5)

    # Evaluation under jax.distributed: each host plays its share of the greedy episodes on its own copy
    # of the model, and the hosts split the world-model transitions; the result equals one process's.
    flags = ("--stage", "il", "--n", "3", "--split", "test")
    two = _two_processes(["eval", multi], multi, portpicker.pick_unused_port(), flags)
    episodes_file = os.path.join(multi, two[0]["splits"]["test"]["episodes_file"])
    with open(episodes_file) as f:
        two_episodes = f.read()
    one = _cli(["eval", multi], multi, flags=flags)
    with open(episodes_file) as f:
        assert f.read() == two_episodes  # the same episodes, turn for turn
    assert one["splits"]["test"]["engine"]["episodes_per_host"] == [3]
    for got in two:
        assert got["splits"]["test"]["engine"]["episodes_per_host"] == [2, 1]  # each host played its share
        assert got["splits"]["test"]["episodes"] == one["splits"]["test"]["episodes"] == 3
        for key in ("success", "score", "steps", "invalid_rate"):
            assert got["splits"]["test"][key] == one["splits"]["test"][key], key
        assert got["world_model"]["transitions"] == one["world_model"]["transitions"] > 0
        np.testing.assert_allclose(got["world_model"]["loss"], one["world_model"]["loss"], rtol=1e-4)
        assert got["world_model"]["token_accuracy"] == pytest.approx(one["world_model"]["token_accuracy"])

    # RL under jax.distributed: each host plays its share of the seeded rollouts and every host gets them
    # all; the update sees those rows once, so two GRPO steps from the same checkpoint give one process's
    # losses.
    rl = ["rl", "--from", "il", *RL, "rl.steps=2"]
    shutil.copytree(multi, single_rl := str(tmp_path / "single_rl"), symlinks=True)
    _two_processes(rl, multi, portpicker.pick_unused_port())
    _cli(rl, single_rl)
    got, want = _rl_losses(multi), _rl_losses(single_rl)
    assert sorted(got) == sorted(want) == [1, 2]
    np.testing.assert_allclose([got[s] for s in (1, 2)], [want[s] for s in (1, 2)], rtol=1e-4)


def test_two_process_policy_exploration_and_self_reflection(tmp_path):
    """Collection stages that run the policy under jax.distributed: each host proposes alternatives and
    writes reflections for its own shards with its own copy of the model (different sampler calls on each
    host, which a global mesh would deadlock on), and the store holds every expert state's branches."""
    from ee_jax.records.store import load_manifest

    run = str(tmp_path / "policy")
    extra = ["experience.explore.strategy=policy", "experience.explore.max_new_tokens=8",
             "experience.reflect.generator=self", "experience.reflect.max_new_tokens=12",
             "experience.reflect.min_words=0", "experience.tasks.train=4", "experience.tasks.valid=0"]
    outs = _two_processes(["collect", "all", *extra], run, portpicker.pick_unused_port())
    manifest = load_manifest(os.path.join(run, "data"))
    states, explore = manifest["expert_step"]["records"], manifest["transition"]
    assert states > 0 and explore["settings"]["policy"].startswith("init:")
    assert explore["counters"]["states"] == states and explore["counters"]["proposals"] > 0
    assert explore["records"] == states + explore["counters"]["branches"] > states  # the expert step + branches
    reflect = manifest["reflection"]
    assert reflect["records"] == states and sum(reflect["counters"]["verdict"].values()) == states, reflect
    writers = set()
    for name in os.listdir(os.path.join(run, "data")):
        if name.startswith("transition") and name.endswith(".arrayrecord.json"):
            with open(os.path.join(run, "data", name)) as f:
                writers.add(json.load(f)["process"])
    assert writers == {0, 1}, outs


def _barrier_workers(case: str, run_dir: str) -> list[dict]:
    port = portpicker.pick_unused_port()
    procs = [subprocess.Popen([sys.executable, os.path.join(ROOT, "tests", "barrier_worker.py"), str(pid), str(port),
                               run_dir, case], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env(1))
             for pid in range(2)]
    outs = []
    for pid, p in enumerate(procs):
        try:
            out, err = p.communicate(timeout=120)
        except subprocess.TimeoutExpired:
            for q in procs:
                q.kill()
            raise AssertionError(f"barrier test {case!r}: process {pid} hung (the hosts met different "
                                 "barriers)") from None
        assert p.returncode == 0, f"process {pid}:\n{_stderr_excerpt(err)}"
        outs.append(json.loads(out.strip().splitlines()[-1]))
    return outs


def test_tokenizer_barrier_is_met_by_a_host_that_finds_the_tokenizer_trained(tmp_path):
    """A host that looks for the scratch tokenizer after process 0 wrote it still meets process 0 at the
    tokenizer barrier (it used to skip it, leaving process 0's barrier to pair with its next collective)."""
    outs = _barrier_workers("tokenizer", str(tmp_path / "run"))
    assert [o["pid"] for o in outs] == [0, 1]
    assert outs[0]["vocab"] == outs[1]["vocab"] == 300
    assert outs[0]["gathered"] == outs[1]["gathered"] == [1, 2]


def test_host_barrier_times_out_naming_the_barrier(tmp_path):
    err = _barrier_workers("timeout", str(tmp_path / "run"))[0]["error"]
    assert "ee_jax_test_lonely" in err and "within 2 s" in err and "distributed.barrier_timeout_s" in err, err


def test_orbax_barriers_use_the_coordination_service():
    """What initialize() switches on: Orbax's barriers on the coordination service (safe from its
    async-save thread, with a timeout), not device collectives that can interleave with training's."""
    from orbax.checkpoint._src.multihost import multihost

    from ee_jax.parallel.distributed import use_orbax_coordination_barriers

    use_orbax_coordination_barriers()
    assert multihost.EXPERIMENTAL_ORBAX_USE_DISTRIBUTED_BARRIER.value is True
