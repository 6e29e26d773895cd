"""Accelerator chips and topologies a plan compiles for, with their published per-chip figures.

A TPU topology (``v5e:4x4``, ``v5p:2x2x4``, ``v6e:8x8``, ...) is described by libtpu without a TPU
(:func:`jax.experimental.topologies.get_topology_desc`, the ``tpu`` extra), so its programs compile on any
machine. GPU "topologies" (``h100x8``) have no deviceless compiler in JAX: a GPU plan compiles for as many
simulated CPU devices instead (``XLA_FLAGS=--xla_force_host_platform_device_count``), so its sharding and
parameter / optimizer bytes are exact but XLA:CPU's temporaries and FLOP counts stand in for XLA:GPU's.

The figures are vendors' published per-chip numbers: dense bf16 peak, HBM capacity and bandwidth, and the
chip's total inter-chip bandwidth (Cloud TPU system-architecture pages; NVIDIA H100/H200 SXM datasheets).
"""

from __future__ import annotations

import dataclasses
import os
import re

GIB = 1024**3


@dataclasses.dataclass(frozen=True)
class Chip:
    """One accelerator chip's published figures."""

    name: str
    platform: str  # tpu | gpu
    peak_bf16_flops: float  # dense, FLOP/s
    hbm_bytes: float  # capacity the compiler may use (TPU: libtpu's own figure where it reports one)
    hbm_bandwidth: float  # bytes/s
    interconnect_bandwidth: float  # bytes/s per chip, all links (TPU ICI; GPU NVLink)
    chips_per_host: int


CHIPS: dict[str, Chip] = {
    "v4": Chip("TPU v4", "tpu", 275e12, 32 * GIB, 1.2e12, 300e9, 4),
    "v5e": Chip("TPU v5e", "tpu", 197e12, 15.75 * GIB, 819e9, 200e9, 4),  # 16 GiB; libtpu reports 15.75 usable
    "v5p": Chip("TPU v5p", "tpu", 459e12, 95 * GIB, 2.765e12, 600e9, 4),
    "v6e": Chip("TPU v6e", "tpu", 918e12, 31.25 * GIB, 1.64e12, 448e9, 4),
    "h100": Chip("NVIDIA H100 SXM", "gpu", 989e12, 80e9, 3.35e12, 900e9, 8),
    "h200": Chip("NVIDIA H200 SXM", "gpu", 989e12, 141e9, 4.8e12, 900e9, 8),
}

_TPU_NAME = re.compile(r"^(v4|v5e|v5p|v6e):(\d+(?:x\d+){1,2})$")
_GPU_NAME = re.compile(r"^(h100|h200)x(\d+)$")


@dataclasses.dataclass(frozen=True)
class Topology:
    """A named slice: its chip, chip count, host count and the (possibly simulated) devices to compile for."""

    name: str
    chip: Chip
    num_chips: int
    num_hosts: int
    devices: tuple
    simulated: bool  # True: CPU devices stand in for the chips (GPU plans)


def parse_topology(name: str) -> tuple[Chip, int]:
    """``(chip, number of chips)`` of a topology name, or a one-line error naming what is accepted."""
    m = _TPU_NAME.match(name)
    if m:
        dims = [int(d) for d in m.group(2).split("x")]
        n = 1
        for d in dims:
            n *= d
        return CHIPS[m.group(1)], n
    m = _GPU_NAME.match(name)
    if m:
        return CHIPS[m.group(1)], int(m.group(2))
    raise ValueError(f"--topology {name!r}: expected a TPU slice such as v5e:2x2, v5e:4x4, v5p:2x2x4, v6e:8x8 "
                     f"(chips: v4, v5e, v5p, v6e) or GPUs such as h100x8, h200x8")


def topology(name: str) -> Topology:
    """The devices to compile for: libtpu's deviceless description for TPUs, simulated CPU devices for GPUs."""
    import jax

    chip, n = parse_topology(name)
    if chip.platform == "tpu":
        os.environ.setdefault("TPU_SKIP_MDS_QUERY", "1")  # no metadata server off Cloud TPU
        # A deviceless compile uses no chip, so several planning processes (or a plan beside a run) may load
        # libtpu at once; without this libtpu refuses every process but the first (its lockfile).
        os.environ.setdefault("ALLOW_MULTIPLE_LIBTPU_LOAD", "1")
        from jax.experimental import topologies

        try:
            desc = topologies.get_topology_desc(platform="tpu", topology_name=name)
        except Exception as e:  # no libtpu, or a shape libtpu does not know
            raise ValueError(f"--topology {name}: libtpu cannot describe it ({str(e).splitlines()[0][:200]}); "
                             f"install the tpu extra (pip install 'ee_jax[tpu]') and use a valid slice shape") from None
        devices = tuple(desc.devices)
        hosts = len({d.process_index for d in devices})
        return Topology(name, chip, len(devices), hosts, devices, simulated=False)
    cpus = jax.devices("cpu")
    if len(cpus) < n:
        raise ValueError(f"--topology {name}: a GPU plan compiles for {n} simulated CPU devices and this process "
                         f"has {len(cpus)}; run it with XLA_FLAGS=--xla_force_host_platform_device_count={n}")
    return Topology(name, chip, n, max(1, n // chip.chips_per_host), tuple(cpus[:n]), simulated=True)
