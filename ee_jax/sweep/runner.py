"""``ee-jax sweep``: run every point's main job in order (resumable), or hand each to a launcher;
then the scaling report.

Sequential runs share each fraction's collected data and tokenizer between sizes (links into
``RUN/f{fraction}/``) when collection does not run the policy; launched points collect their own
(collection is deterministic by seed, so the data are the same, and concurrent jobs never write one
store). Every point is an ordinary ``ee-jax run``: re-running the sweep skips finished points' work and
resumes an interrupted one.
"""

from __future__ import annotations

import json
import os
import shlex
import sys
import time

from ee_jax.config import Config, load_config
from ee_jax.files import atomic_write_text as atomic_write
from ee_jax.pipeline.experiment import run_experiment
from ee_jax.pipeline.timings import read_timings
from ee_jax.report.aggregate import privileged_settings
from ee_jax.report.results import read_config
from ee_jax.rundir import RunDir
from ee_jax.sweep.data_efficiency import data_efficiency
from ee_jax.sweep.planning import size_figures
from ee_jax.sweep.report import write_scaling_report
from ee_jax.sweep.scaling import efficiency, point_rows, summarize
from ee_jax.sweep.spec import SweepConfig, SweepPoint, sweep_points, sweep_to_dict

LAUNCHERS = ("slurm", "tpu")


def point_config(sweep: SweepConfig, point: SweepPoint) -> Config:
    return load_config(sweep.base, list(point.overrides))


def recorded_config(path: str) -> Config:
    """A point's recorded ``config.yaml``; a run recorded before the ``template`` reflection generator was
    renamed ``oracle_template`` (2026-12) reads as the new name, so old results still report."""
    legacy = (read_config(os.path.dirname(path)).get("experience") or {}).get("reflect", {}).get("generator")
    return load_config(path, ["experience.reflect.generator=oracle_template"] if legacy == "template" else [])


def shares_data(cfg: Config) -> bool:
    """Whether every size can use one collection: no collection stage runs the policy model."""
    return cfg.experience.explore.strategy != "policy" and cfg.experience.reflect.generator != "self"


def _link_shared(cfg: Config, shared: str) -> None:
    """``RUN/f*/SIZE/{data,tokenizer}`` -> ``RUN/f*/{data,tokenizer}`` (created empty if needed)."""
    os.makedirs(cfg.run_dir, exist_ok=True)
    for name in ["data"] + ([] if cfg.tokenizer.path else ["tokenizer"]):
        target, link = os.path.join(shared, name), os.path.join(cfg.run_dir, name)
        os.makedirs(target, exist_ok=True)
        if os.path.islink(link):
            continue
        if os.path.exists(link):
            raise FileExistsError(f"{link} exists and is not a link to the sweep's shared {target}; move it "
                                  "away (or delete it) and run the sweep again")
        os.symlink(os.path.relpath(target, cfg.run_dir), link)


def _status(path: str) -> dict:
    if os.path.exists(path):
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    return {"points": {}}


