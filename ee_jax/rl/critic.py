"""PPO's critic: a decoder trunk with a scalar value head, started from the policy's weights.

The value of a turn's state is read at the last prompt token (the position that predicts the first
reply token). The trunk starts as a copy of the starting checkpoint (a separate model: policy and
critic do not share gradients), the head at zero, so the first value estimates are 0.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from ee_jax.config import ModelConfig
from ee_jax.models.transformer import Decoder
from ee_jax.parallel.rules import use_mesh

CRITIC_HEAD = ("head", "bias")  # trained with the trunk's adapters when the model has LoRA


class ValueModel(nnx.Module):
    """``(tokens, positions, segment_ids) -> values [B, T]`` (fp32)."""

    def __init__(self, cfg: ModelConfig, *, rngs: nnx.Rngs):
        self.trunk = Decoder(cfg, rngs=rngs)
        self.head = nnx.Param(nnx.with_partitioning(nnx.initializers.zeros, ("embed",))(rngs.params(), (cfg.d_model,),
                                                                                      jnp.float32))
        self.bias = nnx.Param(jnp.zeros((), jnp.float32))

    def __call__(self, tokens, positions=None, segment_ids=None):
        x, _ = self.trunk.hidden(tokens, positions, segment_ids)
        h = self.trunk.final_norm(x).astype(jnp.float32)
        return h @ self.head[...] + self.bias[...]


def abstract_critic(cfg: ModelConfig, mesh):
    """``(graphdef, abstract params)`` of the critic, each leaf with its sharding."""
    with use_mesh(mesh):
        return nnx.get_abstract_model(lambda: ValueModel(cfg, rngs=nnx.Rngs(0)), mesh)


def critic_from_policy(cfg: ModelConfig, mesh, policy_params):
    """``(graphdef, params)``: the critic with the policy's decoder weights as its trunk and a zero head."""
    graphdef, abstract = abstract_critic(cfg, mesh)
    shardings = jax.tree.map(lambda a: a.sharding, abstract)

    def build(trunk):
        model = ValueModel(cfg, rngs=nnx.Rngs(0))
        nnx.update(model.trunk, trunk)
        return nnx.state(model)

    with use_mesh(mesh):
        params = jax.jit(build, out_shardings=shardings)(policy_params)
    return graphdef, params


def apply_critic(graphdef, params, tokens, positions=None, segment_ids=None):
    """Pure forward of the critic (use inside jit)."""
    return nnx.merge(graphdef, params)(tokens, positions, segment_ids)
