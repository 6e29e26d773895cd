"""A rollout engine for multi-turn agents: continuous batching over a fixed set of cache rows, and each
episode's KV cache kept between its turns.

:meth:`Sampler.generate` decodes a batch of prompts in lock step and forgets them: every turn of an
episode re-prefills its whole prompt, and a batch waits for its slowest row. The engine instead holds
``rows`` KV-cache rows of the full context length (``model.max_seq_len``) and plays *sessions* (episodes):

* **Prefix reuse.** A row keeps the token ids whose keys/values it holds (the last prompt + reply). The
  session's next prompt is compared with them and only the part after the longest common prefix is
  prefilled (``extend``: the new tokens written at their own positions, attending the kept slots).
  A turn whose prompt kept fewer cached tokens than its previous turn did (the history window slid, so
  an early line changed) is counted as a *recompute* (:class:`EngineStats`).
* **Continuous batching.** Decoding runs ``chunk`` tokens per device call over all rows. Between calls,
  a row whose turn ended (EOS / stop id, a stop string, ``max_new_tokens``) hands its reply to
  ``on_reply``, which returns the session's next turn (prefilled into the same row before the next
  chunk) or ``None`` (the row takes the next pending session). No row waits for another's episode.
* **Valid prefix only.** Each decode call, and each prefill, attends a view of the cache cut to the
  longest row it serves (bucketed), not the whole context.

Outputs equal :meth:`Sampler.generate`'s: a turn's reply is sampled with the same per-row key
(``seed``, decode step) and the same device functions (tests compare greedy and sampled replies token
for token). ``(state, batch)``-style purity is kept on the device side; the host loop does per-*chunk*
bookkeeping (row refills, stop checks), never per-token work.
"""

from __future__ import annotations

import dataclasses
import weakref
from collections.abc import Callable, Iterable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from ee_jax.models.sampler import Sample, Sampler, bucket, cache_constrain
from ee_jax.parallel.distributed import host_share, splits_work, to_host
from ee_jax.parallel.rules import use_mesh

__all__ = ["EngineStats", "RolloutEngine", "Turn", "episode_share", "rollout_engine"]



@dataclasses.dataclass
class Turn:
    """One request: continue ``prompt`` (token ids) for ``session``. The session's cache row carries over to
    the next turn ``on_reply`` returns for it. ``seed``: the turn's sampling seed (as ``generate``'s)."""

    session: Any  # the caller's episode object (its next turn must name the same one)
    prompt: list[int]
    seed: int = 0


@dataclasses.dataclass
class EngineStats:
    """What the engine did (cumulative over :meth:`RolloutEngine.run` calls; ``reset()`` zeroes it)."""

    turns: int = 0
    sessions: int = 0
    prompt_tokens: int = 0  # tokens of every turn's prompt
    reused_tokens: int = 0  # prompt tokens whose keys/values were already in the session's row
    prefilled_tokens: int = 0  # prompt tokens computed (prompt_tokens - reused_tokens)
    recomputes: int = 0  # continuing turns that kept fewer cached tokens than the turn before (prefix changed)
    generated_tokens: int = 0
    decode_chunks: int = 0
    row_steps: int = 0  # rows x decode steps run
    live_row_steps: int = 0  # of which rows with a turn in progress

    def reset(self) -> None:
        for f in dataclasses.fields(self):
            setattr(self, f.name, 0)

    def to_json(self) -> dict:
        out = dataclasses.asdict(self)
        out["reuse_fraction"] = self.reused_tokens / self.prompt_tokens if self.prompt_tokens else 0.0
        out["row_utilisation"] = self.live_row_steps / self.row_steps if self.row_steps else 0.0
        return out


@dataclasses.dataclass
class _Row:
    turn: Turn | None = None  # the turn being decoded; None: free
    ids: list[int] = dataclasses.field(default_factory=list)  # token ids whose keys/values are in slots 0..
    reused: int = 0  # cached tokens the current turn kept
    out: list[np.ndarray] = dataclasses.field(default_factory=list)
    lps: list[np.ndarray] = dataclasses.field(default_factory=list)
    steps: int = 0  # decode steps of the current turn so far


