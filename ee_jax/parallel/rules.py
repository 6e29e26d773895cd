"""The one table mapping logical axis names (declared by models) onto mesh axes.

Models never name mesh axes. Parameters and activations carry logical names such as ``embed`` or
``heads``; this table decides which of ``data``, ``fsdp``, ``tensor`` each one is split over.
"""

from __future__ import annotations

import contextlib

import flax.linen as nn
import jax
from jax.sharding import NamedSharding, PartitionSpec

MESH_AXES = ("data", "fsdp", "tensor")

LOGICAL_AXIS_RULES: tuple[tuple[str, str | tuple[str, ...] | None], ...] = (
    ("batch", ("data", "fsdp")),  # activations: batch over every data-parallel axis
    ("length", None),
    ("act_embed", None),
    ("act_heads", "tensor"),
    ("act_vocab", "tensor"),
    ("embed", "fsdp"),  # weights: d_model dimension is the FSDP shard dimension
    ("vocab", "tensor"),
    ("table_embed", None),  # embedding table's d_model: sharding it makes XLA rematerialise the gather
    ("heads", "tensor"),
    ("kv_heads", "tensor"),
    ("head_dim", None),
    ("mlp", "tensor"),
    ("norm", None),
    ("layers", None),
    ("cache_length", None),
    ("lora_rank", None),  # LoRA adapters: the small rank axis is replicated, the other follows its kernel
)


def logical_to_spec(logical: tuple[str | None, ...]) -> PartitionSpec:
    """Mesh PartitionSpec for a tuple of logical axis names under :data:`LOGICAL_AXIS_RULES`."""
    return nn.logical_to_mesh_axes(logical, LOGICAL_AXIS_RULES)


def logical_sharding(mesh: jax.sharding.Mesh, logical: tuple[str | None, ...]) -> NamedSharding:
    return NamedSharding(mesh, logical_to_spec(logical))


def constrain(x: jax.Array, logical: tuple[str | None, ...]) -> jax.Array:
    """Sharding constraint by logical names; a no-op when no mesh is active (plain single-device use)."""
    if jax.sharding.get_abstract_mesh().empty:
        return x
    return jax.lax.with_sharding_constraint(x, logical_to_spec(logical))


@contextlib.contextmanager
def use_mesh(mesh: jax.sharding.Mesh):
    """Activate ``mesh`` and the logical-axis rules (model creation and tracing need both)."""
    with jax.set_mesh(mesh), nn.logical_axis_rules(LOGICAL_AXIS_RULES):
        yield mesh
