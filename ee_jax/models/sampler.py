"""Batched sampling with a KV cache: bucketed prefill, then decode in jitted chunks.

Shapes are bucketed (batch, prompt length, cache length) so a handful of compilations serve every
request. Decoding runs ``chunk`` tokens per device call; between calls the host checks EOS and stop
strings, so generation ends early without recompiling. Returned log-probabilities are those of the
sampled token under the distribution it was drawn from (``softmax(logits / T)``, or ``T = 1`` for
greedy), before top-k/top-p truncation: what an RL loss needs as "old log-probs".

Generation runs the decoder layer by layer over *per-layer* parameters and KV caches
(:meth:`Sampler._forward`, which mirrors :class:`~ee_jax.models.transformer.Decoder`). Through
``apply_model``'s stacked ``[layers, ...]`` arrays, every decoded token re-sliced all layer weights
and re-stacked the whole cache, a copy of both per token (BENCHMARKS.md, "Sampler (CPU)"). Prefill
computes logits only at each prompt's last position.

With ``sampler.scan_layers`` decoding scans the layers instead: the inference copy keeps the layer weights
stacked and the KV cache is one ``(k, v)`` pair with a leading layer axis, so the compiled decode step
holds one window period of layers whatever the depth (compile time of a 32-layer model stays that of one
period). Outputs equal the unrolled loop's. Off by default: the scan's inputs and outputs hold extra copies
of the KV cache, which the unrolled loop does not (2.9x the engine prefill's memory for ee-8b).

**The inference copy.** Decoding reads an inference copy of the weights, made once per policy version
(when :attr:`Sampler.params` is set, e.g. after each RL update) rather than per call: the layer weights
sliced per layer (kept stacked when scanned), every matrix cast to the model's compute dtype
(``sampler.weights_dtype="auto"``: each layer casts it so on use, so outputs are bit-identical while a
bf16 model decodes from half the bytes), and every array resharded for decoding: replicated over the
data-parallel axes (``fsdp`` gathered once, not once per decoded token), split over ``tensor`` as in
training.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax.sharding import NamedSharding, PartitionSpec

from ee_jax.config import ModelConfig, SamplerConfig
from ee_jax.models.factory import apply_model
from ee_jax.models.layers import dtype_of
from ee_jax.models.transformer import layer_windows, window_period
from ee_jax.parallel.distributed import to_host
from ee_jax.parallel.rules import constrain, logical_to_spec, use_mesh


@dataclasses.dataclass
class Sample:
    """One generated continuation."""

    ids: list[int]
    logprobs: list[float]
    text: str | None
    finish_reason: str  # eos | stop | length


def bucket(n: int, buckets: Sequence[int], multiple: int = 1) -> int:
    """The smallest bucket >= ``n`` that is a multiple of ``multiple`` (else ``n`` rounded up to one)."""
    for b in sorted(buckets):
        if b >= n and b % multiple == 0:
            return b
    return -(-n // multiple) * multiple


def _filter_logits(logits, top_k: int, top_p):
    if top_k > 0:
        kth = jax.lax.top_k(logits, top_k)[0][..., -1:]
        logits = jnp.where(logits < kth, -jnp.inf, logits)
    sorted_logits = jnp.sort(logits, axis=-1)[..., ::-1]
    probs = jax.nn.softmax(sorted_logits, axis=-1)
    # Keep the smallest prefix whose mass reaches top_p (the first token is always kept).
    cum_before = jnp.cumsum(probs, axis=-1) - probs
    cutoff = jnp.min(jnp.where(cum_before < top_p, sorted_logits, jnp.inf), axis=-1, keepdims=True)
    return jnp.where(logits < cutoff, -jnp.inf, logits)


def _choose(logits, key, temperature, top_k: int, top_p, greedy: bool):
    if greedy:
        tok = jnp.argmax(logits, axis=-1)
        lp = jax.nn.log_softmax(logits, axis=-1)
    else:
        scaled = logits / temperature
        lp = jax.nn.log_softmax(scaled, axis=-1)
        tok = jax.random.categorical(key, _filter_logits(scaled, top_k, top_p), axis=-1)
    return tok.astype(jnp.int32), jnp.take_along_axis(lp, tok[:, None], axis=-1)[:, 0]


def cache_constrain(c):
    """A KV-cache array (per layer [B, K, S, H], or stacked [L, B, K, S, H]) constrained to its logical axes."""
    return constrain(c, ("layers",) * (c.ndim - 4) + ("batch", "kv_heads", "cache_length", "head_dim"))


def _in_layers(path) -> bool:
    """Whether a parameter path is inside the stacked ``layers`` (decoding reads the per-layer copies)."""
    return jax.tree_util.keystr(path).startswith("['layers']")


def _decode_sharding(src, drop_first: bool):
    """``src`` (a training sharding) with the ``fsdp`` axis gathered, for decoding; ``drop_first``: of one
    layer's slice of a stacked ``[layers, ...]`` array."""
    if not isinstance(src, NamedSharding):
        return src
    spec = list(src.spec)[1:] if drop_first else list(src.spec)

    def keep(entry):
        if entry == "fsdp":
            return None
        if isinstance(entry, tuple):
            rest = tuple(e for e in entry if e != "fsdp")
            return rest if len(rest) > 1 else (rest[0] if rest else None)
        return entry

    return NamedSharding(src.mesh, PartitionSpec(*[keep(e) for e in spec]))


