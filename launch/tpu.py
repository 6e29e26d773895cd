"""Run one ``ee-jax`` job on a Cloud TPU slice: create, set up, run on every worker, copy, delete.

    python launch/tpu.py --name ee-v5e-16 --zone us-west4-a --accelerator v5litepod-16 \\
        --spot --bucket gs://my-bucket/ee_jax -- run configs/experiments/household.yaml

Steps, in order (``--steps`` picks a subset, e.g. ``run,copy`` against a slice that is already up):

* ``create``  a queued resource (``--spot`` or ``--reserved``; otherwise on demand), and wait until it
  is ACTIVE (``--wait-timeout``: a request still queued after it is an error);
* ``setup``   pack this checkout (tracked and untracked files git does not ignore), copy it to every
  worker, unpack it in ``~/ee_jax`` and ``pip install -e '.[tpu]'`` there;
* ``run``     the same ``ee-jax`` command on every worker at once, with ``distributed.enabled=true``
  (JAX finds the coordinator, process count and index from the TPU metadata); every worker's output
  streams to this terminal and is also kept in ``~/ee_jax/launch.log`` on the worker;
* ``copy``    every worker's copy of the run directory to ``--bucket`` (one prefix: per-host shards
  and checkpoint files have per-process names, so together they form the whole run);
* ``delete``  the queued resource and its TPU VMs, also when an earlier step failed (``--keep`` to
  leave the slice up for inspection).

On a slice with several workers every worker must see the same run directory (the collected shards,
the tokenizer, the checkpoints): point ``run_dir=`` at shared storage, e.g. a Filestore share or the
bucket mounted with gcsfuse through ``--setup-command``.

``--dry-run`` prints every command and executes nothing (not even ``gcloud`` lookups).
"""

from __future__ import annotations

import argparse
import os
import shlex
import subprocess
import sys
import tarfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from launch.shell import CommandFailed, Shell, results_dir, split_command  # noqa: E402

STEPS = ("create", "setup", "run", "copy", "delete")
REMOTE_DIR = "~/ee_jax"
ARCHIVE = "ee_jax-src.tar.gz"
READY, FAILED = "ACTIVE", ("FAILED", "SUSPENDED", "SUSPENDING")


def parse_args(argv: list[str]) -> tuple[argparse.Namespace, list[str]]:
    options, job = split_command(argv)
    p = argparse.ArgumentParser(prog="launch/tpu.py", description=__doc__.split("\n\n")[0],
                                epilog="Everything after -- is the ee-jax command run on every worker.")
    p.add_argument("--name", required=True, help="queued resource and TPU node name")
    p.add_argument("--zone", required=True)
    p.add_argument("--project", default="", help="default: gcloud's configured project")
    p.add_argument("--accelerator", default="v5litepod-8", help="accelerator type, e.g. v5litepod-16, v4-32")
    p.add_argument("--runtime", default="v2-alpha-tpuv5-lite", help="TPU VM runtime (software) version")
    tier = p.add_mutually_exclusive_group()
    tier.add_argument("--spot", action="store_true", help="spot capacity (cheaper, preemptible)")
    tier.add_argument("--reserved", action="store_true", help="use the project's reservation")
    p.add_argument("--bucket", default="", help="gs:// prefix the run directory is copied to")
    p.add_argument("--extras", default="tpu", help="setup.py extras installed on the workers")
    p.add_argument("--setup-command", default="",
                   help="extra shell run on every worker after the install, e.g. mounting shared storage")
    p.add_argument("--steps", default=",".join(STEPS), help=f"comma-separated subset of {','.join(STEPS)}")
    p.add_argument("--keep", action="store_true", help="do not delete the slice at the end")
    p.add_argument("--wait-timeout", type=float, default=3600.0, help="seconds to wait for ACTIVE")
    p.add_argument("--poll", type=float, default=30.0, help="seconds between state checks")
    p.add_argument("--dry-run", action="store_true", help="print the commands, run nothing")
    args = p.parse_args(options)
    args.steps = [s.strip() for s in args.steps.split(",") if s.strip()]
    unknown = [s for s in args.steps if s not in STEPS]
    if unknown:
        p.error(f"--steps: unknown step(s) {unknown}; expected a subset of {list(STEPS)}")
    if {"run", "copy"} & set(args.steps) and not job:
        p.error("no job: put the ee-jax command after --, e.g. -- run configs/experiments/household.yaml")
    if "copy" in args.steps and not args.bucket.startswith("gs://"):
        p.error(f"--bucket {args.bucket!r}: the copy step needs a gs:// prefix (or leave 'copy' out of --steps)")
    return args, job


def _where(args) -> list[str]:
    return [f"--zone={args.zone}"] + ([f"--project={args.project}"] if args.project else [])


def _ssh(args, command: str) -> list[str]:
    return ["gcloud", "compute", "tpus", "tpu-vm", "ssh", args.name, *_where(args), "--worker=all",
            f"--command={command}"]


