"""Run one benchmark against two versions of ee_jax, side by side on the same machine: a base commit (a
temporary ``git worktree``) and the working tree.

Usage::

    python bench/ab.py --base HEAD -- bench/sampler.py --no-torch --batches 1,32
    python bench/ab.py --base 4bc163a --rounds 2 -- bench/sampler.py --no-torch

The benchmark script is the working tree's (so both versions are measured by the same code); only the
``ee_jax`` package it imports differs (``PYTHONPATH``). Rounds alternate base / new so drifting machine
load hits both. The last stdout line is one JSON object: each version's results (the benchmark's own last
JSON line, per round), and ``ratio``: new / base for every numeric figure both report (from the last round),
keyed by its dotted path.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _last_json(stdout: str) -> dict:
    for line in reversed(stdout.strip().splitlines()):
        if line.startswith("{"):
            return json.loads(line)
    raise ValueError("the benchmark printed no JSON line")


def _numbers(obj, prefix: str = "") -> dict[str, float]:
    out = {}
    if isinstance(obj, dict):
        for k, v in obj.items():
            out.update(_numbers(v, f"{prefix}{k}."))
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            out.update(_numbers(v, f"{prefix}{i}."))
    elif isinstance(obj, (int, float)) and not isinstance(obj, bool):
        out[prefix.rstrip(".")] = float(obj)
    return out


def run(tree: str, script: list[str]) -> dict:
    env = dict(os.environ, PYTHONPATH=tree + os.pathsep + os.environ.get("PYTHONPATH", ""))
    cmd = [sys.executable, os.path.join(ROOT, script[0]), *script[1:]]
    proc = subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True, check=False)
    if proc.returncode:
        raise SystemExit(f"{' '.join(cmd)} (ee_jax from {tree}) failed:\n{proc.stderr[-3000:]}")
    return _last_json(proc.stdout)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--base", required=True, help="the base commit (any git revision)")
    ap.add_argument("--rounds", type=int, default=1, help="alternating base/new runs of the benchmark")
    ap.add_argument("script", nargs=argparse.REMAINDER, help="-- SCRIPT [ARGS]: a bench/ script and its options")
    args = ap.parse_args()
    script = args.script[1:] if args.script[:1] == ["--"] else args.script
    if not script:
        raise SystemExit("bench/ab.py: give the benchmark after --, e.g. -- bench/sampler.py --no-torch")
    commit = subprocess.run(["git", "rev-parse", args.base], cwd=ROOT, capture_output=True, text=True,
                            check=True).stdout.strip()
    with tempfile.TemporaryDirectory(prefix="ee-jax-ab-") as tmp:
        base_tree = os.path.join(tmp, "base")
        subprocess.run(["git", "worktree", "add", "--detach", base_tree, commit], cwd=ROOT, check=True,
                       capture_output=True)
        try:
            results = {"base": [], "new": []}
            for r in range(args.rounds):
                for name, tree in (("base", base_tree), ("new", ROOT)):
                    print(f"[ab] round {r + 1}/{args.rounds}: {name}", file=sys.stderr, flush=True)
                    results[name].append(run(tree, script))
        finally:
            subprocess.run(["git", "worktree", "remove", "--force", base_tree], cwd=ROOT, check=False,
                           capture_output=True)
    base, new = _numbers(results["base"][-1]), _numbers(results["new"][-1])
    ratio = {k: new[k] / base[k] for k in sorted(base.keys() & new.keys()) if base[k]}
    print(json.dumps({"base_commit": commit, "script": script, "base": results["base"], "new": results["new"],
                      "ratio": ratio}))


if __name__ == "__main__":
    main()
