"""Scaling sweeps: the main job over model sizes x data fractions, and the scaling report."""

from ee_jax.sweep.archive import export_results
from ee_jax.sweep.runner import build_scaling_report, launch_commands, run_sweep
from ee_jax.sweep.spec import SweepConfig, SweepPoint, load_sweep, sweep_points

__all__ = ["SweepConfig", "SweepPoint", "build_scaling_report", "export_results", "launch_commands", "load_sweep",
           "run_sweep", "sweep_points"]
