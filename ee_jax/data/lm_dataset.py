"""Grain pipeline for language modelling: tokenized lines -> fixed windows -> shuffled batches.

Lines are joined with EOS into one token stream and cut into ``seq_len + 1`` windows (the extra
token is the last target). The window list is a Grain ``MapDataset`` with a seeded global shuffle,
sharded per host, repeated, batched: its iterator state is a small JSON dict, checkpointed with
the model so a resumed run sees exactly the batches an uninterrupted run would.
"""

from __future__ import annotations

import grain
import jax
import numpy as np


def pack_windows(token_lines: list[list[int]], eos_id: int, bos_id: int, seq_len: int) -> np.ndarray:
    """``[N, seq_len + 1]`` int32 windows over the EOS-joined stream (the remainder is dropped)."""
    stream: list[int] = []
    for ids in token_lines:
        if bos_id >= 0:
            stream.append(bos_id)
        stream.extend(ids)
        stream.append(eos_id)
    width = seq_len + 1
    n = len(stream) // width
    if n == 0:
        raise ValueError(f"corpus has {len(stream)} tokens: fewer than one window of train.seq_len+1={width}")
    return np.asarray(stream[: n * width], np.int32).reshape(n, width)


def _to_batch(rows: np.ndarray) -> dict[str, np.ndarray]:
    return {"tokens": rows}


def lm_batches(windows: np.ndarray, batch_size: int, seed: int, *, shuffle: bool = True,
               repeat: bool = True) -> grain.DatasetIterator:
    """Iterator of ``{"tokens": [local_batch, seq_len + 1]}``; local batch = global / process count."""
    nproc, pid = jax.process_count(), jax.process_index()
    if batch_size % nproc:
        raise ValueError(f"train.batch_size={batch_size} must divide evenly over {nproc} processes")
    ds = grain.MapDataset.source(list(windows)).seed(seed)
    if shuffle:
        ds = ds.shuffle()
    ds = ds[pid::nproc]
    if repeat:
        ds = ds.repeat(None)
    ds = ds.batch(batch_size // nproc, drop_remainder=True).map(np.stack).map(_to_batch)
    return iter(ds.to_iter_dataset(grain.ReadOptions(num_threads=0, prefetch_buffer_size=0)))
