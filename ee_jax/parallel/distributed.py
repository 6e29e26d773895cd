"""Multi-host start-up (``jax.distributed.initialize`` from config or the environment), barriers, and
moving host values between processes."""

from __future__ import annotations

import json
import os

import jax
import numpy as np
from jax.experimental import multihost_utils

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
    use_orbax_coordination_barriers()
    return True


def host_barrier(name: str, timeout_s: float) -> None:
    """Wait until every process reaches barrier ``name`` (nothing to wait for on one process).

    On the coordination service, not a device collective: it runs no XLA program (so it cannot pair
    up with another collective on a host that skipped it), and a host that never arrives (crashed,
    stuck) is an error after ``timeout_s`` naming the barrier, instead of a hang. Every process must
    call the same barriers in the same order; a name may be reused (the service counts its uses).
    """
    if jax.process_count() == 1:
        return
    from jax._src import distributed

    client = distributed.global_state.client
    if client is None:  # several processes without jax.distributed (not a configuration ee_jax makes)
        multihost_utils.sync_global_devices(name)
        return
    try:
        client.wait_at_barrier(name, int(timeout_s * 1000))
    except Exception as e:  # JaxRuntimeError: DEADLINE_EXCEEDED naming the tasks that did not arrive
        raise TimeoutError(
            f"process {jax.process_index()}: not every process reached barrier {name!r} within {timeout_s:g} s "
            f"(distributed.barrier_timeout_s): another host failed or is far behind; see its log. "
            f"Coordination service: {str(e).strip()[:800]}") from e


def use_orbax_coordination_barriers() -> None:
    """Make Orbax's barriers wait on the coordination service (with a timeout), not on a device collective.

    Orbax's default barrier is ``sync_global_devices``, an all-device collective that its async-save
    thread runs while the training loop issues its own collectives from the main thread; the two
    threads' collectives can then be ordered differently on different hosts, and the job deadlocks
    (seen as a rare hang of a 2-process run at its first checkpoint). The coordination-service barrier
    is safe from background threads and fails after Orbax's timeout instead of hanging.
    """
    from absl import flags
    from orbax.checkpoint._src.multihost import multihost  # noqa: F401  (defines the flag)

    flag = flags.FLAGS["experimental_orbax_use_distributed_barrier"]
    flag.value, flag.present = True, 1  # absl flags are not parsed here: mark this one as given


def to_host(x) -> np.ndarray:
    """The whole value of ``x`` as a numpy array on this host.

    A ``jax.Array`` sharded over devices of several processes cannot be read locally: it is gathered
    (``process_allgather``), a collective, so every process must call this for the same array in the
    same order (as every host does when they run the same sampler call).
    """
    if isinstance(x, jax.Array) and not x.is_fully_addressable:
        return np.asarray(multihost_utils.process_allgather(x, tiled=True))
    return np.asarray(x)


def splits_work(mesh) -> bool:
    """Whether work run on ``mesh`` is split across processes: several processes run and ``mesh`` holds
    only this host's devices (each host can then play its own share, e.g. of evaluation episodes)."""
    return jax.process_count() > 1 and not mesh.is_multi_process


def host_share(n: int) -> range:
    """The indices of ``n`` items this process takes: every ``process_count``-th, from its index (so the
    shares differ in size by at most one)."""
    return range(jax.process_index(), n, jax.process_count())


def allgather_json(obj) -> list:
    """Every process's ``obj`` (JSON-serialisable), in process order: ``[obj]`` on one process.

    A collective (every process calls it, in the same order). The JSON text travels as padded uint8
    arrays through ``process_allgather``: sizes first, then the bytes.
    """
    if jax.process_count() == 1:
        return [obj]
    data = np.frombuffer(json.dumps(obj, separators=(",", ":")).encode(), np.uint8)
    sizes = np.asarray(multihost_utils.process_allgather(np.asarray([data.size], np.int32))).reshape(-1)
    padded = np.zeros(int(sizes.max()), np.uint8)
    padded[: data.size] = data
    every = np.asarray(multihost_utils.process_allgather(padded)).reshape(len(sizes), -1)
    return [json.loads(every[i, : int(sizes[i])].tobytes()) for i in range(len(sizes))]
