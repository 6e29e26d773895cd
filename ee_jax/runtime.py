"""Process-level settings applied once by entry points, before JAX initialises its backend.

Kept in one place so that nothing else in the package mutates global state on import.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import sys


def configure() -> None:
    """Defaults for command-line runs; values the user already set in the environment win.

    Call it first thing (before any JAX computation): the allocator settings only take full effect
    before JAX starts its threads. ``ee-jax`` and ``bench/*.py`` do.
    """
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    configure_xla()
    configure_malloc()
    from absl import flags

    # grain 0.2.18's multiprocessing workers read absl flags that nobody parsed (google/grain#1355).
    if not flags.FLAGS.is_parsed():
        flags.FLAGS.mark_as_parsed()




# XLA:CPU flags applied by ``configure`` (none are needed at present: every flag measured for the CPU
# train step was within noise or slower, see BENCHMARKS.md "Train step (CPU)").
XLA_CPU_DEFAULTS: dict[str, str] = {}


def configure_xla() -> None:
    """Append ``XLA_CPU_DEFAULTS`` to ``XLA_FLAGS``, skipping any flag the user already set."""
    current = os.environ.get("XLA_FLAGS", "")
    extra = [f"{k}={v}" for k, v in XLA_CPU_DEFAULTS.items() if k not in current]
    if extra:
        os.environ["XLA_FLAGS"] = " ".join([current, *extra]).strip()


_MALLOC_ENV = ("MALLOC_ARENA_MAX", "MALLOC_MMAP_MAX_", "MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_",
               "MALLOC_TOP_PAD_", "GLIBC_TUNABLES", "LD_PRELOAD")
_malloc_configured: bool | None = None


def configure_malloc() -> bool:
    """Keep freed memory in the process (glibc malloc) instead of returning it to the OS every step.

    XLA:CPU allocates all of an executable's temporaries as one block per call (1.6 GB for the
    ee-17m train step at batch 16 x 256) from a worker thread. glibc serves a block that large with
    a fresh ``mmap`` and ``munmap``s it on free, so every step page-faults the whole block again:
    ~400k minor faults, ~0.6 s of kernel time per step (~13% of the step on 2 cores).

    Here: one malloc arena (so XLA's threads allocate from the main heap), no ``mmap`` for large
    blocks, never trim the heap. The heap then stays at its high-water mark and the block is reused
    with no faults: ~0.2 s (10%) off each ee-17m train step. Equivalent to starting the process with
    ``MALLOC_ARENA_MAX=1 MALLOC_MMAP_MAX_=0 MALLOC_TRIM_THRESHOLD_=<huge>``.

    Costs: resident memory never shrinks below its peak, and XLA compiles slower (its compile
    threads share the one arena: 3.1 s instead of 2.0 s for that train step; a 100-step toy
    ``ee-jax lm train`` took 19.8 s instead of 17.1 s). Two arenas keep compiles fast but make the
    fault fix a coin toss (it depends on which arena XLA's thread lands in).

    Skipped when the user set any ``MALLOC_*``/``GLIBC_TUNABLES``/``LD_PRELOAD`` variable, when
    ``EE_JAX_MALLOC=system``, or off glibc. Call it before JAX starts its threads (``configure()``
    does). Returns whether it applied the settings.
    """
    global _malloc_configured
    if _malloc_configured is not None:
        return _malloc_configured
    _malloc_configured = False
    if (not sys.platform.startswith("linux") or os.environ.get("EE_JAX_MALLOC", "") == "system"
            or any(k in os.environ for k in _MALLOC_ENV)):
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.gnu_get_libc_version  # noqa: B018  (AttributeError off glibc, e.g. musl)
    except (OSError, AttributeError):
        return False
    m_trim_threshold, m_mmap_max, m_arena_max = -1, -4, -8  # <malloc.h>
    ok = libc.mallopt(m_arena_max, 1) == 1
    ok &= libc.mallopt(m_mmap_max, 0) == 1
    ok &= libc.mallopt(m_trim_threshold, -1) == 1  # -1 -> SIZE_MAX: never trim
    _malloc_configured = bool(ok)
    return _malloc_configured


def resident_memory_gb() -> tuple[float, float]:
    """(current, peak) resident set size of this process in GB (Linux ``/proc``; (0, 0) elsewhere)."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            fields = dict(line.split(":", 1) for line in f if ":" in line)
        kb = [int(fields[k].split()[0]) for k in ("VmRSS", "VmHWM")]
    except (OSError, KeyError, ValueError):
        return 0.0, 0.0
    return kb[0] / 1e6, kb[1] / 1e6


def reset_peak_memory() -> None:
    """Restart the peak of ``resident_memory_gb`` from the current size (Linux; no-op elsewhere)."""
    with contextlib.suppress(OSError), open("/proc/self/clear_refs", "w", encoding="ascii") as f:
        f.write("5")


def release_memory() -> float:
    """Between pipeline stages: drop JAX's compiled programs and unreachable arrays, and return the
    free heap to the OS. Returns the resident memory afterwards (GB).

    With ``configure_malloc``'s settings the heap never shrinks by itself, so a long ``ee-jax run``
    would otherwise keep every stage's high-water mark (train temporaries, then sampler caches).
    ``malloc_trim(0)`` also releases free pages inside the heap, not just its top.
    """
    import gc

    import jax

    jax.clear_caches()
    gc.collect()
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL("libc.so.6").malloc_trim(0)
    return resident_memory_gb()[0]

