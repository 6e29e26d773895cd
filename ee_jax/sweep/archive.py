"""``ee-jax sweep SWEEP.yaml --export-results DIR``: a sweep's results without its checkpoints.

What is kept of every point (finished or not): resolved configs, the time ledger, training records and
settings, metrics, evaluation summaries and their episode logs, the point's report; the collected data
and tokenizers the points trained on (shared by the sizes, ``RUN/f*/data``; small next to checkpoints);
and of the sweep its spec, status and scaling report. Checkpoints and TensorBoard files are left out.

The copy has the layout of the sweep's ``run_dir``, so it serves twice: the scaling report can be rebuilt
from it (``ee-jax sweep SWEEP.yaml run_dir=DIR --report-only``), and a sweep interrupted on one machine
resumes on another once the copy is back at ``run_dir``: finished trainings and evaluations are kept
(a method whose checkpoint is gone keeps its evaluation), only unfinished work runs again, on the same
data (not every environment's collection repeats exactly: TextWorldExpress's gold paths vary between
generations, so a fresh collection would be refused by the training records' data hashes).
"""

from __future__ import annotations

import os
import shutil

from ee_jax.rundir import RunDir
from ee_jax.sweep.spec import SweepConfig, sweep_points

LEFT_OUT = ("ckpt", "tb")
SWEEP_FILES = ("sweep.json", "sweep_status.json", "scaling.md", "scaling.json")


def export_results(sweep: SweepConfig, out_dir: str) -> dict:
    """Copy the results of ``sweep`` (no checkpoints) to ``out_dir``: a new folder, or an earlier export,
    which is replaced as a whole once the copy is complete."""
    if not os.path.isdir(sweep.run_dir):
        raise FileNotFoundError(f"sweep run_dir {sweep.run_dir!r} does not exist: nothing to export")
    if os.path.realpath(out_dir) == os.path.realpath(sweep.run_dir):
        raise ValueError(f"--export-results {out_dir!r} is the sweep's own run_dir; choose another folder")
    if os.path.isdir(out_dir) and os.listdir(out_dir) and not os.path.exists(os.path.join(out_dir, "sweep.json")):
        raise FileExistsError(f"--export-results {out_dir!r} is a non-empty folder that is not an earlier export "
                              "(no sweep.json): it would be replaced; choose a new or empty folder")
    tmp = out_dir.rstrip("/") + ".partial"
    shutil.rmtree(tmp, ignore_errors=True)
    os.makedirs(tmp)
    points, all_points = [], sweep_points(sweep)
    for point in all_points:
        if not os.path.exists(RunDir(point.run_dir).config):
            continue  # never started
        rel = os.path.relpath(point.run_dir, sweep.run_dir)
        # symlinks=True: the seed directories' relative links to the shared data stay links (dangling
        # in the copy; a resumed run recreates what they point to)
        shutil.copytree(point.run_dir, os.path.join(tmp, rel), symlinks=True,
                        ignore=shutil.ignore_patterns(*LEFT_OUT))
        points.append({"name": point.name, "path": rel,
                       "finished": os.path.exists(RunDir(point.run_dir).report_json)})
    for fraction in sorted({p.fraction for p in all_points}):  # the sizes' shared collection
        for name in ("data", "tokenizer"):
            src = os.path.join(sweep.run_dir, f"f{fraction:g}", name)
            if os.path.isdir(src):
                shutil.copytree(src, os.path.join(tmp, f"f{fraction:g}", name), symlinks=True)
    for name in SWEEP_FILES:
        src = os.path.join(sweep.run_dir, name)
        if os.path.exists(src):
            shutil.copy2(src, os.path.join(tmp, name))
    if os.path.isdir(os.path.join(sweep.run_dir, "plots")):
        shutil.copytree(os.path.join(sweep.run_dir, "plots"), os.path.join(tmp, "plots"))
    shutil.rmtree(out_dir, ignore_errors=True)
    os.replace(tmp, out_dir)
    size = sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(out_dir) for f in fs
               if not os.path.islink(os.path.join(d, f)))
    return {"out_dir": out_dir, "points": points, "bytes": size}
