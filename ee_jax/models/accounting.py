"""Closed-form parameter and FLOP counts (used for presets, MFU and the scaling report).

FLOPs per token for training: ``6 * N`` for the matmuls that touch each non-embedding-lookup
parameter (forward 2N, backward 4N) plus ``6 * L * T * d_attn`` for the attention score and value
products at sequence length ``T``. That attention term is PaLM appendix B's ``12 * L * T * d_attn``
halved, i.e. it counts only the causally visible half of the score matrix (the work a causal kernel
needs). ``N`` counts the LM head but not the embedding lookup.
"""

from __future__ import annotations

from ee_jax.config import ModelConfig


def head_dim(cfg: ModelConfig) -> int:
    return cfg.head_dim or cfg.d_model // cfg.num_heads


def layer_params(cfg: ModelConfig) -> int:
    d, hd, h, kv, f = cfg.d_model, head_dim(cfg), cfg.num_heads, cfg.num_kv_heads, cfg.ffn_dim
    attn = d * h * hd + 2 * d * kv * hd + h * hd * d
    if cfg.qkv_bias:
        attn += h * hd + 2 * kv * hd
    if cfg.qk_norm:
        attn += 2 * hd
    mlp = 3 * d * f
    norms = (4 if cfg.post_norms else 2) * d
    return attn + mlp + norms


def param_count(cfg: ModelConfig) -> int:
    """Total trainable parameters, embeddings included."""
    embed = cfg.vocab_size * cfg.d_model
    head = 0 if cfg.tie_embeddings else cfg.vocab_size * cfg.d_model
    return embed + head + cfg.num_layers * layer_params(cfg) + cfg.d_model


def matmul_params(cfg: ModelConfig) -> int:
    """Parameters that take part in a matmul per token: all but the embedding lookup and norms."""
    return cfg.num_layers * layer_params(cfg) + cfg.vocab_size * cfg.d_model


def train_flops_per_token(cfg: ModelConfig, seq_len: int) -> float:
    """Model FLOPs per trained token (forward + backward), see module docstring."""
    attn = 6 * cfg.num_layers * seq_len * cfg.num_heads * head_dim(cfg)
    return 6 * matmul_params(cfg) + attn


def forward_flops_per_token(cfg: ModelConfig, context_len: int) -> float:
    """Forward FLOPs for one token attending to ``context_len`` keys (sampler accounting)."""
    return 2 * matmul_params(cfg) + 4 * cfg.num_layers * context_len * cfg.num_heads * head_dim(cfg)