def run_sweep(sweep: SweepConfig, *, progress: bool = True, overwrite: bool = False) -> dict:
    """Run (or resume) every point in order, then the planning figures and the scaling report."""
    os.makedirs(sweep.run_dir, exist_ok=True)
    atomic_write(os.path.join(sweep.run_dir, "sweep.json"), json.dumps(sweep_to_dict(sweep), indent=1) + "\n")
    status_path = os.path.join(sweep.run_dir, "sweep_status.json")
    status = _status(status_path)
    points = sweep_points(sweep)
    for i, point in enumerate(points):
        cfg = point_config(sweep, point)
        if shares_data(cfg):
            _link_shared(cfg, os.path.dirname(point.run_dir))
        print(f"[sweep {i + 1}/{len(points)}] {point.name}: ee-jax run {sweep.base} "
              f"{' '.join(shlex.quote(o) for o in point.overrides)}", file=sys.stderr, flush=True)
        t0 = time.perf_counter()
        summary = run_experiment(cfg, overwrite=overwrite, progress=progress)
        if summary.get("stopped"):  # a time-boxed point (train.stop_after_steps): the next invocation resumes it
            status["stopped"] = {"point": point.name, **summary["stopped"]}
            atomic_write(status_path, json.dumps(status, indent=1) + "\n")
            return {**(build_scaling_report(sweep) if status["points"] else {}), "stopped": status["stopped"]}
        status.pop("stopped", None)
        # Seconds: the point's own ledger (timings.jsonl, per stage in stage_seconds) holds every stage
        # invocation, those that Ctrl-C or a preemption cut short included (an interrupted sweep never
        # gets here); this invocation's wall clock when larger (time between stages, the report).
        prev = status["points"].get(point.name, {})
        stage_seconds = summary.get("timings_total", {})
        status["points"][point.name] = {
            "run_dir": point.run_dir,
            "seconds": round(max(sum(stage_seconds.values()), prev.get("seconds", 0.0) + time.perf_counter() - t0), 3),
            "finished": prev.get("finished") or time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "stage_seconds": stage_seconds}
        # Planning figures of a size as soon as its point (at the first data fraction) is done, so a
        # sweep stopped part-way already reports them for the sizes it finished; measured alone on the
        # machine (points run one after another), kept once measured.
        planning = status.setdefault("planning", {})
        if sweep.planning and point.size not in planning and point.fraction == points[0].fraction:
            planning[point.size] = size_figures(cfg)
        atomic_write(status_path, json.dumps(status, indent=1) + "\n")
    return build_scaling_report(sweep)


def build_scaling_report(sweep: SweepConfig) -> dict:
    """Aggregate the points' reports (and planning figures, when measured) into the scaling report."""
    rows, missing = [], []
    for point in sweep_points(sweep):
        path = RunDir(point.run_dir).report_json
        if not os.path.exists(path):
            missing.append(point.name)
            continue
        with open(path, encoding="utf-8") as f:
            report = json.load(f)
        rows += point_rows({"fraction": point.fraction, "size": point.size}, report,
                           recorded_config(RunDir(point.run_dir).config),
                           read_timings(RunDir(point.run_dir).timings))
    if missing and not rows:
        raise FileNotFoundError(f"no point of the sweep in {sweep.run_dir} has a report yet (missing: "
                                f"{', '.join(missing)}); run `ee-jax sweep` first")
    rows = summarize(rows)
    planning = _status(os.path.join(sweep.run_dir, "sweep_status.json")).get("planning", {})
    title = f"{os.path.basename(sweep.base)} over {len(sweep.sizes)} sizes"
    fractions = None
    if len(sweep.data_fractions) > 1:
        fractions = data_efficiency([(p.fraction, p.size, p.run_dir) for p in sweep_points(sweep)
                                     if p.name not in missing], sweep.split)
    done = [p for p in sweep_points(sweep) if p.name not in missing]
    privileged = privileged_settings(read_config(done[0].run_dir)) if done else []
    return write_scaling_report(sweep.run_dir, {
        "title": title, "sweep": sweep_to_dict(sweep), "rows": rows, "missing_points": missing,
        "privileged": privileged,
        "efficiency": efficiency(rows, sweep.split, sweep.match_margin), "planning": planning,
        "data_efficiency": fractions,
    })


def launch_commands(sweep: SweepConfig, launcher: str, launcher_args: list[str]) -> list[list[str]]:
    """One launcher command per point (``python launch/LAUNCHER.py ARGS --name ... -- run BASE ...``)."""
    if launcher not in LAUNCHERS:
        raise ValueError(f"--launch {launcher!r}: expected one of {LAUNCHERS}")
    script = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
                          "launch", f"{launcher}.py")
    base = os.path.basename(sweep.run_dir.rstrip("/"))
    cmds = []
    for p in sweep_points(sweep):
        name = f"{base}-f{p.fraction:g}-{p.size}".replace(".", "p").replace("_", "-").lower()
        cmds.append([sys.executable, script, *launcher_args, "--name", name, "--", "run", sweep.base,
                     *p.overrides])
    return cmds

