"""Compile time and memory of the training step for TPU topologies, scanned vs unrolled layers (issue 23).

Usage::

    python bench/plan_compile.py                                   # ee-1.5b and ee-8b on v5e:4x4
    python bench/plan_compile.py --presets ee-1.5b --topology v5p:2x2x4 --scan true

Each (preset, scan_layers) pair is planned in a fresh process (``ee-jax plan ... --steps train --json``:
bf16, full remat, splash attention, FSDP over every chip, batch 16 x 2048, an 8,192-piece tokenizer), so no
compilation cache is shared. Reported per pair: trace + lower seconds, total compile seconds, the peak bytes
per chip and whether it fits. The last stdout line is one JSON object with every figure and the machine.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench.machine import machine_info  # noqa: E402

SETTINGS = ["model.dtype=bfloat16", "model.remat=full", "model.attention_impl=splash", "model.max_seq_len=2048",
            "mesh.data=1", "mesh.fsdp=-1", "train.batch_size=16", "train.seq_len=2048", "tokenizer.vocab_size=8192"]


def plan_once(preset: str, scan: str, topology: str, timeout: float) -> dict:
    cmd = [sys.executable, "-m", "ee_jax.cli.main", "plan", f"model.preset={preset}", f"model.scan_layers={scan}",
           *SETTINGS, "--topology", topology, "--steps", "train", "--json"]
    t0 = time.perf_counter()
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
    wall = time.perf_counter() - t0
    lines = [ln for ln in out.stdout.splitlines() if ln.startswith("{")]
    if not lines:
        return {"preset": preset, "scan_layers": scan, "error": out.stderr.strip().splitlines()[-1:], "wall_s": wall}
    plan = json.loads(lines[-1])
    train = plan["steps"][0]
    return {"preset": preset, "scan_layers": scan, "topology": topology, "params": plan["model"]["params"],
            "fits": train["fits"], "lower_s": round(train["lower_s"], 1), "compile_s": round(train["compile_s"], 1),
            "peak_gib": round(train["peak_bytes"] / 2**30, 2), "wall_s": round(wall, 1)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--presets", default="ee-1.5b,ee-8b")
    ap.add_argument("--topology", default="v5e:4x4")
    ap.add_argument("--scan", default="true,false", help="scan_layers values to compare")
    ap.add_argument("--timeout", type=float, default=3600)
    args = ap.parse_args()
    rows = []
    for preset in args.presets.split(","):
        for scan in args.scan.split(","):
            row = plan_once(preset, scan, args.topology, args.timeout)
            print(json.dumps(row), file=sys.stderr, flush=True)
            rows.append(row)
    by = {(r["preset"], r["scan_layers"]): r for r in rows if "compile_s" in r}
    ratio = None
    if ("ee-8b", "true") in by and ("ee-1.5b", "true") in by:
        ratio = by[("ee-8b", "true")]["compile_s"] / by[("ee-1.5b", "true")]["compile_s"]
    print(json.dumps({"rows": rows, "scanned_8b_over_1_5b": ratio, "machine": machine_info()}))


if __name__ == "__main__":
    main()
