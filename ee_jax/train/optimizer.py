"""AdamW with linear warmup then cosine / linear / constant decay, and global-norm clipping."""

from __future__ import annotations

import jax
import optax

from ee_jax.config import Config, OptimizerConfig
from ee_jax.models.lora import only_adapters


def learning_rate_schedule(cfg: OptimizerConfig, total_steps: int) -> optax.Schedule:
    """Warmup from 0 to ``lr`` over ``warmup_steps``, then decay to ``lr * min_lr_ratio`` at ``total_steps``."""
    warmup = min(cfg.warmup_steps, max(total_steps - 1, 0))
    end = cfg.lr * cfg.min_lr_ratio
    if cfg.schedule == "cosine":
        return optax.warmup_cosine_decay_schedule(0.0, cfg.lr, warmup, max(total_steps, warmup + 1), end)
    decay = (
        optax.linear_schedule(cfg.lr, end, max(total_steps - warmup, 1))
        if cfg.schedule == "linear"
        else optax.constant_schedule(cfg.lr)
    )
    return optax.join_schedules([optax.linear_schedule(0.0, cfg.lr, max(warmup, 1)), decay], [warmup])


def _decay_mask(params):
    # No weight decay on norm scales and biases (the usual LLM recipe).
    def keep(path, _):
        name = next(str(p.key) for p in reversed(path) if isinstance(p, jax.tree_util.DictKey))
        return not (name == "scale" or name.endswith("_bias"))

    return jax.tree_util.tree_map_with_path(keep, params)


def make_optimizer(cfg: OptimizerConfig, total_steps: int) -> optax.GradientTransformation:
    """Clip by global norm, then AdamW with the schedule above."""
    parts = []
    if cfg.grad_clip > 0:
        parts.append(optax.clip_by_global_norm(cfg.grad_clip))
    parts.append(
        optax.adamw(
            learning_rate_schedule(cfg, total_steps), b1=cfg.b1, b2=cfg.b2, eps=cfg.eps,
            weight_decay=cfg.weight_decay, mask=_decay_mask,
        )
    )
    return optax.chain(*parts)


def train_optimizer(cfg: Config, total_steps: int) -> optax.GradientTransformation:
    """The training stages' optimizer: :func:`make_optimizer`; under LoRA, AdamW state and updates for the
    adapters alone."""
    tx = make_optimizer(cfg.optimizer, total_steps)
    return only_adapters(tx) if cfg.model.lora_rank else tx
