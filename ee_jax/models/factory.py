"""Creating models: abstract shapes, sharded initialisation, and pure apply functions."""

from __future__ import annotations

import jax
from flax import nnx

from ee_jax.config import ModelConfig
from ee_jax.models.transformer import Decoder
from ee_jax.parallel.rules import use_mesh


def abstract_model(cfg: ModelConfig, mesh: jax.sharding.Mesh):
    """``(graphdef, abstract params)``; each leaf a ShapeDtypeStruct with its concrete NamedSharding."""
    with use_mesh(mesh):
        graphdef, state = nnx.get_abstract_model(lambda: Decoder(cfg, rngs=nnx.Rngs(0)), mesh)
    return graphdef, state


def param_shardings(abstract_state):
    return jax.tree.map(lambda a: a.sharding, abstract_state)


def init_params(cfg: ModelConfig, mesh: jax.sharding.Mesh, seed: int = 0):
    """Randomly initialised parameters, created already sharded (never whole on one host).

    Returns ``(graphdef, params)`` where params is an ``nnx.State`` of ``nnx.Param``.
    """
    graphdef, abstract = abstract_model(cfg, mesh)
    with use_mesh(mesh):
        params = jax.jit(
            lambda: nnx.state(Decoder(cfg, rngs=nnx.Rngs(seed))), out_shardings=param_shardings(abstract)
        )()
    return graphdef, params


def count_params(params) -> int:
    return sum(int(x.size) for x in jax.tree.leaves(params))


def apply_model(graphdef, params, tokens, positions=None, segment_ids=None, cache=None):
    """Pure forward: rebuild the module from ``params`` and run it (use inside jit)."""
    return nnx.merge(graphdef, params)(tokens, positions, segment_ids, cache)
