"""The main job's wall time: ``ee-jax run configs/quickstart.yaml`` on a fresh run directory.

Usage::

    python bench/quickstart.py                      # configs/quickstart.yaml into a temporary run dir
    python bench/quickstart.py --config configs/experiments/household.yaml --keep runs/bench-household

Runs the real command in a subprocess (what a newcomer types), timed end to end, and reads the run's
``run_summary.json`` for the per-stage seconds and ``report.json`` for the success rates. The last
stdout line is one JSON object: ``seconds`` (wall), ``budget_s`` (600 for the quickstart), ``within_budget``,
``stages`` (seconds per collect / tokenizer / train / eval stage), ``success`` (method -> split -> mean),
``il_test_goal`` / ``il_test_met`` (the quickstart's goal: imitation at least 25% on test, so that the
methods can differ), ``machine`` (CPU, cores, load before the run).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from bench.machine import machine_info  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--config", default="configs/quickstart.yaml")
    ap.add_argument("--keep", default="", help="run directory to keep (default: a temporary one, deleted)")
    ap.add_argument("--budget-s", type=float, default=600.0)
    ap.add_argument("--il-goal", type=float, default=0.25, help="imitation's test success the quickstart must reach")
    args = ap.parse_args()
    tmp = None if args.keep else tempfile.TemporaryDirectory(prefix="ee-jax-quickstart-")
    run_dir = args.keep or os.path.join(tmp.name, "run")
    before = os.getloadavg()[0]
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-m", "ee_jax.cli.main", "run", args.config, f"run_dir={run_dir}",
                    "--no-progress", "--json"], check=True, stdout=subprocess.DEVNULL)
    seconds = time.perf_counter() - t0
    with open(os.path.join(run_dir, "run_summary.json")) as f:
        summary = json.load(f)
    with open(os.path.join(run_dir, "report.json")) as f:
        report = json.load(f)
    success = {m: {s: cell["success"]["mean"] for s, cell in splits.items()} for m, splits in report["results"].items()}
    il_test = success.get("il", {}).get("test")
    out = {"bench": "quickstart", "config": args.config, "seconds": seconds, "budget_s": args.budget_s,
           "within_budget": seconds <= args.budget_s, "stages": summary["timings"], "success": success,
           "il_test_goal": args.il_goal, "il_test_met": il_test is not None and il_test >= args.il_goal,
           "machine": {**machine_info(), "load_before": before}}
    if tmp is not None:
        tmp.cleanup()
    print(json.dumps(out))


if __name__ == "__main__":
    main()
