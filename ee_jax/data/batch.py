"""The batch format every training objective shares: ``[B, T]`` inputs, targets, per-token loss weights,
positions and segment ids (packed sequences), sharded over the mesh's batch axes."""

from __future__ import annotations

from typing import Any

import numpy as np
from jax.sharding import NamedSharding

from ee_jax.parallel.rules import logical_to_spec

BATCH_KEYS = ("inputs", "targets", "weights", "positions", "segment_ids")


def batch_sharding(mesh) -> NamedSharding:
    """Rows over the data and fsdp axes, the sequence whole."""
    return NamedSharding(mesh, logical_to_spec(("batch", "length")))


def make_batch(tokens, weights=None, segment_ids=None, positions=None) -> dict[str, Any]:
    """Shift ``[B, T+1]`` token rows into an input/target batch (weights apply to the targets)."""
    tokens = np.asarray(tokens, np.int32)
    b, t1 = tokens.shape
    weights = np.ones((b, t1), np.float32) if weights is None else np.asarray(weights, np.float32)
    seg = np.ones((b, t1), np.int32) if segment_ids is None else np.asarray(segment_ids, np.int32)
    pos = np.broadcast_to(np.arange(t1, dtype=np.int32), (b, t1)) if positions is None else np.asarray(positions)
    # A target only counts when it continues the same segment as its input.
    same = (seg[:, 1:] == seg[:, :-1]) & (seg[:, 1:] > 0)
    return {
        "inputs": tokens[:, :-1],
        "targets": tokens[:, 1:],
        "weights": weights[:, 1:] * same,
        "positions": np.ascontiguousarray(pos[:, :-1], dtype=np.int32),
        "segment_ids": seg[:, :-1],
    }
