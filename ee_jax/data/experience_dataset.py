"""Grain pipelines over the experience store: record shards -> rendered examples -> packed batches.

Per record kind of the objective (:func:`~ee_jax.data.examples.sources_for`)::

    ArrayRecord shards of the split  ->  the split's (kept) records, by index
      -> seeded global shuffle -> [this host's records pid::nproc, data.host_sharding=records] -> repeat
      -> parse + validate + render (tokens, loss mask; at most seq_len + 1 tokens)

then the kinds are mixed by weight (a deterministic interleave in exact proportion; each kind's order
is its own seeded shuffle), examples whose target does not fit are dropped and counted, and the rest
are FirstFit-packed into rows of ``seq_len + 1`` tokens with segment ids and positions (or padded one
per row when ``data.packing`` is off) and batched.

Several hosts (``data.host_sharding``): with ``rows`` (default) every host runs the same pipeline to the
global batch and keeps its rows (``[pid * local : (pid + 1) * local]``, local = global / process
count), so the batches, and the training they drive, do not depend on the number of hosts: two
processes compute what one process on the same devices would (tests/test_distributed.py). The price:
every host renders and packs every example. With ``records`` each host renders only its records
(``pid::nproc``) and packs its own local batches: 1/nproc of the host work, for many hosts or long
sequences, but the batches depend on the host count. Either way the store must be on storage every host reads.

The iterator state (grain's, plus the pipeline's counters) is a small JSON dict: ``fit`` saves it in
each Orbax checkpoint, and a restored run continues at the exact element an uninterrupted run would.
"""

from __future__ import annotations

import bisect
import dataclasses
import json
from typing import Any

import grain
import numpy as np

from ee_jax.config import Config
from ee_jax.data.batch import make_batch
from ee_jax.data.examples import check_objective, render_record, sources_for
from ee_jax.records.schema import RecordError, validate
from ee_jax.records.store import finished_shards, read_shard, shard_path
from ee_jax.rundir import RunDir

BATCH_FIELDS = ("tokens", "weights", "segment_ids", "positions", "source")
STATE_VERSION = 1


# ------------------------------------------------------------------------------------------ selection


def _sidecar_count(meta: dict, kind: str, split: str, include_dropped: bool) -> int | None:
    """Records of ``split`` a shard contributes according to its sidecar; None when it cannot say."""
    if kind == "reflection" and not include_dropped:
        kept = meta.get("counters", {}).get("kept_by_split")
        return None if kept is None else int(kept.get(split, 0))
    return int(meta.get("by_split", {}).get(split, 0))


def _scan(path: str, kind: str, split: str, include_dropped: bool) -> list[int]:
    """Indices of the records of ``split`` (kept reflections only, unless ``include_dropped``)."""
    return [i for i, r in enumerate(read_shard(path, kind)) if r["split"] == split
            and (kind != "reflection" or include_dropped or r["verdict"] == "kept")]


@dataclasses.dataclass(frozen=True)
class KindSelection:
    """The records of one kind and split: shard files and the selected records' global indices."""

    kind: str
    split: str
    paths: tuple[str, ...]  # shards holding at least one selected record, in shard order
    offsets: tuple[int, ...]  # cumulative record counts of ``paths`` (len(paths) + 1 entries)
    indices: np.ndarray  # int64 indices into the concatenation of ``paths``

    def __len__(self) -> int:
        return len(self.indices)

    def where(self, global_index: int) -> str:
        """``"SHARD record I"`` of a global index, for error messages."""
        f = bisect.bisect_right(self.offsets, global_index) - 1
        return f"{self.paths[f]} record {global_index - self.offsets[f]}"


