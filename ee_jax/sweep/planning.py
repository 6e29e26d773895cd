"""Planning figures for one model size: what its train step costs on these devices.

The step is the one the run trains with (same model, batch, sequence length, gradient accumulation,
mesh), compiled ahead of time: compile time, the compiled executable's memory analysis (arguments +
outputs + temporaries - aliased (donated) buffers = the peak the step needs on one device), FLOPs per
token from the closed-form count (``models.accounting``; XLA's own count alongside), then a few timed
steps on a fixed batch for tokens/s and MFU against the device peak (``train.metrics``).
"""

from __future__ import annotations

import dataclasses
import statistics
import time

import numpy as np

from ee_jax.config import Config, trained_model
from ee_jax.data.batch import batch_sharding, make_batch
from ee_jax.models.accounting import param_count, train_flops_per_token
from ee_jax.parallel import make_mesh
from ee_jax.parallel.rules import use_mesh
from ee_jax.train.metrics import device_peak_flops
from ee_jax.train.optimizer import make_optimizer
from ee_jax.train.state import create_train_state
from ee_jax.train.step import make_train_step


def _memory(compiled) -> dict:
    try:
        m = compiled.memory_analysis()
    except Exception:  # some backends do not implement it
        return {"peak_bytes": None}
    if m is None:
        return {"peak_bytes": None}
    parts = {k: int(getattr(m, f"{k}_size_in_bytes", 0) or 0) for k in ("argument", "output", "temp", "alias")}
    return {"peak_bytes": parts["argument"] + parts["output"] + parts["temp"] - parts["alias"],
            **{f"{k}_bytes": v for k, v in parts.items()}}


def _xla_flops(compiled) -> float | None:
    cost = compiled.cost_analysis()
    if isinstance(cost, list | tuple):
        cost = cost[0] if cost else {}
    return float(cost["flops"]) if cost and "flops" in cost else None


def size_figures(cfg: Config, *, steps: int = 3) -> dict:
    """Compile ``cfg``'s train step and time ``steps`` steps; returns the planning figures."""
    import jax

    cfg = dataclasses.replace(cfg, model=trained_model(cfg))
    t = cfg.train
    mesh = make_mesh(cfg)
    tx = make_optimizer(cfg.optimizer, 1000)
    graphdef, state, shardings = create_train_state(cfg, tx, mesh)
    step = make_train_step(graphdef, tx, shardings, mesh, t.grad_accum)
    rows = t.batch_size  # the global batch; grad_accum splits it inside the step
    tokens = np.random.default_rng(cfg.seed).integers(1, cfg.model.vocab_size, (rows, t.seq_len + 1))
    batch = {k: jax.device_put(v, batch_sharding(mesh)) for k, v in make_batch(tokens).items()}
    with use_mesh(mesh):
        t0 = time.perf_counter()
        compiled = step.jitted.lower(state, batch).compile()
        compile_s = time.perf_counter() - t0
        state, m = compiled(state, batch)  # warm-up
        jax.block_until_ready(m)
        times = []
        for _ in range(steps):
            t0 = time.perf_counter()
            state, m = compiled(state, batch)
            jax.block_until_ready(m)
            times.append(time.perf_counter() - t0)
    flops_per_token = train_flops_per_token(cfg.model, t.seq_len)
    step_s = statistics.median(times)
    tokens_per_step = rows * t.seq_len
    peak, peak_source = device_peak_flops()
    return {
        "params": param_count(cfg.model), "flops_per_token": flops_per_token,
        "xla_flops_per_step": _xla_flops(compiled), "compile_s": compile_s, **_memory(compiled),
        "tokens_per_step": tokens_per_step, "step_s": step_s, "tokens_per_s": tokens_per_step / step_s,
        "mfu": tokens_per_step * flops_per_token / step_s / peak, "peak_flops": peak, "peak_source": peak_source,
        "devices": len(mesh.devices.flat), "device_kind": jax.devices()[0].device_kind,
    }
