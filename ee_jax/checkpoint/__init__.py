"""Checkpointing: sharded Orbax train-state checkpoints and safetensors parameter export/import."""

from ee_jax.checkpoint.manager import Checkpointer, abstract_like
from ee_jax.checkpoint.safetensors_io import (
    export_safetensors,
    flat_dict_to_state,
    import_safetensors,
    named_leaves,
    state_to_flat_dict,
)

__all__ = [
    "Checkpointer",
    "abstract_like",
    "export_safetensors",
    "flat_dict_to_state",
    "import_safetensors",
    "named_leaves",
    "state_to_flat_dict",
]
