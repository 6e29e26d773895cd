"""What gets recorded with every run: versions, devices, seeds, the command line."""

from __future__ import annotations

import functools
import importlib.metadata
import os
import platform
import subprocess
import sys
import time

import jax

_PACKAGES = ("ee_jax", "jax", "jaxlib", "flax", "optax", "orbax-checkpoint", "grain", "sentencepiece", "numpy")


def versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for name in _PACKAGES:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = "not installed"
    return out


@functools.cache
def git_commit() -> str | None:
    """The git commit of the ee_jax source this process runs (``-dirty`` when it has uncommitted changes),
    or None for an installed copy outside a checkout (or without git)."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    if not os.path.exists(os.path.join(root, ".git")):
        return None
    try:
        head = subprocess.run(["git", "-C", root, "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10)
        if head.returncode:
            return None
        dirty = subprocess.run(["git", "-C", root, "status", "--porcelain", "--untracked-files=no", "--", "ee_jax"],
                               capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return head.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")


def version_string() -> str:
    """``ee_jax VERSION (git COMMIT)``: what ``ee-jax --version`` prints."""
    commit = git_commit()
    return f"ee_jax {versions()['ee_jax']}" + (f" (git {commit})" if commit else "")


def run_info(seed: int) -> dict:
    """Provenance stored under ``_run`` in a run's ``config.yaml``."""
    return {
        "seed": seed,
        "argv": list(sys.argv),
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "versions": versions(),
        "git_commit": git_commit(),
        "backend": jax.default_backend(),
        "devices": [str(d) for d in jax.devices()],
        "process_count": jax.process_count(),
        "host": platform.node(),
    }
