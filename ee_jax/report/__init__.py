"""Reports of a multi-seed run: tables (``report.md``), numbers (``report.json``) and plots.

``build_report(run_dir)`` is what ``ee-jax run`` calls at the end; ``collect_results(run_dir)`` gives
the raw per-seed results, each evaluation summary recomputed from (and checked against) its episode log.
"""

from ee_jax.report.aggregate import aggregate, mean_std
from ee_jax.report.build import build_report
from ee_jax.report.results import ReportError, collect_results
from ee_jax.report.stats import bootstrap_ci, paired_difference, success_interval

__all__ = ["ReportError", "aggregate", "bootstrap_ci", "build_report", "collect_results", "mean_std",
           "paired_difference", "success_interval"]
