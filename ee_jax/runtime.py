"""Process-level settings applied once by entry points, before JAX initialises its backend.

Kept in one place so that nothing else in the package mutates global state on import.
"""

from __future__ import annotations

import os


def configure() -> None:
    """Defaults for command-line runs; values the user already set in the environment win."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from absl import flags

    # grain 0.2.18's multiprocessing workers read absl flags that nobody parsed (google/grain#1355).
    if not flags.FLAGS.is_parsed():
        flags.FLAGS.mark_as_parsed()


# XLA:CPU defaults (filled in from measurements, see BENCHMARKS.md "Train step (CPU)").
XLA_CPU_DEFAULTS: dict[str, str] = {}


def configure_xla() -> None:
    """Add the default XLA:CPU flags to ``XLA_FLAGS`` unless the user already set that flag."""
    current = os.environ.get("XLA_FLAGS", "")
    extra = [f"{k}={v}" for k, v in XLA_CPU_DEFAULTS.items() if k not in current]
    if extra:
        os.environ["XLA_FLAGS"] = " ".join([current, *extra]).strip()