def create(sh: Shell, args) -> None:
    tier = ["--spot"] if args.spot else ["--reserved"] if args.reserved else []
    sh.run(["gcloud", "compute", "tpus", "queued-resources", "create", args.name, f"--node-id={args.name}",
            *_where(args), f"--accelerator-type={args.accelerator}", f"--runtime-version={args.runtime}", *tier])
    describe = ["gcloud", "compute", "tpus", "queued-resources", "describe", args.name, *_where(args),
                "--format=value(state.state)"]
    if sh.dry_run:
        sh.run(describe, capture=True)
        sh.note(f"repeat the line above every {args.poll:g} s until it prints {READY} "
                f"(error on {'/'.join(FAILED)} or after {args.wait_timeout:g} s)")
        return
    deadline = time.monotonic() + args.wait_timeout
    while True:
        state = sh.run(describe, capture=True).strip()
        if state == READY:
            return
        if state in FAILED:
            raise CommandFailed(f"queued resource {args.name} is {state}; see "
                                f"`gcloud compute tpus queued-resources describe {args.name} --zone={args.zone}`")
        if time.monotonic() > deadline:
            raise CommandFailed(f"queued resource {args.name} still {state or 'unknown'} after "
                                f"{args.wait_timeout:g} s (--wait-timeout)")
        sh.note(f"{args.name}: {state or 'unknown'}, waiting")
        time.sleep(args.poll)


def source_files(root: str) -> list[str]:
    """Tracked and untracked-but-not-ignored files of the checkout (what the job needs, no runs/)."""
    out = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=root,
                         check=True, capture_output=True).stdout.decode()
    return sorted(f for f in out.split("\0") if f and os.path.isfile(os.path.join(root, f)))


def pack_source(root: str, out_path: str) -> int:
    """Write the checkout as a gzip tarball with fixed metadata; returns the number of files."""
    files = source_files(root)
    os.makedirs(os.path.dirname(out_path) or ".", exist_ok=True)
    tmp = out_path + ".tmp"
    with tarfile.open(tmp, mode="w:gz") as tar:
        for f in files:
            info = tar.gettarinfo(os.path.join(root, f), arcname=f)
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            with open(os.path.join(root, f), "rb") as fh:
                tar.addfile(info, fh)
    os.replace(tmp, out_path)
    return len(files)


def setup(sh: Shell, args, root: str, archive: str) -> None:
    if sh.dry_run:
        sh.note(f"pack {len(source_files(root))} files of {root} (git ls-files, ignored files left out) "
                f"into {archive}")
    else:
        sh.note(f"packed {pack_source(root, archive)} files into {archive}")
    sh.run(["gcloud", "compute", "tpus", "tpu-vm", "scp", archive, f"{args.name}:~/{ARCHIVE}", *_where(args),
            "--worker=all"])
    sh.run(_ssh(args, f"set -e; mkdir -p {REMOTE_DIR} && tar -xzf ~/{ARCHIVE} -C {REMOTE_DIR} && "
                      f"cd {REMOTE_DIR} && python3 -m pip install -q -e '.[{args.extras}]'"
                      + (f" && {args.setup_command}" if args.setup_command else "")))


def run_job(sh: Shell, args, job: list[str]) -> None:
    command = shlex.join(["ee-jax", *job, "distributed.enabled=true"])
    sh.run(_ssh(args, f"set -o pipefail; cd {REMOTE_DIR} && {command} 2>&1 | tee -a launch.log"))


def copy_results(sh: Shell, args, run_dir: str) -> None:
    dest = f"{args.bucket.rstrip('/')}/{args.name}/{run_dir.strip('/')}"
    sh.run(_ssh(args, f"cd {REMOTE_DIR} && gcloud storage rsync --recursive {shlex.quote(run_dir)} "
                      f"{shlex.quote(dest)} && gcloud storage cp launch.log {shlex.quote(dest)}/"
                      f"launch-$(hostname).log"))


def delete(sh: Shell, args) -> None:
    sh.run(["gcloud", "compute", "tpus", "queued-resources", "delete", args.name, *_where(args), "--force",
            "--quiet"])


def main(argv: list[str] | None = None) -> int:
    args, job = parse_args(sys.argv[1:] if argv is None else argv)
    sh = Shell(args.dry_run)
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    run_dir = results_dir(job) if job else ""
    failed, ran = None, False
    try:
        if "create" in args.steps:
            create(sh, args)
        if "setup" in args.steps:
            setup(sh, args, root, os.path.join(root, "runs", ARCHIVE))
        if "run" in args.steps:
            ran = True
            run_job(sh, args, job)
    except (CommandFailed, KeyboardInterrupt) as e:
        failed = e
    try:
        # Copied also after a failed or interrupted job: a partial run resumes from its checkpoints.
        if "copy" in args.steps and (ran or "run" not in args.steps):
            copy_results(sh, args, run_dir)
    except (CommandFailed, KeyboardInterrupt) as e:
        failed = failed or e
    finally:
        if "delete" in args.steps and not args.keep:
            delete(sh, args)  # an idle slice costs money; deleting also withdraws a still-queued request
    if failed is not None:
        print(f"launch/tpu.py: {failed}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
