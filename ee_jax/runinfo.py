"""What gets recorded with every run: versions, devices, seeds, the command line."""

from __future__ import annotations

import importlib.metadata
import platform
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


def run_info(seed: int) -> dict:
    """Provenance stored under ``_run`` in a run's ``config.yaml``."""
    return {
        "seed": seed,
        "argv": list(sys.argv),
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "versions": versions(),
        "backend": jax.default_backend(),
        "devices": [str(d) for d in jax.devices()],
        "process_count": jax.process_count(),
        "host": platform.node(),
    }