def select_records(data_dir: str, kind: str, split: str, include_dropped: bool = False) -> KindSelection:
    """Which records of ``kind`` belong to ``split`` (and, for reflections, were kept).

    Split-pure shards whose sidecar accounts for every record are taken whole; other shards are read
    once to pick their records, and the count must agree with the sidecar.
    """
    paths, offsets, indices = [], [0], []
    for i, meta in sorted(finished_shards(data_dir, kind).items()):
        path = shard_path(data_dir, kind, i)
        n_split = int(meta.get("by_split", {}).get(split, 0))
        if n_split == 0:
            continue
        expected = _sidecar_count(meta, kind, split, include_dropped)
        total = int(meta["records"])
        if expected == total:
            local = range(total)
        else:
            local = _scan(path, kind, split, include_dropped)
            if expected is not None and len(local) != expected:
                raise RecordError(f"{path}: its sidecar counts {expected} {kind} records for split {split!r} "
                                  f"but the shard holds {len(local)}; the shard or its .json is stale")
        if not local:
            continue
        indices.append(np.asarray(local, np.int64) + offsets[-1])
        paths.append(path)
        offsets.append(offsets[-1] + total)
    idx = np.concatenate(indices) if indices else np.zeros(0, np.int64)
    return KindSelection(kind, split, tuple(paths), tuple(offsets), idx)


def read_selected(sel: KindSelection, positions) -> list[dict]:
    """The validated records at ``positions`` (0-based, in shard order) of a selection."""
    src = _SelectedRecords(sel)
    return [_parse(sel, *src[i]) for i in positions]


def _data_dir(cfg: Config, data_dir: str | None) -> str:
    return data_dir if data_dir is not None else RunDir(cfg.run_dir).data


def dataset_sizes(cfg: Config, objective: str, split: str = "train", data_dir: str | None = None) -> dict[str, int]:
    """Examples per record kind of ``objective`` in ``split``, from the shard sidecars (cheap).

    expert_step / transition: the sidecars' ``by_split``; reflection: ``counters.kept_by_split``
    (every reflection with ``data.include_dropped_reflections``). Zero-weight kinds are included.
    """
    data_dir = _data_dir(cfg, data_dir)
    include = cfg.data.include_dropped_reflections
    out = {}
    for kind in sources_for(objective, cfg):
        n = 0
        for i, meta in finished_shards(data_dir, kind).items():
            c = _sidecar_count(meta, kind, split, include)
            n += c if c is not None else len(_scan(shard_path(data_dir, kind, i), kind, split, include))
        out[kind] = n
    return out


# ------------------------------------------------------------------------------------------ grain stages


class _SelectedRecords:
    """Random-access source of ``(global_index, raw bytes)`` over a :class:`KindSelection`."""

    def __init__(self, sel: KindSelection):
        self._sel = sel
        self._src = grain.sources.ArrayRecordDataSource(list(sel.paths))
        if len(self._src) != sel.offsets[-1]:
            raise RecordError(f"{sel.kind} shards {list(sel.paths)} hold {len(self._src)} records but their "
                              f"sidecars count {sel.offsets[-1]}; a shard or its .json is stale")

    def __len__(self) -> int:
        return len(self._sel)

    def __getitem__(self, i: int) -> tuple[int, bytes]:
        g = int(self._sel.indices[i])
        return g, self._src[g]


def _parse(sel: KindSelection, g: int, raw: bytes) -> dict:
    try:
        rec = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise RecordError(f"{sel.where(g)}: not a JSON object ({e})") from None
    return validate(rec, sel.where(g), sel.kind)


class _Render:
    """Raw record -> validated record -> ``{tokens, weights, source}``, or ``{"dropped": source}``."""

    def __init__(self, sel: KindSelection, source: int, objective: str, tokenizer, template, prompt_cfg,
                 max_len: int):
        self.sel, self.source, self.objective = sel, source, objective
        self.tokenizer, self.template, self.prompt_cfg, self.max_len = tokenizer, template, prompt_cfg, max_len

    def __call__(self, item: tuple[int, bytes]) -> dict[str, Any]:
        rec = _parse(self.sel, *item)
        ex = render_record(rec, self.objective, self.tokenizer, self.template, self.prompt_cfg, self.max_len)
        if ex is None:
            return {"dropped": self.source}
        return {"tokens": ex.ids, "weights": ex.loss_mask, "source": np.full(len(ex.ids), self.source, np.int32)}