def _replicated_on(params, mesh):
    """``params`` (on other devices, e.g. every host's) as arrays replicated over ``mesh``, whose devices
    must be among this process's: an all-gather where they live, then each local copy taken as it is."""
    src = jax.tree.leaves(params)[0].sharding.mesh
    everywhere = jax.jit(lambda p: p, out_shardings=NamedSharding(src, PartitionSpec()))(params)
    here = NamedSharding(mesh, PartitionSpec())

    def local(a):
        copies = {s.device: s.data for s in a.addressable_shards}
        return jax.make_array_from_single_device_arrays(a.shape, here, [copies[d] for d in mesh.devices.flat])

    return jax.tree.map(local, everywhere)


class Sampler:
    """Generate from, and score continuations under, a decoder's parameters.

    ``tokenizer`` (optional) decodes text and resolves stop strings; without it, pass ids.
    """

    def __init__(self, graphdef, params, model_cfg: ModelConfig, mesh, tokenizer=None,
                 cfg: SamplerConfig | None = None, chunk: int = 16):
        self._inference = self._here = None
        self.graphdef, self.params, self.model_cfg = graphdef, params, model_cfg
        self.mesh, self.tokenizer, self.cfg, self.chunk = mesh, tokenizer, cfg or SamplerConfig(), chunk
        self.data_parallel = mesh.shape["data"] * mesh.shape["fsdp"]
        self.scan = bool(self.cfg.scan_layers)  # sampler.scan_layers: scan the stacked layers (off: unrolled)
        self._row_sharding = NamedSharding(mesh, logical_to_spec(("batch", "length")))
        self._layer_graphdef = nnx.split(nnx.merge(graphdef, params).layers)[0]
        self._prepare = jax.jit(self._prepare_fn)
        self._prefill = jax.jit(self._prefill_fn, static_argnames=("cache_len",))
        self._decode = jax.jit(self._decode_fn, static_argnames=("steps", "top_k", "greedy"), donate_argnums=(2,))
        self._score = jax.jit(self._score_fn)

    @property
    def params(self):
        """The policy's parameters; setting them (a new policy version) drops the inference copy."""
        return self._params

    @params.setter
    def params(self, value) -> None:
        self._params, self._inference, self._here = value, None, None

    def inference_weights(self):
        """``(params, layers)`` decoding reads: the non-layer weights (embedding, final norm, head) in
        ``params`` and the per-layer states in ``layers``, cast and resharded (module docstring); made on
        the first call after :attr:`params` was set, then reused."""
        if self._inference is None:
            params = self.params_here()
            with use_mesh(self.mesh):
                prepared = self._prepare(params)
                self._inference = jax.device_put(prepared, self.inference_shardings(params, prepared))
        return self._inference

    def params_here(self):
        """:attr:`params` on this sampler's mesh. Under ``jax.distributed`` a sampler can run on one host's
        devices (``Policy.sampler``), each host decoding its own share of the work, while the training
        parameters span every host's: they are then gathered, replicated, once per policy version (a
        collective: every process calls it for the same version)."""
        if self._here is None:
            self._here = self._params
            leaf = jax.tree.leaves(self._params)[0]
            if isinstance(leaf, jax.Array) and not leaf.is_fully_addressable and not self.mesh.is_multi_process:
                self._here = _replicated_on(self._params, self.mesh)
        return self._here

    def inference_shardings(self, params, prepared):
        """The shardings of ``prepared`` (the inference copy of ``params``, concrete or abstract): the
        training shardings with ``fsdp`` gathered; the stacked layers inside ``params`` keep theirs."""
        top, layers = prepared
        stacked = nnx.split(nnx.merge(self.graphdef, params).layers)[1]
        top_sh = jax.tree_util.tree_map_with_path(
            lambda path, _, src: src.sharding if _in_layers(path) else _decode_sharding(src.sharding, False),
            top, params)
        if self.scan:  # the stacked copy keeps its leading layer axis
            return top_sh, jax.tree.map(lambda _, src: _decode_sharding(src.sharding, False), layers, stacked)
        return top_sh, [jax.tree.map(lambda _, src: _decode_sharding(src.sharding, True), layer, stacked)
                        for layer in layers]

    def abstract_inference_weights(self, abs_params):
        """The inference copy of abstract ``abs_params`` as ShapeDtypeStructs with their shardings (planning)."""
        shapes = jax.eval_shape(self._prepare_fn, abs_params)
        return jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s), shapes,
                            self.inference_shardings(abs_params, shapes))

    # ---- device functions -------------------------------------------------------------------
    def _cast(self, a):
        """A matrix in the inference dtype (vectors, e.g. norm scales used in fp32, keep theirs)."""
        w = self.cfg.weights_dtype
        dt = dtype_of(self.model_cfg.dtype) if w == "auto" else jnp.dtype(w)
        return a.astype(dt) if a.ndim >= 2 and jnp.issubdtype(a.dtype, jnp.floating) else a

    def _prepare_fn(self, params):
        """The inference copy: non-layer weights cast (the stacked layers stay as they are: decoding
        never reads them), and the stacked layer params as per-layer states, cast."""
        top = jax.tree_util.tree_map_with_path(lambda path, a: a if _in_layers(path) else self._cast(a), params)
        stacked = nnx.split(nnx.merge(self.graphdef, params).layers)[1]
        if self.scan:
            return top, jax.tree.map(self._cast, stacked)
        return top, [jax.tree.map(lambda a, i=i: self._cast(a[i]), stacked) for i in range(self.model_cfg.num_layers)]

    def empty_cache(self, rows: int, length: int):
        """A zero KV cache of ``rows`` x ``length`` slots: per layer ``(k, v)`` of [rows, kv_heads, length,
        head_dim], as a list of per-layer pairs, or (scanned layers) one ``(k, v)`` pair with a leading
        layer axis. Code that touches a cache indexes its axes from the end, so it serves both."""
        cfg = self.model_cfg
        hd = cfg.head_dim or cfg.d_model // cfg.num_heads
        if self.scan:
            zeros = lambda: cache_constrain(  # noqa: E731
                jnp.zeros((cfg.num_layers, rows, cfg.num_kv_heads, length, hd), dtype_of(cfg.dtype)))
            return zeros(), zeros()
        zeros = lambda: cache_constrain(jnp.zeros((rows, cfg.num_kv_heads, length, hd), dtype_of(cfg.dtype)))  # noqa: E731
        return [(zeros(), zeros()) for _ in range(cfg.num_layers)]

    def _forward(self, params, layers, tokens, positions, caches):
        """The decoder over pre-sliced per-layer ``layers`` and ``caches``: (hidden before the final norm, caches).

        ``Decoder.__call__`` slices its stacked weights inside the step, which XLA:CPU copies on every
        decoded token; here they are sliced once per ``generate`` call. Embedding, RoPE and the head are
        the Decoder's own methods. ``caches``: per-layer ``(k, v)`` of shape [B, kv_heads, S, head_dim] (head-major).
        """
        model = nnx.merge(self.graphdef, params)
        x = model.embed_tokens(tokens)
        windows = layer_windows(self.model_cfg)
        ropes = {w: model.rope(positions, local=w > 0) for w in set(windows)}
        segments = jnp.ones_like(positions)

        def block(x, state, window, cache):
            return nnx.merge(self._layer_graphdef, state)(x, ropes[window], positions, segments, window, cache)

        if not self.scan:
            new_caches = []
            for state, window, cache in zip(layers, windows, caches, strict=True):
                x, cache = block(x, state, window, cache)
                new_caches.append(cache)
            return x, new_caches
        # Scanned: groups of one window period (static windows inside), as Decoder.hidden; the layers past
        # the last whole period unrolled. The compiled body holds one period whatever the depth.
        period = window_period(windows)
        n = len(windows) // period * period
        group = lambda a: a[:n].reshape(n // period, period, *a.shape[1:])  # noqa: E731

        def body(x, xs):
            states, ks, vs = xs
            out = []
            for j in range(period):
                x, kv = block(x, jax.tree.map(lambda a, j=j: a[j], states), windows[j], (ks[j], vs[j]))
                out.append(kv)
            return x, tuple(jnp.stack([kv[i] for kv in out]) for i in (0, 1))

        k_all, v_all = caches
        x, (ks, vs) = jax.lax.scan(body, x, (jax.tree.map(group, layers), group(k_all), group(v_all)))
        ks, vs = [ks.reshape(n, *ks.shape[2:])], [vs.reshape(n, *vs.shape[2:])]
        for i in range(n, len(windows)):
            x, (k, v) = block(x, jax.tree.map(lambda a, i=i: a[i], layers), windows[i], (k_all[i], v_all[i]))
            ks.append(k[None])
            vs.append(v[None])
        return x, (cache_constrain(jnp.concatenate(ks)), cache_constrain(jnp.concatenate(vs)))

    def _logits(self, params, h):
        """fp32 logits [B, V] from last-position hidden states [B, D]."""
        return nnx.merge(self.graphdef, params).unembed(h)

    def _prefill_fn(self, params, layers, tokens, lengths, *, cache_len):
        """Next-token logits at each row's last prompt position, and per-layer caches of ``cache_len``.

        The prompt attends over a cache of its own length; the cache is padded to ``cache_len`` after.
        """
        b, t = tokens.shape
        positions = jnp.broadcast_to(jnp.arange(t, dtype=jnp.int32), (b, t))
        h, caches = self._forward(params, layers, tokens, positions, self.empty_cache(b, t))
        pad = lambda c: cache_constrain(jnp.pad(c, [(0, 0)] * (c.ndim - 2) + [(0, cache_len - t), (0, 0)]))  # noqa: E731
        last = jnp.take_along_axis(h, (lengths - 1)[:, None, None], axis=1)[:, 0]
        return self._logits(params, last), jax.tree.map(pad, caches)

    def _decode_fn(self, params, layers, carry, stop_ids, key, temperature, top_p, *, steps, top_k, greedy):
        def body(i, carry):
            cache, logits, pos, done, out, lps = carry
            if key.ndim == 0:  # one key for the batch: row r draws from fold_in(fold_in(key, i), r)
                k = jax.random.fold_in(key, pos[0] * 0 + i)
                keys = jax.vmap(lambda r: jax.random.fold_in(k, r))(jnp.arange(logits.shape[0]))
            else:  # a key per row, drawn as if that row were row 0 of a batch of its own
                keys = jax.vmap(lambda kr: jax.random.fold_in(jax.random.fold_in(kr, pos[0] * 0 + i), 0))(key)
            tok, lp = jax.vmap(lambda lg, kk: _choose(lg[None], kk, temperature, top_k, top_p, greedy))(logits, keys)
            tok, lp = tok[:, 0], lp[:, 0]
            tok = jnp.where(done, 0, tok)
            lp = jnp.where(done, 0.0, lp)
            out = out.at[:, i].set(tok)
            lps = lps.at[:, i].set(lp)
            done = done | jnp.any(tok[:, None] == stop_ids[None, :], axis=-1)
            h, cache = self._forward(params, layers, tok[:, None], pos[:, None], cache)
            return cache, self._logits(params, h[:, 0]), pos + 1, done, out, lps

        cache, logits, pos, done = carry
        b = logits.shape[0]
        out = jnp.zeros((b, steps), jnp.int32)
        lps = jnp.zeros((b, steps), jnp.float32)
        cache, logits, pos, done, out, lps = jax.lax.fori_loop(0, steps, body, (cache, logits, pos, done, out, lps))
        return (cache, logits, pos, done), out, lps

    def _score_fn(self, params, tokens, weights):
        logits, _ = apply_model(self.graphdef, params, tokens[:, :-1])
        lp = jax.nn.log_softmax(logits, axis=-1)
        tok_lp = jnp.take_along_axis(lp, tokens[:, 1:, None], axis=-1)[..., 0]
        return jnp.sum(tok_lp * weights[:, 1:], axis=-1)

    # ---- host API ---------------------------------------------------------------------------
    def _encode(self, prompt) -> list[int]:
        if isinstance(prompt, str):
            if self.tokenizer is None:
                raise ValueError("string prompts need a tokenizer; pass token ids instead")
            ids = self.tokenizer.encode(prompt)
            return ([self.tokenizer.bos_id] if getattr(self.tokenizer, "add_bos", False) else []) + ids
        return list(prompt)

    def _stop_ids(self, extra: Sequence[int]) -> np.ndarray:
        ids = set(extra)
        eos = getattr(self.tokenizer, "eos_id", -1) if self.tokenizer is not None else -1
        if eos is not None and eos >= 0:
            ids.add(eos)
        return np.asarray(sorted(ids) or [-1], np.int32)

    def generate(self, prompts: Sequence[str | Sequence[int]], *, max_new_tokens: int | None = None,
                 temperature: float | None = None, top_k: int | None = None, top_p: float | None = None,
                 stop: Sequence[str] | None = None, stop_ids: Sequence[int] = (),
                 seed: int | Sequence[int] = 0) -> list[Sample]:
        """Continue each prompt. Settings default to the :class:`SamplerConfig` given at construction.

        ``seed``: an int seeds the whole batch (a row's draws depend on its index in the batch); a
        sequence gives each prompt its own seed, and row ``i`` then samples exactly what
        ``generate([prompts[i]], seed=seed[i])`` would, whatever it is batched with (seeds are taken
        modulo 2**32).
        """
        c = self.cfg
        max_new = c.max_new_tokens if max_new_tokens is None else max_new_tokens
        temperature = c.temperature if temperature is None else temperature
        top_k = c.top_k if top_k is None else top_k
        top_p = c.top_p if top_p is None else top_p
        stop = list(c.stop if stop is None else stop)
        encoded = [self._encode(p) for p in prompts]
        if any(len(e) == 0 for e in encoded):
            raise ValueError("every prompt needs at least one token")
        n = len(encoded)
        b, t, steps, cache_len = self.shapes(n, max(len(e) for e in encoded), max_new)
        tokens = np.zeros((b, t), np.int32)
        lengths = np.ones((b,), np.int32)
        for i, e in enumerate(encoded):
            tokens[i, : len(e)] = e
            lengths[i] = len(e)
        stop_arr = self._stop_ids(stop_ids)
        key = self._keys(seed, n, b)
        params, layers = self.inference_weights()
        with use_mesh(self.mesh):
            tok_dev = jax.device_put(tokens, self._row_sharding)
            logits, cache = self._prefill(params, layers, tok_dev, jnp.asarray(lengths), cache_len=cache_len)
            done = jnp.asarray(np.arange(b) >= n)
            carry = (cache, logits, jnp.asarray(lengths), done)
            outs, lps = [], []
            for start in range(0, steps, self.chunk):
                carry, out, lp = self._decode(
                    params, layers, carry, jnp.asarray(stop_arr), self._fold_in(key, start),
                    jnp.float32(max(temperature, 1e-6)), jnp.float32(top_p),
                    steps=self.chunk, top_k=int(top_k), greedy=temperature == 0,
                )
                outs.append(to_host(out))
                lps.append(to_host(lp))
                if start + self.chunk >= max_new or bool(np.all(to_host(carry[3]))):
                    break
                if stop and self._all_stopped(np.concatenate(outs, 1)[:n], stop):
                    break
        out = np.concatenate(outs, 1)[:n, :max_new]
        lp = np.concatenate(lps, 1)[:n, :max_new]
        return [self._finish(out[i], lp[i], stop_arr, stop) for i in range(n)]

    def shapes(self, rows: int, longest: int, max_new: int) -> tuple[int, int, int, int]:
        """``(batch, prompt length, decode steps, cache length)`` the device programs are compiled for when
        ``rows`` prompts of at most ``longest`` tokens each get ``max_new`` new tokens (bucketed)."""
        c, limit = self.cfg, self.model_cfg.max_seq_len
        if longest + max_new > limit:
            raise ValueError(f"prompt of {longest} tokens + {max_new} new tokens exceeds model.max_seq_len={limit}")
        b = bucket(rows, c.batch_buckets, self.data_parallel)
        t = bucket(longest, c.prefill_buckets)
        steps = -(-max_new // self.chunk) * self.chunk
        # Near the context limit the bucketed cache is cut to max_seq_len: a row only writes past the
        # end (clamped to the last slot) after its max_new tokens are drawn, so what it returns is intact.
        cache_len = min(t + steps, limit)
        return b, min(t, cache_len), steps, cache_len

    @staticmethod
    def _keys(seed, n: int, b: int):
        """One PRNG key for an int ``seed``; for a sequence, one key per row (padding rows get seed 0)."""
        if isinstance(seed, int | np.integer):
            return jax.random.key(seed)
        seeds = [int(s) for s in seed]
        if len(seeds) != n:
            raise ValueError(f"seed has {len(seeds)} entries for {n} prompts; give one per prompt or one int")
        # uint32 seeds give the same key as jax.random.key(int) for 0 <= seed < 2**32.
        padded = np.asarray([s % 2**32 for s in seeds] + [0] * (b - n), np.uint32)
        return jax.vmap(jax.random.key)(jnp.asarray(padded))

    @staticmethod
    def _fold_in(key, data: int):
        if key.ndim == 0:
            return jax.random.fold_in(key, data)
        return jax.vmap(lambda k: jax.random.fold_in(k, data))(key)

    def _all_stopped(self, out: np.ndarray, stop: list[str]) -> bool:
        return all(any(s in self.tokenizer.decode(row.tolist()) for s in stop) for row in out)

    def _finish(self, ids: np.ndarray, lps: np.ndarray, stop_arr: np.ndarray, stop: list[str]) -> Sample:
        ids_l, reason = ids.tolist(), "length"
        for j, tok in enumerate(ids_l):
            if tok in stop_arr:
                ids_l, reason = ids_l[: j + 1], "eos"
                break
        text = self.tokenizer.decode([i for i in ids_l if i not in stop_arr]) if self.tokenizer else None
        if stop and text is not None:
            hits = [text.find(s) for s in stop if s in text]
            if hits:
                cut = min(hits)
                # Keep the shortest token prefix whose text reaches the stop string: a binary search over
                # prefix lengths (the decoded length grows with the prefix), log(n) decodes, not n.
                lo, hi = 1, len(ids_l)
                while lo < hi:
                    mid = (lo + hi) // 2
                    if len(self.tokenizer.decode(ids_l[:mid])) >= cut + 1:
                        hi = mid
                    else:
                        lo = mid + 1
                ids_l = ids_l[:lo]
                text, reason = text[:cut], "stop"
        return Sample(ids=ids_l, logprobs=lps[: len(ids_l)].tolist(), text=text, finish_reason=reason)

    def score(self, prompt: str | Sequence[int], candidates: Sequence[str | Sequence[int]]) -> np.ndarray:
        """Log-likelihood of each candidate continuation given ``prompt`` (sum over its tokens)."""
        p = self._encode(prompt)
        cands = [list(self.tokenizer.encode(c)) if isinstance(c, str) else list(c) for c in candidates]
        n = len(cands)
        b = bucket(n, self.cfg.batch_buckets, self.data_parallel)
        t = bucket(len(p) + max(len(c) for c in cands), self.cfg.prefill_buckets)
        tokens = np.zeros((b, t + 1), np.int32)
        weights = np.zeros((b, t + 1), np.float32)
        for i, c in enumerate(cands):
            seq = p + c
            tokens[i, : len(seq)] = seq
            weights[i, len(p): len(seq)] = 1.0
        with use_mesh(self.mesh):
            ll = self._score(self.params_here(), jax.device_put(tokens, self._row_sharding),
                             jax.device_put(weights, self._row_sharding))
        return to_host(ll)[:n]
