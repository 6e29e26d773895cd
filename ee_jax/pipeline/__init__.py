"""Experiment pipelines: the jobs behind the ee-jax commands."""