class _DropCounterIterator(grain.DatasetIterator):
    """Skips the drop markers of :class:`_Render` and counts them per source (state: the counts)."""

    def __init__(self, parent, num_sources: int):
        super().__init__(parent)
        self.dropped = [0] * num_sources

    def __next__(self):
        while True:
            element = next(self._parent)
            if "dropped" not in element:
                return element
            self.dropped[element["dropped"] - 1] += 1

    def get_state(self) -> dict:
        return {"parent": self._parent.get_state(), "dropped": list(self.dropped)}

    def set_state(self, state: dict) -> None:
        self._parent.set_state(state["parent"])
        self.dropped = [int(x) for x in state["dropped"]]


class _DropCounter(grain.IterDataset):
    """See :class:`_DropCounterIterator`; ``iterator`` is the last one created (for the stats)."""

    def __init__(self, parent, num_sources: int):
        super().__init__(parent)
        self._num_sources = num_sources
        self.iterator: _DropCounterIterator | None = None

    def __iter__(self) -> _DropCounterIterator:
        self.iterator = _DropCounterIterator(self._parent.__iter__(), self._num_sources)
        return self.iterator


def _rename_packed(row: dict) -> dict:
    return {"tokens": row["tokens"], "weights": row["weights"], "source": row["source"],
            "segment_ids": row["tokens_segment_ids"], "positions": row["tokens_positions"]}


class _PadOne:
    """One example per row: pad to ``length``; segment 1 on the example, 0 on the padding."""

    def __init__(self, length: int):
        self.length = length

    def __call__(self, ex: dict) -> dict:
        n, pad = len(ex["tokens"]), self.length - len(ex["tokens"])
        seg = np.zeros(self.length, np.int32)
        seg[:n] = 1
        return {"tokens": np.pad(ex["tokens"], (0, pad)), "weights": np.pad(ex["weights"], (0, pad)),
                "source": np.pad(ex["source"], (0, pad)), "segment_ids": seg,
                "positions": np.arange(self.length, dtype=np.int32)}


class _HostRows:
    """This host's rows of a global batch (a short last batch is first padded with empty rows)."""

    def __init__(self, pid: int, local: int, total: int):
        self.pid, self.local, self.total = pid, local, total

    def __call__(self, batch: dict) -> dict:
        out = {}
        for k, v in batch.items():
            v = np.asarray(v)
            if v.shape[0] < self.total:
                v = np.concatenate([v, np.zeros((self.total - v.shape[0], *v.shape[1:]), v.dtype)])
            out[k] = v[self.pid * self.local:(self.pid + 1) * self.local]
        return out


def _kind_seed(seed: int, k: int) -> int:
    return int(np.random.SeedSequence([seed, k]).generate_state(1)[0])


# ------------------------------------------------------------------------------------------ iterator


_HOST_KEYS = ("process", "local_batch", "host_sharding")


def _host_count_independent(fingerprint: dict) -> bool:
    """Whether a pipeline's global batches do not depend on the host count: one host, or ``rows``
    (every host runs the same pipeline to the global batch and keeps its rows)."""
    return fingerprint["process"][1] == 1 or fingerprint.get("host_sharding") == "rows"


