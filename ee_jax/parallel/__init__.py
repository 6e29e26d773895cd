"""Meshes, the logical-axis rules table and multi-host start-up."""

from ee_jax.parallel.distributed import host_barrier
from ee_jax.parallel.distributed import initialize as initialize_distributed
from ee_jax.parallel.mesh import make_mesh, single_device_mesh
from ee_jax.parallel.rules import (
    LOGICAL_AXIS_RULES,
    MESH_AXES,
    constrain,
    logical_sharding,
    logical_to_spec,
    use_mesh,
)

__all__ = [
    "LOGICAL_AXIS_RULES", "MESH_AXES", "constrain", "host_barrier", "initialize_distributed", "logical_sharding",
    "logical_to_spec", "make_mesh", "single_device_mesh", "use_mesh",
]
