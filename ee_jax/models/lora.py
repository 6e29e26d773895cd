"""LoRA: low-rank adapters on the attention and MLP projections, trained while the base stays frozen.

``model.lora_rank=R`` (``lora_alpha``, ``lora_targets``) gives every targeted projection ``W`` of shape
``[in..., out...]`` an adapter ``A [in..., R]`` (uniform, fan-in scaled) and ``B [R, out...]`` (zeros), and
the layer computes ``x W + (alpha / R) (x A) B``: the model starts out equal to its base. Adapters are
ordinary parameters of the same model (``...attn.lora_q.a``), so the sampler, evaluation, checkpoints
and every training stage (imitation, world model, reflection, GRPO / PPO) use them unchanged. What
makes the base frozen:

* the loss sees the base through ``jax.lax.stop_gradient`` (:func:`freeze_base`), so no weight
  gradient of the base is computed;
* the optimizer is :func:`only_adapters`: AdamW state exists for the adapters alone, and the base's
  update is zero.

``merge_lora`` folds the adapters into the base (``W + (alpha / R) A B``) for export; ``add_lora`` puts
fresh adapters on weights that have none (imported HF weights, a full fine-tuning checkpoint).
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from ee_jax.checkpoint.safetensors_io import is_variable, leaf_value, named_leaves
from ee_jax.config import ModelConfig
from ee_jax.config.schema import LORA_TARGETS
from ee_jax.models.factory import abstract_model
from ee_jax.models.layers import LoRA, lora_targets  # noqa: F401  (the adapter layer; re-exported)
from ee_jax.models.transformer import Decoder
from ee_jax.parallel.rules import use_mesh

TARGETS = LORA_TARGETS
PREFIX = "lora_"


def _names(path) -> list[str]:
    names = [str(getattr(k, "key", getattr(k, "name", ""))) for k in path]
    return [n for n in names if n != "value"]  # an nnx.Variable's own level


def is_adapter(path, also: tuple[str, ...] = ()) -> bool:
    """Whether a params tree path lies inside an adapter (a ``lora_*`` attribute), or is a top-level
    parameter named in ``also`` (PPO's value head trains with the critic's adapters)."""
    names = _names(path)
    return any(n.startswith(PREFIX) for n in names) or (len(names) == 1 and names[0] in also)


def has_adapters(params) -> bool:
    return any(is_adapter(p) for p, _ in jax.tree_util.tree_flatten_with_path(params)[0])


def freeze_base(params, also: tuple[str, ...] = ()):
    """``params`` with ``stop_gradient`` on every non-adapter leaf (identity when there are no adapters)."""
    if not has_adapters(params):
        return params
    return jax.tree_util.tree_map_with_path(
        lambda p, x: x if is_adapter(p, also) else jax.lax.stop_gradient(x), params)


def trainable_leaves(params, also: tuple[str, ...] = ()):
    """``(trainable, rebuild)``: the leaves a step differentiates (the adapters, and ``also``, when the
    model has adapters; else every leaf) and ``rebuild(trainable, fill=None)``, the whole tree again with
    the other leaves as they are (under ``stop_gradient``) or ``fill(leaf)`` (e.g. zero gradients).

    Differentiating only ``trainable`` keeps gradients, and a gradient accumulator, adapter-sized under LoRA.
    """
    leaves, treedef = jax.tree_util.tree_flatten_with_path(params)
    lora = has_adapters(params)
    keep = [not lora or is_adapter(p, also) for p, _ in leaves]
    trainable = [x for (_, x), k in zip(leaves, keep, strict=True) if k]

    def rebuild(values, fill=None):
        it = iter(values)
        return jax.tree_util.tree_unflatten(treedef, [
            next(it) if k else (jax.lax.stop_gradient(x) if fill is None else fill(x))
            for (_, x), k in zip(leaves, keep, strict=True)])

    return trainable, rebuild


def only_adapters(tx: optax.GradientTransformation, also: tuple[str, ...] = ()) -> optax.GradientTransformation:
    """``tx`` on the adapters (and ``also``); the rest gets a zero update and no optimizer state."""
    labels = lambda params: jax.tree_util.tree_map_with_path(  # noqa: E731
        lambda p, _: "adapter" if is_adapter(p, also) else "frozen", params)
    return optax.multi_transform({"adapter": tx, "frozen": optax.set_to_zero()}, labels)


def adapter_count(params) -> int:
    """Number of adapter parameters."""
    return sum(int(x.size) for p, x in jax.tree_util.tree_flatten_with_path(params)[0] if is_adapter(p))


def _named(params) -> dict[str, jax.Array]:
    return {name: leaf_value(leaf) for name, leaf in named_leaves(params)[0]}


def _rebuild(target, values: dict[str, jax.Array]):
    leaves, treedef = named_leaves(target)
    return jax.tree_util.tree_unflatten(
        treedef, [leaf.replace(values[n]) if is_variable(leaf) else values[n] for n, leaf in leaves])


def merge_lora(params, cfg: ModelConfig, mesh):
    """``(params, cfg)`` of the plain model: every adapted kernel becomes ``W + (alpha / R) A B``.

    Runs on the devices with the base model's shardings (nothing gathered to the host).
    """
    base_cfg = dataclasses.replace(cfg, lora_rank=0)
    if not cfg.lora_rank:
        return params, base_cfg
    _, target = abstract_model(base_cfg, mesh)
    scale = cfg.lora_alpha / cfg.lora_rank

    def merge(params):
        src = _named(params)
        out = {}
        for name in _named(target):
            w = src[name]
            prefix, _, last = name.rpartition(".")
            a = src.get(f"{prefix}.{PREFIX}{last}.a")
            if a is not None:
                b = src[f"{prefix}.{PREFIX}{last}.b"]
                layers, r = a.shape[0], a.shape[-1]
                delta = jnp.einsum("lir,lro->lio", a.reshape(layers, -1, r).astype(jnp.float32),
                                   b.reshape(layers, r, -1).astype(jnp.float32))
                w = (w.astype(jnp.float32) + scale * delta.reshape(w.shape)).astype(w.dtype)
            out[name] = w
        return _rebuild(target, out)

    shardings = jax.tree.map(lambda a: a.sharding, target)
    with use_mesh(mesh):
        return jax.jit(merge, out_shardings=shardings)(params), base_cfg


def add_lora(params, cfg: ModelConfig, mesh, seed: int = 0):
    """``params`` of the plain model (no adapters) plus fresh adapters for ``cfg`` (B = 0: same function).

    Adapters already present are kept. The fresh ones come from ``Decoder(cfg, seed)``'s initialisers,
    inside one jitted function whose unused base initialisation XLA drops.
    """
    _, target = abstract_model(cfg, mesh)

    def add(params):
        have = _named(params)
        fresh = _named(nnx.state(Decoder(cfg, rngs=nnx.Rngs(seed))))
        return _rebuild(target, {n: have[n] if n in have else fresh[n] for n in _named(target)})

    shardings = jax.tree.map(lambda a: a.sharding, target)
    with use_mesh(mesh):
        return jax.jit(add, out_shardings=shardings)(params)
