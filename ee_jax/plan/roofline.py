"""A roofline *estimate* of a compiled step's time and MFU from the chip's published figures.

Assumptions (printed with every estimate):

* compute: the closed-form model FLOPs of the step (``models.accounting``: 6 N per trained token plus
  attention; 2 N per generated token) divided evenly over the chips, at the chip's dense bf16 peak;
* memory: the bytes each chip must at least stream from HBM (``StepPlan.hbm_traffic_bytes``): every weight
  at the compute dtype once per pass (FSDP gathers them: forward, two backward matmuls, + the recomputed
  forward under remat), the optimizer update's reads and writes, and for decoding the KV cache once per
  generated token; activations are not counted (XLA keeps many of them on chip), so this is a lower
  bound. XLA's own "bytes accessed" is reported beside it but not used: it sums every op's operands and
  results and counts a loop body (scanned layers) once, so it is neither a bound nor comparable between a
  scanned and an unrolled model;
* communication: the ring-algorithm bytes one chip sends for the collectives of the partitioned HLO
  (:mod:`ee_jax.plan.hlo`) at the chip's total interconnect bandwidth, every link busy;
* ``serial``: compute/memory and communication do not overlap (an upper bound on the time);
  ``overlapped``: everything overlaps perfectly (a lower bound). Real steps fall between, usually nearer
  the overlapped bound for FSDP, whose all-gathers XLA schedules ahead of their use.

It is not a measurement: fp32 compute runs below the bf16 peak, small matmuls below the MXU's, and kernels
below the HBM roofline.
"""

from __future__ import annotations

from ee_jax.plan.chips import Chip
from ee_jax.plan.steps import StepPlan

ASSUMPTIONS = ("estimate: closed-form model FLOPs at the chip's dense bf16 peak; weights streamed once per pass, "
               "optimizer reads/writes and the KV cache per decoded token at the published HBM bandwidth "
               "(activations not counted); ring-collective bytes at the chip's total interconnect bandwidth; "
               "serial = no overlap (upper bound on time), overlapped = perfect overlap (lower bound)")


def estimate(step: StepPlan, chip: Chip, num_chips: int) -> dict | None:
    """``{compute_s, memory_s, comm_s, step_s_serial, step_s_overlapped, mfu_low, mfu_high, bound}``, or None
    when the step did not compile or does no model FLOPs."""
    if step.oom:
        return None
    compute = step.model_flops / num_chips / chip.peak_bf16_flops
    memory = step.hbm_traffic_bytes / chip.hbm_bandwidth
    comm = step.collectives.get("transfer_bytes", 0.0) / chip.interconnect_bandwidth
    serial = max(compute, memory) + comm
    overlapped = max(compute, memory, comm)
    if serial <= 0:
        return None
    parts = {"compute": compute, "memory": memory, "communication": comm}
    out = {"compute_s": compute, "memory_s": memory, "comm_s": comm, "step_s_serial": serial,
           "step_s_overlapped": overlapped, "bound": max(parts, key=parts.get)}
    if step.model_flops:
        out["mfu_low"] = compute / serial
        out["mfu_high"] = compute / overlapped
        out["tokens_per_s_per_chip_low"] = step.tokens / num_chips / serial
    return out