class ExperienceIterator:
    """The pipeline's batch iterator: dicts of ``[B_local, seq_len + 1]`` arrays (:data:`BATCH_FIELDS`).

    ``weights`` is the loss mask (aligned with ``tokens``; :func:`to_train_batch` shifts it onto the
    targets), ``source`` is ``1 + i`` on the tokens of an example of kind ``kinds[i]`` (0 on padding).

    ``get_state`` / ``set_state`` (JSON) cover grain's position and the counters behind :meth:`stats`;
    a state saved by a differently configured pipeline is refused. A state saved on another number of
    hosts is accepted when neither pipeline depends on the host count (one host, or
    ``data.host_sharding=rows``) and the global batch is the same: the same batches follow.
    """

    def __init__(self, it, drop_counter: _DropCounter, kinds: list[str], sizes: dict[str, int],
                 local_sizes: dict[str, float], row_len: int, local_batch: int, fingerprint: dict):
        self._it, self._drops = it, drop_counter
        self.kinds, self.sizes, self.local_sizes = kinds, sizes, local_sizes
        self.row_len, self.local_batch, self.fingerprint = row_len, local_batch, fingerprint
        self._reset_counters()

    def _reset_counters(self) -> None:
        self._c = {"batches": 0, "rows": 0, "tokens": 0, "target_tokens": 0.0, "examples": [0] * len(self.kinds)}

    def __iter__(self) -> ExperienceIterator:
        return self

    def __next__(self) -> dict[str, np.ndarray]:
        item = {k: np.asarray(v) for k, v in next(self._it).items()}
        short = self.local_batch - item["tokens"].shape[0]
        if short > 0:  # the last batch of a finite pass: empty rows carry no weight and no segment
            item = {k: np.concatenate([v, np.zeros((short, *v.shape[1:]), v.dtype)]) for k, v in item.items()}
        self._count(item)
        return item

    def _count(self, item: dict[str, np.ndarray]) -> None:
        seg, pos, src = item["segment_ids"], item["positions"], item["source"]
        starts = (pos == 0) & (seg > 0)  # one per example: every segment starts at position 0
        per_kind = np.bincount(src[starts], minlength=len(self.kinds) + 1)[1:]
        c = self._c
        c["batches"] += 1
        c["rows"] += int(np.count_nonzero(seg.max(axis=1) > 0))
        c["tokens"] += int(np.count_nonzero(seg))
        c["target_tokens"] += float(item["weights"].sum())
        c["examples"] = [a + int(b) for a, b in zip(c["examples"], per_kind)]

    def get_state(self) -> dict:
        """JSON-able position: grain's state, the counters, and the pipeline's fingerprint."""
        return {"version": STATE_VERSION, "fingerprint": self.fingerprint, "grain": self._it.get_state(),
                "counters": json.loads(json.dumps(self._c))}

    def set_state(self, state: dict) -> None:
        """Continue from a :meth:`get_state` value saved by an identically configured pipeline."""
        if not isinstance(state, dict) or state.get("version") != STATE_VERSION:
            raise ValueError(f"experience iterator state: expected version {STATE_VERSION}, got "
                             f"{state.get('version') if isinstance(state, dict) else type(state).__name__!r}")
        saved, now = state["fingerprint"], self.fingerprint
        moved = _host_count_independent(saved) and _host_count_independent(now) and \
            saved["local_batch"] * saved["process"][1] == now["local_batch"] * now["process"][1]
        ignore = _HOST_KEYS if moved else ()  # another host count, the same global batches
        diff = sorted(k for k in set(saved) | set(now) if k not in ignore and saved.get(k) != now.get(k))
        if diff:
            shown = ", ".join(f"{k}: saved {saved.get(k)!r}, now {now.get(k)!r}" for k in diff)
            hint = (" (a run resumes on another number of hosts only with data.host_sharding=rows)"
                    if "process" in diff else "")
            raise ValueError(f"experience iterator state was saved by a different pipeline ({shown}){hint}; "
                             f"resume with the same data, objective and batch settings, or start a new run")
        self._it.set_state(state["grain"])
        c = json.loads(json.dumps(state["counters"]))
        if saved["process"][1] != now["process"][1]:  # per-host counts: rescaled to this host's share of rows
            f = saved["process"][1] / now["process"][1]
            c.update(rows=round(c["rows"] * f), tokens=round(c["tokens"] * f), target_tokens=c["target_tokens"] * f,
                     examples=[round(x * f) for x in c["examples"]])
        self._c = c

    def stats(self) -> dict:
        """Examples consumed, epochs, tokens, packing fill and dropped examples, per kind, so far."""
        c = self._c
        dropped = self._drops.iterator.dropped if self._drops.iterator is not None else [0] * len(self.kinds)
        capacity = c["rows"] * self.row_len
        return {
            "batches": c["batches"], "rows": c["rows"],
            "examples": dict(zip(self.kinds, c["examples"])),
            # epochs of this host's share of each kind (its slice of the split)
            "epochs": {k: n / self.local_sizes[k] for k, n in zip(self.kinds, c["examples"])},
            "dropped_too_long": dict(zip(self.kinds, dropped)),
            "tokens": c["tokens"], "target_tokens": int(round(c["target_tokens"])),
            "packing_fill": c["tokens"] / capacity if capacity else 0.0,
            "sizes": dict(self.sizes), "local_sizes": dict(self.local_sizes),
        }

    def close(self) -> None:
        close = getattr(self._it, "close", None)
        if callable(close):
            close()


