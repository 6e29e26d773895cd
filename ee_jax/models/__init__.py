"""NNX decoder (Llama-3 / Qwen2 / Gemma3 by config), presets, accounting and the sampler."""

from ee_jax.config import PRESETS, get_preset, preset_config  # re-exported: presets are config data
from ee_jax.models.accounting import (
    forward_flops_per_token,
    param_count,
    train_flops_per_token,
)
from ee_jax.models.factory import abstract_model, apply_model, count_params, init_params
from ee_jax.models.transformer import Decoder, init_cache, layer_windows

__all__ = [
    "PRESETS", "Decoder", "abstract_model", "apply_model", "count_params", "forward_flops_per_token",
    "get_preset", "init_cache", "init_params", "layer_windows", "param_count", "preset_config",
    "train_flops_per_token",
]
