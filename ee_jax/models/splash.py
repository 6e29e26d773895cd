"""Pallas splash attention (the TPU flash-attention kernel), with packed segments and sliding windows.

On TPU it compiles to the Mosaic kernel; elsewhere it runs in Pallas interpret mode, which is slow
but exact, so the same code path is tested on CPU. GQA is served by repeating K/V heads. Under an
active mesh the kernel runs per shard through ``shard_map`` (batch over data/fsdp, heads over
tensor), since a Pallas call cannot be partitioned automatically.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax.experimental.pallas.ops.tpu.splash_attention import splash_attention_kernel as sk
from jax.experimental.pallas.ops.tpu.splash_attention import splash_attention_mask as sm

from ee_jax.parallel.rules import logical_to_spec


# Built once per trace, not cached across traces: the kernel holds its mask arrays as values of the trace
# that built it, and a second trace of the same shapes (the eval step after the train step, a scanned
# body) would leak them.
def _kernel(t: int, s: int, heads: int, window: int, interpret: bool):
    base = sm.CausalMask((t, s)) if window <= 0 else sm.LocalMask((t, s), window_size=(window - 1, 0), offset=0)
    block = min(128, t, s)
    sizes = sk.BlockSizes(block_q=block, block_kv=block, block_kv_compute=block, block_q_dkv=block,
                          block_kv_dkv=block, block_kv_dkv_compute=block, block_q_dq=block, block_kv_dq=block)
    return sk.make_splash_mha(sm.MultiHeadMask([base] * heads), block_sizes=sizes, head_shards=1,
                              q_seq_shards=1, interpret=interpret)


def splash_attention(q, k, v, segment_ids, window, scale: float, interpret: bool | None = None):
    """q [B,T,N,H], k/v [B,T,K,H], segment_ids [B,T]; ``window`` a Python int (0 = global)."""
    if not isinstance(window, int):
        raise ValueError(f"splash attention needs the layer's window as a Python int, got {type(window).__name__}")
    interpret = jax.default_backend() != "tpu" if interpret is None else interpret
    n = q.shape[2]
    k = jnp.repeat(k, n // k.shape[2], axis=2)
    v = jnp.repeat(v, n // v.shape[2], axis=2)

    def local(q, k, v, seg):
        kernel = _kernel(q.shape[1], k.shape[1], q.shape[2], window, interpret)
        heads_first = lambda x: x.transpose(0, 2, 1, 3)  # noqa: E731
        run = lambda q_, k_, v_, s_: kernel(q_, k_, v_, segment_ids=sk.SegmentIds(q=s_, kv=s_))  # noqa: E731
        out = jax.vmap(run)(heads_first(q * scale), heads_first(k), heads_first(v), seg)
        return heads_first(out)

    if jax.sharding.get_abstract_mesh().empty:
        return local(q, k, v, segment_ids)
    qkv_spec = logical_to_spec(("batch", "length", "act_heads", None))
    seg_spec = logical_to_spec(("batch", "length"))
    return jax.shard_map(local, in_specs=(qkv_spec, qkv_spec, qkv_spec, seg_spec), out_specs=qkv_spec,
                         check_vma=False)(q, k, v, segment_ids)