def to_train_batch(item: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """An :class:`ExperienceIterator` item as the train step's host arrays (``make_batch``)."""
    return make_batch(item["tokens"], item["weights"], item["segment_ids"], item["positions"])


# ------------------------------------------------------------------------------------------ pipeline


def experience_batches(cfg: Config, objective: str, tokenizer, *, data_dir: str | None = None, split: str = "train",
                       shuffle: bool | None = None, repeat: bool = True, batch_size: int | None = None,
                       seed: int | None = None, process_index: int | None = None,
                       process_count: int | None = None) -> ExperienceIterator:
    """Batches of ``objective`` (``il`` | ``iwm`` | ``sr``) from the store in ``data_dir``.

    Args:
        cfg: ``data`` (packing, mixture, reflections, shuffle, read threads), ``prompt``, ``train.seq_len``,
            ``train.batch_size``, ``tokenizer.template``, ``seed``.
        tokenizer: the run's tokenizer (:func:`~ee_jax.data.tokenizer_corpus.ensure_tokenizer`).
        data_dir: default ``cfg.run_dir/data``.
        split: records of this split only.
        shuffle: default ``cfg.data.shuffle``.
        repeat: endless epochs (training). ``repeat=False`` is one pass: across hosts every example is
            yielded exactly once (kinds concatenated, the last batch padded with empty rows).
        batch_size: global rows per batch (default ``cfg.train.batch_size``); this host yields
            ``batch_size / process_count`` rows.
        seed: default ``cfg.seed``.
        process_index, process_count: default jax's (tests simulate other hosts with them).

    Raises:
        ValueError: unknown objective, no weight on any kind, a kind with no records in ``split``
            (naming data_dir, kind and split), or a batch size that does not divide over processes.
    """
    import jax

    check_objective(objective)
    data_dir = _data_dir(cfg, data_dir)
    shuffle = cfg.data.shuffle if shuffle is None else shuffle
    seed = cfg.seed if seed is None else seed
    batch_size = cfg.train.batch_size if batch_size is None else batch_size
    pid = jax.process_index() if process_index is None else process_index
    nproc = jax.process_count() if process_count is None else process_count
    if batch_size % nproc:
        raise ValueError(f"batch_size={batch_size} must divide evenly over {nproc} processes")
    local_batch = batch_size // nproc
    row_len = cfg.train.seq_len + 1
    weights = {k: w for k, w in sources_for(objective, cfg).items() if w > 0}
    if not weights:
        raise ValueError(f"objective {objective!r}: every kind has weight 0 (data.sr_mix={cfg.data.sr_mix})")
    kinds = list(weights)
    include = cfg.data.include_dropped_reflections
    expected = dataset_sizes(cfg, objective, split, data_dir)

    per_kind, sizes, local_sizes = [], {}, {}
    for k, kind in enumerate(kinds):
        sel = select_records(data_dir, kind, split, include)
        what = " kept" if kind == "reflection" and not include else ""
        if not len(sel):
            raise ValueError(f"{data_dir}: no{what} {kind!r} records in split {split!r} (objective {objective!r}); "
                             f"collect them first, or check the split name")
        if len(sel) != expected[kind]:
            raise RecordError(f"{data_dir}: {kind} sidecars count {expected[kind]} records of split {split!r}, "
                              f"the shards hold {len(sel)}; a shard or its .json is stale")
        by_rows = nproc > 1 and cfg.data.host_sharding == "rows"
        sizes[kind] = len(sel)
        local_sizes[kind] = len(sel) / nproc if by_rows else len(range(pid, len(sel), nproc))  # this host's share
        if not local_sizes[kind]:
            raise ValueError(f"{data_dir}: {kind!r} split {split!r} has {len(sel)} records, fewer than the "
                             f"{nproc} processes: process {pid} would get none (data.host_sharding=records)")
        ds = grain.MapDataset.source(_SelectedRecords(sel))
        if shuffle:
            ds = ds.shuffle(seed=_kind_seed(seed, k))
        if nproc > 1 and not by_rows:
            ds = ds[pid::nproc]
        if repeat:
            ds = ds.repeat(None)
        render = _Render(sel, k + 1, objective, tokenizer, cfg.tokenizer.template, cfg.prompt, row_len)
        per_kind.append(ds.map(render))
    drops, batched = _mix_pack_batch(cfg, per_kind, [weights[k] for k in kinds], repeat, seed, row_len, pid,
                                     nproc, batch_size, local_batch)
    fingerprint = {"objective": objective, "split": split, "kinds": kinds, "weights": [weights[k] for k in kinds],
                   "sizes": [sizes[k] for k in kinds], "row_len": row_len, "local_batch": local_batch,
                   "packing": bool(cfg.data.packing), "packing_bins": cfg.data.packing_bins, "shuffle": bool(shuffle),
                   "repeat": bool(repeat), "seed": seed, "process": [pid, nproc],
                   **({"host_sharding": cfg.data.host_sharding} if nproc > 1 else {}),
                   "template": cfg.tokenizer.template}
    return ExperienceIterator(iter(batched), drops, kinds, sizes, local_sizes, row_len, local_batch, fingerprint)


def _mix_pack_batch(cfg: Config, per_kind: list, weights: list[float], repeat: bool, seed: int, row_len: int,
                    pid: int, nproc: int, batch_size: int, local_batch: int):
    """The kinds' datasets mixed by weight (concatenated for one pass), packed or padded into rows, then
    batched into this host's rows: ``(drop counter, batches)``."""
    if len(per_kind) == 1:
        mixed = per_kind[0]
    elif repeat:
        mixed = grain.MapDataset.mix(per_kind, weights)
    else:
        mixed = grain.MapDataset.concatenate(per_kind)
    drops = _DropCounter(mixed.to_iter_dataset(grain.ReadOptions(num_threads=cfg.data.read_threads,
                                                                 prefetch_buffer_size=0)), len(per_kind))
    if cfg.data.packing:
        lengths = {"tokens": row_len, "weights": row_len, "source": row_len}
        packed = grain.experimental.FirstFitPackIterDataset(
            drops, length_struct=lengths, num_packing_bins=cfg.data.packing_bins, seed=seed,
            meta_features=("weights", "source"))
        rows = packed.map(_rename_packed)
    else:
        rows = drops.map(_PadOne(row_len))
    if nproc > 1 and cfg.data.host_sharding == "rows":
        batched = rows.batch(batch_size, drop_remainder=repeat).map(_HostRows(pid, local_batch, batch_size))
    else:
        batched = rows.batch(local_batch, drop_remainder=repeat)
    return drops, batched
