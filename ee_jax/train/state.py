"""The train state pytree and its sharded creation."""

from __future__ import annotations

from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
import optax
from jax.sharding import NamedSharding, PartitionSpec

from ee_jax.config import Config
from ee_jax.models.factory import abstract_model
from ee_jax.models.transformer import Decoder
from ee_jax.parallel.rules import use_mesh


@flax.struct.dataclass
class TrainState:
    """Everything a step reads and writes. ``rng`` is raw uint32 key data so it checkpoints plainly."""

    step: jax.Array
    params: Any  # nnx.State of nnx.Param
    opt_state: Any
    rng: jax.Array

    def as_dict(self) -> dict[str, Any]:
        return {"step": self.step, "params": self.params, "opt_state": self.opt_state, "rng": self.rng}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainState:
        return cls(step=d["step"], params=d["params"], opt_state=d["opt_state"], rng=d["rng"])


def state_shardings(tx: optax.GradientTransformation, abstract_params, mesh) -> TrainState:
    """Shardings for every leaf: optimizer moments follow their parameter, scalars are replicated."""
    replicated = NamedSharding(mesh, PartitionSpec())
    p_shard = jax.tree.map(lambda a: a.sharding, abstract_params)
    abstract_opt = jax.eval_shape(tx.init, abstract_params)
    masked = lambda x: isinstance(x, optax.MaskedNode)  # noqa: E731  (LoRA: parameters the optimizer leaves alone)
    opt_shard = optax.tree_map_params(
        tx, lambda v, s: v if masked(v) else s, abstract_opt, p_shard, transform_non_params=lambda _: replicated,
        is_leaf=masked,
    )
    return TrainState(step=replicated, params=p_shard, opt_state=opt_shard, rng=replicated)


def abstract_state(tx, abstract_params, mesh) -> TrainState:
    """ShapeDtypeStructs with shardings for the whole state (restore target, jit out_shardings)."""
    shard = state_shardings(tx, abstract_params, mesh)
    shapes = TrainState(
        step=jax.ShapeDtypeStruct((), jnp.int32),
        params=abstract_params,
        opt_state=jax.eval_shape(tx.init, abstract_params),
        rng=jax.ShapeDtypeStruct((2,), jnp.uint32),
    )
    return jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s), shapes, shard)


def create_train_state(cfg: Config, tx: optax.GradientTransformation, mesh, params=None):
    """``(graphdef, state, shardings)`` with parameters and optimizer state created already sharded.

    ``params`` (e.g. imported weights) replaces random initialisation when given.
    """
    from flax import nnx

    graphdef, abs_params = abstract_model(cfg.model, mesh)
    shard = state_shardings(tx, abs_params, mesh)

    def init(params):
        if params is None:
            params = nnx.state(Decoder(cfg.model, rngs=nnx.Rngs(cfg.seed)))
        rng = jax.random.key_data(jax.random.key(cfg.seed + 1))
        return TrainState(step=jnp.zeros((), jnp.int32), params=params, opt_state=tx.init(params), rng=rng)

    with use_mesh(mesh):
        state = jax.jit(init, out_shardings=shard)(params)
    return graphdef, state, shard
