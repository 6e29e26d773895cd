"""Multi-host start-up: ``jax.distributed.initialize`` from config or the environment."""

from __future__ import annotations

import os

import jax
import numpy as np

from ee_jax.config import DistributedConfig

_ENV_HINTS = ("SLURM_JOB_ID", "TPU_WORKER_HOSTNAMES", "MEGASCALE_COORDINATOR_ADDRESS", "JAX_COORDINATOR_ADDRESS")


def should_initialize(cfg: DistributedConfig) -> bool:
    """True when this process is one of several: explicitly enabled, or a cluster is detected."""
    if cfg.enabled:
        return True
    return cfg.auto and any(os.environ.get(k) for k in _ENV_HINTS) and int(os.environ.get("SLURM_NTASKS", "2")) > 1


def initialize(cfg: DistributedConfig) -> bool:
    """Initialise ``jax.distributed`` if needed; returns whether it did. Call before any JAX op.

    Explicit ``coordinator_address`` / ``num_processes`` / ``process_id`` win; otherwise JAX's own
    cluster detection (Cloud TPU, SLURM, Open MPI) fills them in. A peer that never arrives fails
    after ``initialization_timeout_s`` with JAX's error rather than hanging.
    """
    if not should_initialize(cfg):
        return False
    if jax.distributed.is_initialized():  # a command that runs another (run -> collect, train) calls it again
        return True
    kwargs: dict = {"initialization_timeout": cfg.initialization_timeout_s}
    if cfg.coordinator_address:
        kwargs.update(
            coordinator_address=cfg.coordinator_address,
            num_processes=cfg.num_processes,
            process_id=cfg.process_id,
        )
    elif cfg.enabled and not cfg.auto:
        raise ValueError(
            "distributed.coordinator_address is empty but distributed.auto=false: set the coordinator "
            "address (host:port), num_processes and process_id, or enable auto-detection"
        )
    try:
        jax.distributed.initialize(**kwargs)
    except RuntimeError as e:
        raise RuntimeError(f"jax.distributed.initialize({kwargs}) failed: {e}") from e
    return True


def to_host(x) -> np.ndarray:
    """The whole value of ``x`` as a numpy array on this host.

    A ``jax.Array`` sharded over devices of several processes cannot be read locally: it is gathered
    (``process_allgather``), a collective, so every process must call this for the same array in the
    same order (as every host does when they run the same sampler call).
    """
    if isinstance(x, jax.Array) and not x.is_fully_addressable:
        from jax.experimental import multihost_utils

        return np.asarray(multihost_utils.process_allgather(x, tiled=True))
    return np.asarray(x)
