"""Metrics to JSONL and TensorBoard, and the throughput / MFU accounting.

MFU = achieved model FLOP/s (``train_flops_per_token`` x tokens/s, see ``models.accounting``) divided by
the peak of the devices in use: the datasheet dense bf16 peak on TPU/GPU, and on CPU the measured
peak of a large fp32 matmul on this machine (measured once per process, about a second).
"""

from __future__ import annotations

import functools
import json
import os
import time

import jax
import jax.numpy as jnp

from ee_jax.rundir import RunDir

# Dense bf16 peak FLOP/s per chip from vendor datasheets (no sparsity).
DATASHEET_PEAK = {
    "TPU v4": 275e12, "TPU v5 lite": 197e12, "TPU v5e": 197e12, "TPU v5p": 459e12, "TPU v6 lite": 918e12,
    "TPU v6e": 918e12, "NVIDIA H100": 989e12, "NVIDIA H200": 989e12, "NVIDIA A100": 312e12,
}


@functools.cache
def measured_matmul_peak(n: int = 2048, repeats: int = 5) -> float:
    """Best FLOP/s of an ``n^3`` fp32 matmul on the default backend (all local devices' cores)."""
    a = jnp.ones((n, n), jnp.float32)
    f = jax.jit(lambda x, y: x @ y)
    f(a, a).block_until_ready()
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        f(a, a).block_until_ready()
        best = min(best, time.perf_counter() - t0)
    return 2 * n**3 / best


def device_peak_flops() -> tuple[float, str]:
    """(peak FLOP/s for all devices of this process, where the figure comes from)."""
    dev = jax.devices()[0]
    if dev.platform == "cpu":
        # Simulated CPU devices share the same cores, so the whole-process matmul peak is the ceiling.
        return measured_matmul_peak(), "measured fp32 matmul peak (cpu)"
    for name, peak in DATASHEET_PEAK.items():
        if dev.device_kind.startswith(name):
            return peak * jax.local_device_count(), f"datasheet {name} bf16 x {jax.local_device_count()}"
    return float("nan"), f"unknown device kind {dev.device_kind!r}"


class MetricsWriter:
    """Appends one JSON object per record to ``metrics.jsonl`` and mirrors scalars to TensorBoard."""

    def __init__(self, run_dir: str, *, tensorboard: bool = True):
        self.enabled = jax.process_index() == 0
        self.path = RunDir(run_dir).metrics
        self._tb = None
        if self.enabled:
            os.makedirs(run_dir, exist_ok=True)
            self._file = open(self.path, "a", encoding="utf-8")  # noqa: SIM115 - closed in close()
            if tensorboard:
                from tensorboardX import SummaryWriter

                self._tb = SummaryWriter(RunDir(run_dir).tensorboard)

    def write(self, step: int, metrics: dict, prefix: str = "") -> None:
        if not self.enabled:
            return
        record = {"step": int(step), **{prefix + k: _scalar(v) for k, v in metrics.items()}}
        self._file.write(json.dumps(record) + "\n")
        self._file.flush()
        if self._tb is not None:
            for k, v in record.items():
                if k != "step" and isinstance(v, (int, float)):
                    self._tb.add_scalar(k, v, step)

    def close(self) -> None:
        if self.enabled:
            self._file.close()
            if self._tb is not None:
                self._tb.close()


def _scalar(v):
    try:
        return float(v)
    except (TypeError, ValueError):
        return v


def read_metrics(run_dir: str) -> list[dict]:
    """All records of a run's ``metrics.jsonl`` (for tests, reports and plots)."""
    path = RunDir(run_dir).metrics
    if not os.path.exists(path):
        return []
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]
