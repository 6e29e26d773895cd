"""EnvPool: results in order, crash detection and retry, kill -9 mid-run, memory bound, shutdown."""

import os
import signal
import subprocess
import sys
import threading
import time

import pytest

from ee_jax.envs import make_env, run_oracle
from ee_jax.envs.pool import EnvPool, PoolError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with open(f"/proc/{pid}/stat") as f:  # a zombie is dead for our purposes
        return f.read().split()[2] != "Z"


@pytest.fixture(scope="module")
def pool():
    with EnvPool("household", num_workers=2, java_heap_mb=300) as p:
        yield p


def test_map_matches_serial_oracle_and_keeps_order(pool):
    env = make_env("household")
    tasks = env.make_tasks("train", 6)
    got = pool.map("ee_jax.envs.pool:oracle_item", [{"task": t.to_json()} for t in tasks])
    for t, g in zip(tasks, got):
        ep = run_oracle(env, t)
        assert g["task_id"] == t.id and g["actions"] == ep.actions and g["observations"] == ep.observations
        assert g["won"]


def test_branch_item_matches_in_process_branch(pool):
    from ee_jax.envs import branch

    env = make_env("household")
    task = env.make_tasks("train", 1, start=3)[0]
    ep = run_oracle(env, task)
    env.reset(task)
    for a in ep.actions[:2]:
        env.step(a)
    alts = env.admissible_actions()[:4]
    local = [b.to_json() for b in branch(env, task, ep.actions[:2], alts)]
    remote = pool.map("ee_jax.envs.pool:branch_item",
                      [{"task": task.to_json(), "prefix": ep.actions[:2], "alternatives": alts}])[0]
    assert remote == local


def test_worker_env_gets_java_heap_option(pool):
    out = pool.map("tests.pool_work:environ", [{}])[0]
    assert "-Xmx300m" in out["java_tool_options"] and out["env"] == "household"


def test_crashing_item_is_retried_once_and_nothing_is_lost_or_duplicated(tmp_path, pool):
    log, marker = str(tmp_path / "log"), str(tmp_path / "marker")
    items = [{"value": i, "crash": i == 3, "marker": marker, "log": log} for i in range(8)]
    restarts = pool.restarts
    got = pool.map("tests.pool_work:crash_once", items)
    assert [g["value"] for g in got] == [2 * i for i in range(8)]
    assert os.path.exists(marker) and pool.restarts == restarts + 1
    with open(log) as f:
        assert sorted(int(x) for x in f.read().split()) == list(range(8))  # each item completed exactly once


def test_worker_killed_from_outside_mid_run(tmp_path):
    with EnvPool("household", num_workers=2) as p:
        victim = p.worker_pids()[0]
        threading.Timer(0.6, os.kill, (victim, signal.SIGKILL)).start()
        items = [{"seconds": 0.15, "value": i} for i in range(16)]
        t0 = time.time()
        got = p.map("ee_jax.envs.pool:sleep_item", items)
        assert [g["value"] for g in got] == list(range(16))
        assert p.restarts >= 1 and victim not in p.worker_pids() and not _alive(victim)
        assert victim not in {g["pid"] for g in got[8:]} or time.time() - t0 < 0.6


def test_item_that_always_kills_its_worker_gives_up_with_a_clear_error():
    with EnvPool("household", num_workers=1, max_retries=1) as p:
        with pytest.raises(PoolError, match=r"work item 0 .*killed its worker 2 times"):
            p.map("tests.pool_work:always_crash", [{}])
        assert p.map("ee_jax.envs.pool:sleep_item", [{"value": 7}])[0]["value"] == 7  # still usable


def test_exception_in_work_function_names_the_item(pool):
    with pytest.raises(PoolError, match=r"(?s)work item 1 .*ValueError: bad item 11"):
        pool.map("tests.pool_work:raise_error", [{"value": 10}, {"value": 11}])


def test_memory_bound_recycles_workers():
    with EnvPool("household", num_workers=1, max_rss_mb=200) as p:
        pids = [g["pid"] for g in p.map("tests.pool_work:allocate", [{"mb": 300}, {"mb": 300}, {"mb": 1}])]
        assert pids[0] != pids[1] != pids[2] and p.restarts == 2


def test_non_json_item_is_refused_before_running():
    with EnvPool("household", num_workers=1) as p, pytest.raises(TypeError):
        p.map("ee_jax.envs.pool:sleep_item", [{"value": object()}])


def test_close_and_ctrl_c_leave_no_worker_behind(tmp_path):
    script = tmp_path / "run_pool.py"
    script.write_text(
        "import sys\n"
        "from ee_jax.envs.pool import EnvPool\n"
        "p = EnvPool('household', num_workers=2)\n"
        "print(' '.join(map(str, p.worker_pids())), flush=True)\n"
        "p.map('ee_jax.envs.pool:sleep_item', [{'seconds': 30}] * 4)\n")
    proc = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True, cwd=ROOT,
                            env={**os.environ, "PYTHONPATH": ROOT})
    pids = [int(x) for x in proc.stdout.readline().split()]
    time.sleep(1.5)
    proc.send_signal(signal.SIGINT)
    proc.wait(timeout=30)
    assert proc.returncode != 0
    deadline = time.time() + 10
    while any(_alive(p) for p in pids) and time.time() < deadline:
        time.sleep(0.1)
    assert not any(_alive(p) for p in pids)
