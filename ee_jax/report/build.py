"""``build_report``: collect, aggregate, and write ``report.json``, ``report.md`` and ``plots/*.png``."""

from __future__ import annotations

import json
import os
import time

from ee_jax.files import atomic_write_text as atomic_write
from ee_jax.report.aggregate import aggregate
from ee_jax.report.markdown import render_markdown, success_table
from ee_jax.report.plots import learning_curves_plot, rl_curves_plot, success_plot, world_model_plot
from ee_jax.report.results import collect_results
from ee_jax.rundir import RunDir


def build_report(run_dir: str, *, title: str | None = None) -> dict:
    """Write ``RUN/report.json``, ``RUN/report.md`` and ``RUN/plots/`` for the run in ``run_dir``.

    Every number comes from the episode logs (:func:`~ee_jax.report.results.collect_results`
    checks each evaluation summary against its log and raises ``ReportError`` naming the file when
    they disagree). Works with any number of seeds and with methods missing.

    Returns the report (the content of ``report.json``): ``title``, ``run_dir``, ``created``,
    ``seeds``, ``methods``, ``splits``, ``results`` (method -> split -> success per seed, mean, std,
    ``pooled`` (over seeds x tasks, bootstrap 95% interval), per-seed Wilson CIs, ``delta_vs_il`` (per
    seed, and ``paired`` by seed and task with its interval and ``significant``), score, reward,
    invalid_rate, steps, ``pass@k``), ``world_model``, ``training`` (with ``selection_evaluations`` and
    ``selected_final_step``), ``settings`` (with ``privileged``), ``table`` (the success table as markdown
    text) and ``plots`` (file names under ``plots/``).
    """
    results = collect_results(run_dir)
    report = {
        "title": title or f"Early Experience: {os.path.basename(os.path.abspath(run_dir))}",
        "run_dir": results["run_dir"],
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        **aggregate(results),
    }
    report["table"] = "\n".join(success_table(report))  # the headline table, for a CLI to print
    figures = {"success.png": success_plot(report), "learning_curves.png": learning_curves_plot(results["metrics"]),
               "world_model.png": world_model_plot(report), "rl_curves.png": rl_curves_plot(results["metrics"])}
    plots = []
    for name, png in figures.items():
        if png is not None:
            atomic_write(RunDir(run_dir).plot(name), png)
            plots.append(name)
    report["plots"] = plots
    atomic_write(RunDir(run_dir).report_json, json.dumps(report, indent=1) + "\n")
    atomic_write(RunDir(run_dir).report_md, render_markdown(report, plots))
    return report
