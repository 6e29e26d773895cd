"""Turn samples -> fixed-shape packed rows for the RL train step.

Each turn is one training sample: ``prompt + reply`` ids with loss weight 1 on the reply tokens, and its
advantage on every reply token. Turns are packed first-fit, in order, into rows of ``seq_len`` tokens
(segment ids and per-segment positions, as the supervised pipeline packs), and the row count is padded
with empty rows (weight 0) to a multiple of the minibatch: every step sees the same shape, so nothing
recompiles, and no sample is dropped or repeated to make the shapes fit.

Arrays are in *target* space (``[R, seq_len]``; index ``j`` predicts token ``j + 1``), like
:func:`ee_jax.train.step.make_batch`: ``weights`` marks reply targets, ``value_mask`` marks the one
position per turn whose value is the turn state's value (the last prompt token).
"""

from __future__ import annotations

import dataclasses

import numpy as np


@dataclasses.dataclass
class TurnSample:
    """One turn to train on."""

    prompt: list[int]
    response: list[int]
    advantage: float
    returns: float = 0.0  # PPO: the value target of the turn's state
    sampler_logprobs: list[float] | None = None  # what the sampler reported (diagnostics only)

    def __len__(self) -> int:
        return len(self.prompt) + len(self.response)


ROW_KEYS = ("inputs", "targets", "weights", "positions", "segment_ids", "advantages", "returns", "value_mask",
            "sampler_logprobs", "sampler_mask")


def pack_turns(samples: list[TurnSample], seq_len: int, rows_multiple: int = 1) -> tuple[dict[str, np.ndarray], list]:
    """Pack ``samples`` into ``[R, seq_len]`` rows; ``R`` a multiple of ``rows_multiple``.

    Returns:
        ``(arrays, placement)``: the arrays of :data:`ROW_KEYS`, and per sample ``(row, offset)`` of its
        first token in token space.

    Raises:
        ValueError: a sample longer than ``seq_len + 1`` tokens, or with an empty prompt or reply.
    """
    rows: list[list[int]] = []  # sample indices per row
    used: list[int] = []
    placement = []
    for i, s in enumerate(samples):
        n = len(s)
        if not s.prompt or not s.response:
            raise ValueError(f"turn sample {i} has an empty {'prompt' if not s.prompt else 'reply'}")
        if n > seq_len + 1:
            raise ValueError(f"turn sample {i} is {n} tokens (prompt {len(s.prompt)} + reply {len(s.response)}), "
                             f"more than rl.seq_len + 1 = {seq_len + 1}")
        r = next((j for j, u in enumerate(used) if u + n <= seq_len + 1), None)
        if r is None:
            rows.append([])
            used.append(0)
            r = len(rows) - 1
        placement.append((r, used[r]))
        rows[r].append(i)
        used[r] += n
    n_rows = -(-max(len(rows), 1) // rows_multiple) * rows_multiple
    tok = np.zeros((n_rows, seq_len + 1), np.int32)
    seg = np.zeros((n_rows, seq_len + 1), np.int32)
    pos = np.zeros((n_rows, seq_len + 1), np.int32)
    w = np.zeros((n_rows, seq_len + 1), np.float32)  # token space: 1 on reply tokens
    adv = np.zeros((n_rows, seq_len + 1), np.float32)
    ret = np.zeros((n_rows, seq_len + 1), np.float32)
    vmask = np.zeros((n_rows, seq_len + 1), np.float32)
    slp = np.zeros((n_rows, seq_len + 1), np.float32)
    smask = np.zeros((n_rows, seq_len + 1), np.float32)
    for i, (s, (r, o)) in enumerate(zip(samples, placement)):
        p, n = len(s.prompt), len(s)
        tok[r, o:o + n] = s.prompt + s.response
        seg[r, o:o + n] = rows[r].index(i) + 1
        pos[r, o:o + n] = np.arange(n)
        w[r, o + p:o + n] = 1.0
        adv[r, o + p:o + n] = s.advantage
        # the value of the turn's state is read at its last prompt token, i.e. target index o + p - 1
        vmask[r, o + p] = 1.0
        ret[r, o + p] = s.returns
        if s.sampler_logprobs:
            slp[r, o + p:o + n] = s.sampler_logprobs
            smask[r, o + p:o + n] = 1.0
    shift = lambda a: np.ascontiguousarray(a[:, 1:])  # noqa: E731 (token space -> target space)
    arrays = {
        "inputs": np.ascontiguousarray(tok[:, :-1]), "targets": shift(tok),
        "weights": shift(w), "positions": np.ascontiguousarray(pos[:, :-1]),
        "segment_ids": np.ascontiguousarray(seg[:, :-1]), "advantages": shift(adv), "returns": shift(ret),
        "value_mask": shift(vmask), "sampler_logprobs": shift(slp), "sampler_mask": shift(smask),
    }
    return arrays, placement


def update_groups(n_rows: int, micro_rows: int, n_updates: int, rng: np.random.Generator) -> list[list[np.ndarray]]:
    """The rows of one pass in a seeded random order: per update, its micro-batches of row indices.

    ``n_rows`` is a multiple of ``micro_rows``; the micro-batches are split as evenly as possible
    between ``n_updates`` updates (fewer when there are fewer micro-batches than updates).
    """
    if n_rows % micro_rows:
        raise ValueError(f"{n_rows} packed rows do not divide into micro-batches of {micro_rows}")
    order = rng.permutation(n_rows)
    micro = [order[s:s + micro_rows] for s in range(0, n_rows, micro_rows)]
    groups = np.array_split(np.arange(len(micro)), min(max(n_updates, 1), len(micro)))
    return [[micro[i] for i in g] for g in groups]
