"""Machine-state helpers shared by the benchmarks: idle checks and per-section CPU accounting.

The machine is shared; a figure is only trusted when other processes used (almost) no CPU while it
was measured, so every timed section records the idle fraction left to us.
"""

from __future__ import annotations

import os
import platform
import sys
import time

from ee_jax import runtime

NCORES = os.cpu_count() or 1


def _proc_stat() -> tuple[int, int]:
    with open("/proc/stat") as f:
        vals = [int(v) for v in f.readline().split()[1:]]
    return sum(vals), vals[3] + vals[4]  # total, idle + iowait (jiffies)


class Section:
    """Wall time of a block and the CPU that *other* processes used meanwhile (from /proc/stat)."""

    def __enter__(self):
        self.t0, self.cpu0, self.stat0 = time.perf_counter(), _own_cpu(), _proc_stat()
        return self

    def __exit__(self, *exc):
        self.wall = time.perf_counter() - self.t0
        total, idle = _proc_stat()
        hz = os.sysconf("SC_CLK_TCK")
        busy_all = ((total - self.stat0[0]) - (idle - self.stat0[1])) / hz
        own = _own_cpu() - self.cpu0
        self.others_cores = max(busy_all - own, 0.0) / max(self.wall, 1e-9)
        self.own_cores = own / max(self.wall, 1e-9)
        self.idle_frac_others = max(0.0, 1.0 - self.others_cores / NCORES)

    def report(self) -> dict:
        return {"idle_frac_others": round(self.idle_frac_others, 3), "own_cores": round(self.own_cores, 2)}


def _own_cpu() -> float:
    t = os.times()
    return t.user + t.system


def busy_cores(interval: float = 1.0) -> float:
    t0, i0 = _proc_stat()
    time.sleep(interval)
    t1, i1 = _proc_stat()
    return NCORES * (1.0 - (i1 - i0) / max(t1 - t0, 1))


def wait_idle(threshold: float, max_wait: float, label: str) -> float:
    """Block until other processes use < ``threshold`` cores; returns the last idle fraction seen."""
    deadline = time.time() + max_wait
    while True:
        b = busy_cores()
        if b < threshold or time.time() > deadline:
            if b >= threshold:
                print(f"[{label}] machine still busy ({b:.2f} cores) after {max_wait:.0f}s; timing anyway",
                      file=sys.stderr)
            return round(1.0 - b / NCORES, 3)
        print(f"[{label}] machine busy ({b:.2f} cores), waiting", file=sys.stderr)
        time.sleep(5)


def machine_info() -> dict:
    """CPU model, core count, package versions, XLA flags and the allocator setting in effect."""
    model = platform.processor()
    try:
        with open("/proc/cpuinfo") as f:
            model = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    import flax
    import jax
    import optax

    info = {"cpu": model, "cores": NCORES, "python": platform.python_version(), "jax": jax.__version__,
            "jaxlib": jax.lib.__version__ if hasattr(jax.lib, "__version__") else None,
            "flax": flax.__version__, "optax": optax.__version__,
            "XLA_FLAGS": os.environ.get("XLA_FLAGS", ""), "malloc_tuned": runtime.configure_malloc()}
    try:
        import torch
        import transformers

        info.update(torch=torch.__version__, transformers=transformers.__version__)
    except ImportError:
        pass
    return info