class RolloutEngine:
    """Play sessions of turns over ``rows`` cache rows of ``sampler``'s model (module docstring).

    ``sampler`` supplies the weights (its inference copy, so a new ``sampler.params`` is picked up by the
    next :meth:`run`), the tokenizer, stop strings and the device functions. Get one with
    :func:`rollout_engine` so its compilations are shared by every caller of the same sampler.
    """

    def __init__(self, sampler: Sampler, rows: int, *, cache_len: int | None = None):
        self.sampler = sampler
        self.rows = bucket(rows, sampler.cfg.batch_buckets, sampler.data_parallel)
        self.cache_len = cache_len or sampler.model_cfg.max_seq_len
        self.chunk = sampler.chunk
        self.stats = EngineStats()
        self._init = jax.jit(self._init_fn)
        self._extend = jax.jit(self._extend_fn, static_argnames=("view",), donate_argnums=(2,))
        self._decode = jax.jit(self._decode_fn, static_argnames=("view", "top_k", "greedy"), donate_argnums=(2,))
        self._keys = jax.jit(jax.vmap(lambda s, o: jax.random.fold_in(jax.random.key(s), o)))

    # ---- device functions -------------------------------------------------------------------
    def _init_fn(self):
        cfg, b = self.sampler.model_cfg, self.rows
        cache = self.sampler.empty_cache(b, self.cache_len)
        return cache, jnp.zeros((b, cfg.vocab_size), jnp.float32), jnp.zeros((b,), jnp.int32), jnp.ones((b,), bool)

    def _extend_fn(self, params, layers, carry, rows, tokens, starts, lengths, *, view):
        """Write ``tokens`` [R, T] at positions ``starts + 0..T-1`` of cache rows ``rows`` (index ``self.rows``
        marks padding), attending what those rows already hold in their first ``view`` slots; set their
        next-token logits and positions."""
        cache, logits, pos, done = carry
        positions = starts[:, None] + jnp.arange(tokens.shape[1], dtype=jnp.int32)[None, :]
        # cache arrays are [B, K, S, H] per layer or [L, B, K, S, H] stacked: indexed from the end
        sub = jax.tree.map(lambda a: a.at[..., rows, :, :view, :].get(mode="clip"), cache)
        h, sub = self.sampler._forward(params, layers, tokens, positions, sub)
        last = jnp.take_along_axis(h, (lengths - 1)[:, None, None], axis=1)[:, 0]
        put = lambda a, u: a.at[rows].set(u.astype(a.dtype), mode="drop")  # noqa: E731
        cache = jax.tree.map(
            lambda a, u: cache_constrain(a.at[..., rows, :, :view, :].set(u.astype(a.dtype), mode="drop")), cache, sub)
        return (cache, put(logits, self.sampler._logits(params, last)), put(pos, starts + lengths),
                put(done, jnp.zeros_like(lengths, bool)))

    def _decode_fn(self, params, layers, carry, live, stop_ids, keys, temperature, top_p, *, view, top_k, greedy):
        """``chunk`` decode steps of every row over the first ``view`` cache slots (rows not ``live`` idle)."""
        cache, logits, pos, done = carry
        sub = jax.tree.map(lambda a: a[..., :view, :], cache)
        (sub, logits, pos, done), out, lps = self.sampler._decode_fn(
            params, layers, (sub, logits, pos, done | ~live), stop_ids, keys, temperature, top_p,
            steps=self.chunk, top_k=top_k, greedy=greedy)
        cache = jax.tree.map(lambda a, u: jax.lax.dynamic_update_slice_in_dim(a, u, 0, axis=a.ndim - 2), cache, sub)
        return (cache, logits, pos, done), out, lps

    # ---- host loop --------------------------------------------------------------------------
    def run(self, turns: Iterable[Turn], on_reply: Callable[[Turn, Sample], Turn | None], *,
            max_new_tokens: int, temperature: float = 0.0, stop_ids: Iterable[int] = ()) -> None:
        """Play every session: the first turns come from ``turns`` (drawn lazily, as rows free up); each
        reply goes to ``on_reply(turn, sample)``, which returns the same session's next turn or ``None``.

        ``sample`` is what ``sampler.generate([turn.prompt], seed=turn.seed, max_new_tokens=...,
        temperature=..., stop_ids=...)`` returns for that turn.
        """
        s = self.sampler
        limit = self.cache_len - max_new_tokens
        if limit < 1:
            raise ValueError(f"max_new_tokens={max_new_tokens} leaves no room for a prompt in {self.cache_len} slots")
        stop_arr = s._stop_ids(list(stop_ids))
        stop = list(s.cfg.stop)
        top_k, top_p = int(s.cfg.top_k), float(s.cfg.top_p)
        greedy = temperature == 0
        params, layers = s.inference_weights()
        pending = iter(turns)
        rows = [_Row() for _ in range(self.rows)]
        with use_mesh(s.mesh):
            carry = self._init()
            self._refill(rows, pending, limit)
            while any(r.turn is not None for r in rows):
                carry = self._prefill(params, layers, carry, rows)
                live = np.asarray([r.turn is not None for r in rows])
                seeds = np.asarray([r.turn.seed % 2**32 if r.turn else 0 for r in rows], np.uint32)
                offsets = np.asarray([r.steps for r in rows], np.int32)
                furthest = max(len(r.turn.prompt) + r.steps for r in rows if r.turn) + self.chunk
                view = min(bucket(furthest, s.cfg.prefill_buckets), self.cache_len)
                carry, out, lp = self._decode(
                    params, layers, carry, jnp.asarray(live), jnp.asarray(stop_arr),
                    self._keys(jnp.asarray(seeds), jnp.asarray(offsets)), jnp.float32(max(temperature, 1e-6)),
                    jnp.float32(top_p), view=view, top_k=top_k, greedy=greedy)
                out, lp, done = to_host(out), to_host(lp), to_host(carry[3])
                self.stats.decode_chunks += 1
                self.stats.row_steps += self.rows * self.chunk
                self.stats.live_row_steps += int(live.sum()) * self.chunk
                for i, r in enumerate(rows):
                    if r.turn is not None:
                        self._harvest(r, out[i], lp[i], bool(done[i]), max_new_tokens, stop_arr, stop, on_reply)
                self._refill(rows, pending, limit)

    def generate(self, prompts: list[list[int]], seeds: list[int], *, max_new_tokens: int,
                 temperature: float = 0.0, stop_ids: Iterable[int] = ()) -> list[Sample]:
        """One reply per prompt (single-turn sessions, continuously batched): ``out[i]`` is what
        ``sampler.generate([prompts[i]], seed=[seeds[i]], ...)[0]`` returns."""
        out: list[Sample | None] = [None] * len(prompts)

        def keep(turn: Turn, sample: Sample) -> None:
            out[turn.session] = sample

        self.run((Turn(i, list(p), int(sd)) for i, (p, sd) in enumerate(zip(prompts, seeds, strict=True))), keep,
                 max_new_tokens=max_new_tokens, temperature=temperature, stop_ids=stop_ids)
        return out

    def _refill(self, rows: list[_Row], pending, limit: int) -> None:
        """Free rows take the next pending sessions' first turns."""
        for r in rows:
            if r.turn is None:
                turn = next(pending, None)
                if turn is None:
                    return
                self._begin(r, turn, limit, new=True)

    def _begin(self, r: _Row, turn: Turn, limit: int, *, new: bool) -> None:
        if not turn.prompt:
            raise ValueError("every prompt needs at least one token")
        if len(turn.prompt) > limit:
            raise ValueError(f"prompt of {len(turn.prompt)} tokens + max_new_tokens exceeds "
                             f"{self.cache_len} cache slots")
        kept = 0
        if not new:
            for a, b in zip(r.ids, turn.prompt):
                if a != b:
                    break
                kept += 1
            kept = min(kept, len(turn.prompt) - 1)  # the last prompt token is fed again: its logits start the reply
            self.stats.recomputes += kept < r.reused
        else:
            self.stats.sessions += 1
        r.turn, r.reused, r.out, r.lps, r.steps = turn, kept, [], [], 0
        self.stats.turns += 1
        self.stats.prompt_tokens += len(turn.prompt)
        self.stats.reused_tokens += kept
        self.stats.prefilled_tokens += len(turn.prompt) - kept

    def _prefill(self, params, layers, carry, rows: list[_Row]):
        """Extend every row whose turn has not started: the prompt after the tokens it kept, batched."""
        todo = [i for i, r in enumerate(rows) if r.turn is not None and not r.out]
        if not todo:
            return carry
        width = bucket(max(len(rows[i].turn.prompt) - rows[i].reused for i in todo), self.sampler.cfg.prefill_buckets)
        width = min(width, self.cache_len)
        n = bucket(len(todo), [1, 4, 16, 64, 256], 1)
        n = min(n, self.rows) if len(todo) <= self.rows else len(todo)
        idx = np.full((n,), self.rows, np.int32)  # out of range: a padding row, dropped on write
        tokens = np.zeros((n, width), np.int32)
        starts = np.zeros((n,), np.int32)
        lengths = np.ones((n,), np.int32)
        for j, i in enumerate(todo):
            prompt = rows[i].turn.prompt
            start = min(rows[i].reused, self.cache_len - width)  # a write never runs past the last slot
            idx[j], starts[j], lengths[j] = i, start, len(prompt) - start
            tokens[j, : len(prompt) - start] = prompt[start:]
            rows[i].ids = list(prompt)
        # attend (and write) only the slots these rows can reach: not the whole context
        view = min(bucket(int(starts.max()) + width, self.sampler.cfg.prefill_buckets), self.cache_len)
        return self._extend(params, layers, carry, jnp.asarray(idx), jnp.asarray(tokens), jnp.asarray(starts),
                            jnp.asarray(lengths), view=view)

    def _harvest(self, r: _Row, out: np.ndarray, lp: np.ndarray, done: bool, max_new: int, stop_arr, stop,
                 on_reply) -> None:
        """Take a row's chunk; if its turn ended, hand the reply over and start the session's next turn."""
        r.out.append(out)
        r.lps.append(lp)
        r.steps += self.chunk
        ids = np.concatenate(r.out)
        finished = done or r.steps >= max_new or (stop and any(x in self.sampler.tokenizer.decode(ids.tolist())
                                                                for x in stop))
        if not finished:
            return
        sample = self.sampler._finish(ids[:max_new], np.concatenate(r.lps)[:max_new], stop_arr, stop)
        self.stats.generated_tokens += len(sample.ids)
        turn = r.turn
        # what the row's slots now hold: the prompt, then the reply (each sampled token was fed back)
        r.ids = (list(turn.prompt) + sample.ids)[: self.cache_len - self.chunk]
        nxt = on_reply(turn, sample)
        if nxt is None:
            r.turn, r.ids, r.out, r.lps, r.steps = None, [], [], [], 0
            return
        if nxt.session is not turn.session and nxt.session != turn.session:
            raise ValueError(f"on_reply returned a turn of session {nxt.session!r} for session {turn.session!r}")
        self._begin(r, nxt, self.cache_len - max_new, new=False)


def episode_share(sampler: Sampler, n: int) -> list[int] | None:
    """The indices of ``n`` episodes this process plays, or None when it plays them all.

    Under ``jax.distributed`` with a sampler on this host's devices (``Policy.sampler()``), each host plays
    every ``process_count``-th episode; the caller gathers the results. The sampler's weights are gathered
    here first: a collective every host joins, also a host left with no episodes."""
    if not splits_work(sampler.mesh):
        return None
    sampler.inference_weights()
    return list(host_share(n))


_ENGINES: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def rollout_engine(sampler: Sampler, rows: int) -> RolloutEngine:
    """The :class:`RolloutEngine` of ``sampler`` with ``rows`` rows, made once (its compilations reused)."""
    rows = bucket(rows, sampler.cfg.batch_buckets, sampler.data_parallel)  # callers asking 5 and 7 share 8
    per_sampler = _ENGINES.setdefault(sampler, {})
    if rows not in per_sampler:
        per_sampler[rows] = RolloutEngine(sampler, rows)
    return per_sampler[rows]
