"""launch/tpu.py and launch/slurm.py: dry runs print every command and run none; real runs call the
cloud CLIs in order (a recording stand-in for ``gcloud`` / ``sbatch`` on PATH: no cloud from CI)."""

import os
import shlex
import subprocess
import sys
import tarfile

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
JOB = ["run", "configs/experiments/household.yaml", "recipe.seeds=[0]"]

# Records every call; `describe` reports PROVISIONING once, then ACTIVE; the job fails when FAIL_RUN=1.
FAKE_GCLOUD = r"""#!/bin/bash
echo "$*" >> "$CALLS"
case "$*" in
  *"queued-resources describe"*)
    if [ -e "$CALLS.polled" ]; then echo ACTIVE; else touch "$CALLS.polled"; echo PROVISIONING; fi ;;
  *"ee-jax "*) [ "${FAIL_RUN:-0}" = 1 ] && exit 3 ;;
esac
exit 0
"""


def _bin(tmp_path, name, body):
    d = tmp_path / "bin"
    d.mkdir(exist_ok=True)
    (d / name).write_text(body)
    (d / name).chmod(0o755)
    return {**os.environ, "PATH": f"{d}:{os.environ['PATH']}", "CALLS": str(tmp_path / "calls.txt")}


def _launch(script, args, env, cwd=ROOT):
    return subprocess.run([sys.executable, os.path.join(ROOT, "launch", script), *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=120)


TPU = ["--name", "ee-t", "--zone", "us-west4-a", "--accelerator", "v5litepod-16", "--spot",
       "--bucket", "gs://bkt/ee", "--poll", "0"]


def test_tpu_dry_run_prints_each_step_in_order_and_runs_nothing(tmp_path):
    env = _bin(tmp_path, "gcloud", FAKE_GCLOUD)
    archive = os.path.join(ROOT, "runs", "ee_jax-src.tar.gz")
    before = os.path.getmtime(archive) if os.path.exists(archive) else None
    r = _launch("tpu.py", [*TPU, "--dry-run", "--", *JOB], env)
    assert r.returncode == 0, r.stderr
    assert not (tmp_path / "calls.txt").exists()  # no gcloud call at all
    assert (os.path.getmtime(archive) if os.path.exists(archive) else None) == before  # nothing packed
    cmds = [shlex.split(line) for line in r.stdout.splitlines() if not line.startswith("#")]
    assert [c[:5] for c in cmds] == [
        ["gcloud", "compute", "tpus", "queued-resources", "create"],
        ["gcloud", "compute", "tpus", "queued-resources", "describe"],
        ["gcloud", "compute", "tpus", "tpu-vm", "scp"],
        ["gcloud", "compute", "tpus", "tpu-vm", "ssh"],  # unpack + install
        ["gcloud", "compute", "tpus", "tpu-vm", "ssh"],  # the job
        ["gcloud", "compute", "tpus", "tpu-vm", "ssh"],  # copy to the bucket
        ["gcloud", "compute", "tpus", "queued-resources", "delete"],
    ]
    create = cmds[0]
    assert "--spot" in create and "--accelerator-type=v5litepod-16" in create and "--node-id=ee-t" in create
    install, job, copy = (c[-1] for c in cmds[3:6])
    assert all("--worker=all" in c for c in cmds[2:6])
    assert "pip install -q -e '.[tpu]'" in install
    assert "ee-jax run configs/experiments/household.yaml 'recipe.seeds=[0]' distributed.enabled=true" in job
    # run_dir comes from the config (configs/experiments/household.yaml: runs/exp-household)
    assert "rsync --recursive runs/exp-household gs://bkt/ee/ee-t/runs/exp-household" in copy


def test_tpu_run_packs_the_checkout_polls_and_deletes_even_after_a_failed_job(tmp_path):
    env = _bin(tmp_path, "gcloud", FAKE_GCLOUD)
    r = _launch("tpu.py", [*TPU, "--", *JOB, "run_dir=runs/elsewhere"], env)
    assert r.returncode == 0, r.stderr
    calls = (tmp_path / "calls.txt").read_text().splitlines()
    assert [c.split()[3] for c in calls] == ["create", "describe", "describe", "scp", "ssh", "ssh", "ssh",
                                             "delete"]
    assert "rsync --recursive runs/elsewhere gs://bkt/ee/ee-t/runs/elsewhere" in calls[6]
    with tarfile.open(os.path.join(ROOT, "runs", "ee_jax-src.tar.gz")) as tar:
        names = set(tar.getnames())
    assert {"setup.py", "launch/tpu.py", "ee_jax/__init__.py"} <= names
    assert not any(n.startswith(("runs/", "models/")) for n in names)  # git-ignored outputs stay home

    (tmp_path / "calls.txt").unlink()
    (tmp_path / "calls.txt.polled").unlink()
    r = _launch("tpu.py", [*TPU, "--", *JOB], {**env, "FAIL_RUN": "1"})
    assert r.returncode == 1 and "exit status 3" in r.stderr
    calls = (tmp_path / "calls.txt").read_text().splitlines()
    assert "rsync" in calls[-2] and " delete " in calls[-1]  # partial results kept, slice not left running


def test_tpu_keep_and_step_subsets(tmp_path):
    env = _bin(tmp_path, "gcloud", FAKE_GCLOUD)
    r = _launch("tpu.py", [*TPU, "--steps", "run,copy", "--keep", "--", *JOB], env)
    assert r.returncode == 0, r.stderr
    calls = (tmp_path / "calls.txt").read_text().splitlines()
    assert len(calls) == 2 and "ee-jax run" in calls[0] and "rsync" in calls[1]


@pytest.mark.parametrize("args,message", [
    (["--steps", "create,boot"], "unknown step(s) ['boot']"),
    (["--bucket", "/tmp/x"], "the copy step needs a gs:// prefix"),
])
def test_tpu_bad_options_name_the_option(tmp_path, args, message):
    env = _bin(tmp_path, "gcloud", FAKE_GCLOUD)
    r = _launch("tpu.py", [*TPU, *args, "--dry-run", "--", *JOB], env)
    assert r.returncode == 2 and message in r.stderr
    r = _launch("tpu.py", [*TPU, "--dry-run"], env)
    assert r.returncode == 2 and "no job" in r.stderr


SLURM = ["--name", "hh", "--nodes", "2", "--gpus-per-node", "4", "--partition", "gpu", "--time", "02:00:00"]


def test_slurm_dry_run_prints_a_valid_script_and_writes_nothing(tmp_path):
    env = _bin(tmp_path, "sbatch", '#!/bin/bash\necho "$*" >> "$CALLS"; echo 4242\n')
    r = _launch("slurm.py", [*SLURM, "--out-dir", str(tmp_path / "jobs"), "--dry-run", "--", *JOB], env)
    assert r.returncode == 0, r.stderr
    assert not (tmp_path / "calls.txt").exists() and not (tmp_path / "jobs").exists()
    lines = r.stdout.splitlines()
    assert lines[-1] == f"sbatch --parsable {tmp_path}/jobs/hh.sbatch"
    script = "\n".join(lines[1:-1]) + "\n"
    for directive in ("--nodes=2", "--ntasks-per-node=1", "--gpus-per-node=4", "--time=02:00:00",
                      "--partition=gpu", "--signal=B:TERM@120"):
        assert f"#SBATCH {directive}\n" in script
    assert ("srun --kill-on-bad-exit=1 ee-jax run configs/experiments/household.yaml 'recipe.seeds=[0]' "
            "distributed.enabled=true &") in script
    (tmp_path / "hh.sh").write_text(script)
    assert subprocess.run(["bash", "-n", str(tmp_path / "hh.sh")]).returncode == 0


def test_slurm_writes_the_script_and_submits_it(tmp_path):
    env = _bin(tmp_path, "sbatch", '#!/bin/bash\necho "$*" >> "$CALLS"; echo 4242\n')
    out = tmp_path / "jobs"
    r = _launch("slurm.py", [*SLURM, "--out-dir", str(out), "--setup", "source venv/bin/activate", "--", *JOB], env)
    assert r.returncode == 0, r.stderr
    assert "4242" in r.stdout  # sbatch's job id reaches the user
    assert (tmp_path / "calls.txt").read_text().split() == ["--parsable", str(out / "hh.sbatch")]
    text = (out / "hh.sbatch").read_text()
    assert "source venv/bin/activate\n" in text and f"cd {ROOT}\n" in text


@pytest.mark.parametrize("args,message", [
    (["--time", "4h"], "--time '4h'"),
    (["--name", "a b"], "--name 'a b'"),
    (["--nodes", "0"], "--nodes"),
])
def test_slurm_bad_options_name_the_option(tmp_path, args, message):
    r = _launch("slurm.py", [*SLURM, *args, "--dry-run", "--", *JOB], dict(os.environ))
    assert r.returncode == 2 and message in r.stderr
