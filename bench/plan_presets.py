"""Plan every accelerator preset on its named topology: does each program fit, at what HBM per chip, compile
time and estimated MFU (issue 23's table in BENCHMARKS.md).

Usage::

    python bench/plan_presets.py                      # every configs/accelerators/*.yaml, train + RL + sampler
    python bench/plan_presets.py --presets tpu-v5e-16 --steps train

Each preset runs ``ee-jax plan PRESET --topology NAME --json`` (the topology from the ``--topology NAME`` in
the preset's header) in a fresh process. Printed: one markdown row per (preset, program), then one JSON object
(every plan, the machine) as the last line.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import re
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from bench.machine import machine_info  # noqa: E402


def plan(path: str, steps: str, timeout: float) -> dict:
    with open(path, encoding="utf-8") as f:
        topo = re.findall(r"--topology (\S+)", f.read())[0]
    cmd = [sys.executable, "-m", "ee_jax.cli.main", "plan", path, "--topology", topo, "--steps", steps, "--json"]
    t0 = time.perf_counter()
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False, cwd=ROOT)
    lines = [ln for ln in out.stdout.splitlines() if ln.startswith("{")]
    if not lines:
        return {"preset": path, "topology": topo, "error": out.stderr.strip().splitlines()[-3:],
                "wall_s": time.perf_counter() - t0}
    return {"preset": path, "topology": topo, "plan": json.loads(lines[-1]), "wall_s": time.perf_counter() - t0}


def rows(result: dict) -> list[str]:
    name = os.path.splitext(os.path.basename(result["preset"]))[0]
    if "plan" not in result:
        return [f"| {name} | {result['topology']} | error: {result['error']} | | | | |"]
    p, out = result["plan"], []
    for s in p["steps"]:
        est = s.get("roofline") or {}
        mfu = f"{est['mfu_low']:.0%} - {est['mfu_high']:.0%}" if "mfu_low" in est else "-"
        out.append(f"| {name} | {p['topology']} ({p['chip']}, {p['model']['name']}) | {s['name']} | "
                   f"{'yes' if s['fits'] else '**no**'} | "
                   f"{s['peak_bytes'] / 2**30:.2f} / {s['hbm_bytes'] / 2**30:.2f} | "
                   f"{s['compile_s']:.0f} | {mfu} |")
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--presets", default="", help="comma-separated names in configs/accelerators (default: all)")
    ap.add_argument("--steps", default="train,rl,sampler")
    ap.add_argument("--timeout", type=float, default=7200)
    args = ap.parse_args()
    names = [n for n in args.presets.split(",") if n]
    paths = ([os.path.join(ROOT, "configs", "accelerators", f"{n}.yaml") for n in names] if names
             else sorted(glob.glob(os.path.join(ROOT, "configs", "accelerators", "*.yaml"))))
    results = []
    print("| preset | topology | program | fits | peak / HBM GiB per chip | compile s | estimated MFU |")
    print("|---|---|---|---|---|---|---|")
    for path in paths:
        r = plan(os.path.relpath(path, ROOT), args.steps, args.timeout)
        results.append(r)
        print("\n".join(rows(r)), flush=True)
    print(json.dumps({"results": results, "machine": machine_info()}, default=str))


if __name__ == "__main__":
    main()
