"""Launchers: Cloud TPU (tpu.py) and SLURM (slurm.py); run them as scripts from the repository root."""
