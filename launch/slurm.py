"""Submit one ``ee-jax`` job to a SLURM GPU cluster: one process per node, all of its GPUs.

    python launch/slurm.py --name household --nodes 2 --gpus-per-node 8 --partition gpu \\
        --time 04:00:00 -- run configs/experiments/household.yaml

Writes ``runs/slurm/NAME.sbatch`` (atomically) from ``launch/slurm.sbatch`` and submits it with
``sbatch``. Inside the job, ``srun`` starts the same ``ee-jax`` command once per node with
``distributed.enabled=true``: JAX reads the coordinator (the first node), the process count and
each process's index from SLURM's variables. The run directory must be on a filesystem every node
sees (the usual shared home or scratch); logs go to ``runs/slurm/NAME-JOBID.out``.

``--dry-run`` prints the batch script and the ``sbatch`` command, and writes and submits nothing.
"""

from __future__ import annotations

import argparse
import os
import re
import shlex
import string
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from launch.shell import CommandFailed, Shell, split_command  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TEMPLATE = os.path.join(ROOT, "launch", "slurm.sbatch")


def parse_args(argv: list[str]) -> tuple[argparse.Namespace, list[str]]:
    options, job = split_command(argv)
    p = argparse.ArgumentParser(prog="launch/slurm.py", description=__doc__.split("\n\n")[0],
                                epilog="Everything after -- is the ee-jax command run on every node.")
    p.add_argument("--name", required=True, help="job name (letters, digits, - and _)")
    p.add_argument("--nodes", type=int, default=1)
    p.add_argument("--gpus-per-node", type=int, default=8)
    p.add_argument("--cpus-per-node", type=int, default=16, help="CPU cores per node (environments, data)")
    p.add_argument("--mem", default="0", help="memory per node (sbatch --mem; 0 = all of it)")
    p.add_argument("--time", default="04:00:00", help="wall-clock limit, HH:MM:SS")
    p.add_argument("--partition", default="")
    p.add_argument("--account", default="")
    p.add_argument("--setup", default="", help="shell run on each node before the job, e.g. 'source venv/bin/activate'")
    p.add_argument("--out-dir", default=os.path.join("runs", "slurm"), help="where the script and logs go")
    p.add_argument("--dry-run", action="store_true", help="print the script and the sbatch command only")
    args = p.parse_args(options)
    if not job:
        p.error("no job: put the ee-jax command after --, e.g. -- run configs/experiments/household.yaml")
    if not re.fullmatch(r"[A-Za-z0-9_-]+", args.name):
        p.error(f"--name {args.name!r}: use letters, digits, '-' and '_' only (it names files and the job)")
    if args.nodes < 1 or args.gpus_per_node < 0 or args.cpus_per_node < 1:
        p.error("--nodes and --cpus-per-node must be >= 1, --gpus-per-node >= 0")
    if not re.fullmatch(r"(\d+-)?\d{1,2}(:\d{2}){0,2}", args.time):
        p.error(f"--time {args.time!r}: expected [D-]HH[:MM[:SS]], e.g. 04:00:00")
    return args, job


def render(args, job: list[str], workdir: str) -> str:
    """The batch script: ``#SBATCH`` header, setup, then ``srun`` of the job on every node."""
    optional = [f"#SBATCH --partition={args.partition}"] if args.partition else []
    optional += [f"#SBATCH --account={args.account}"] if args.account else []
    with open(TEMPLATE, encoding="utf-8") as fh:
        template = string.Template(fh.read())
    return template.substitute(
        name=args.name, nodes=args.nodes, gpus=args.gpus_per_node, cpus=args.cpus_per_node, mem=args.mem,
        time=args.time, optional="\n".join(optional), log=os.path.join(args.out_dir, f"{args.name}-%j.out"),
        workdir=shlex.quote(workdir), setup=args.setup or ":",
        command=shlex.join(["ee-jax", *job, "distributed.enabled=true"]),
    )


def write_atomic(path: str, text: str) -> None:
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as fh:
        fh.write(text)
    os.replace(tmp, path)


def main(argv: list[str] | None = None) -> int:
    args, job = parse_args(sys.argv[1:] if argv is None else argv)
    script = render(args, job, os.getcwd())
    path = os.path.join(args.out_dir, f"{args.name}.sbatch")
    sh = Shell(args.dry_run)
    if args.dry_run:
        sh.note(f"{path} would contain:")
        print(script, end="")
    else:
        write_atomic(path, script)
        sh.note(f"wrote {path}")
    try:
        sh.run(["sbatch", "--parsable", path])
    except (CommandFailed, FileNotFoundError) as e:
        print(f"launch/slurm.py: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
