"""The experience store: sharded ArrayRecord files of JSON records, a manifest, and resumable stages.

Layout inside ``RUN/data/``::

    expert_step-00000.arrayrecord        records (one JSON object each, see ``schema``)
    expert_step-00000.arrayrecord.json   the shard's sidecar: record count, sha256, counters, settings hash
    manifest.json                        per kind: settings, shards, counts per split, filter counts, hashes

A stage splits its work into units (tasks, trajectories) grouped into chunks, and shard ``i`` holds
the records of chunk ``i``. A shard is written to a temporary file, fsynced and renamed, and only then is
its sidecar written (the same way): a shard counts as finished when both exist. Rerunning a stage
after an interruption skips finished shards and redoes the rest; since each unit's work is seeded by
the unit itself, the result equals an uninterrupted run record for record. On multi-host runs process
``p`` of ``P`` writes the shards ``i`` with ``i % P == p``; process 0 writes the manifest.
"""

from __future__ import annotations

import errno
import glob
import hashlib
import json
import os
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from ee_jax.files import CorruptFileError, atomic_write_text, fsync_dir, read_json, remove_quietly
from ee_jax.parallel import host_barrier
from ee_jax.records.schema import RecordError, validate
from ee_jax.rundir import StageMismatchError, settings_diff

MANIFEST = "manifest.json"


def shard_path(data_dir: str, kind: str, index: int) -> str:
    return os.path.join(data_dir, f"{kind}-{index:05d}.arrayrecord")


def settings_hash(settings: dict) -> str:
    return hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _digest_record(digest, data: bytes) -> None:
    """Add one encoded record to a shard's content hash (length-prefixed, so boundaries count)."""
    digest.update(len(data).to_bytes(8, "little") + data)


def write_shard(path: str, records: Sequence[dict], meta: dict) -> dict:
    """Write ``records`` to ``path`` atomically, then its sidecar ``path.json``; returns the sidecar."""
    from array_record.python.array_record_module import ArrayRecordWriter

    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = f"{path}.tmp{os.getpid()}"
    digest = hashlib.sha256()
    try:
        writer = ArrayRecordWriter(tmp, "group_size:1")  # group_size 1: cheap random access for grain
        try:
            for rec in records:
                data = json.dumps(rec, sort_keys=True, ensure_ascii=False).encode("utf-8")
                _digest_record(digest, data)
                writer.write(data)
        finally:
            writer.close()
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
    except RuntimeError as e:  # array_record's writer failed (disk full, a file-size limit): an OSError here
        remove_quietly(tmp)
        raise OSError(errno.EIO, str(e).strip().splitlines()[0][:200], path) from None
    except BaseException:  # an interrupt: no partial shard stays behind either
        remove_quietly(tmp)
        raise
    os.replace(tmp, path)
    fsync_dir(os.path.dirname(os.path.abspath(path)))
    sidecar = {**meta, "file": os.path.basename(path), "records": len(records), "sha256": digest.hexdigest(),
               "bytes": os.path.getsize(path)}
    atomic_write_text(path + ".json", json.dumps(sidecar, indent=1, sort_keys=True))
    return sidecar


def read_shard(path: str, kind: str | None = None) -> list[dict]:
    """All records of one shard, each validated (errors name the shard, the record and the field)."""
    from array_record.python.array_record_module import ArrayRecordReader

    if not os.path.exists(path):
        raise FileNotFoundError(f"shard {path} does not exist")
    try:
        reader = ArrayRecordReader(path)
        try:
            raw = reader.read_all()
        finally:
            reader.close()
    except RuntimeError as e:  # array_record's reader on a damaged file
        reason = str(e).strip().splitlines()[0][:200]
        raise CorruptFileError(f"{path}: not a readable ArrayRecord shard ({reason}); {_rerun(kind or '')}") from None
    if os.path.exists(path + ".json"):  # what was written: the records' count and content hash
        side = read_json(path + ".json", _rerun(kind or ""))
        digest = hashlib.sha256()
        for data in raw:
            _digest_record(digest, data)
        if len(raw) != side.get("records", len(raw)) or side.get("sha256", digest.hexdigest()) != digest.hexdigest():
            raise CorruptFileError(f"{path}: its records are not those written ({len(raw)} records, content hash "
                                   f"{digest.hexdigest()[:12]}; its sidecar recorded {side.get('records')} and "
                                   f"{str(side.get('sha256'))[:12]}); {_rerun(kind or '')}")
    out = []
    for i, data in enumerate(raw):
        where = f"{path} record {i}"
        try:
            rec = json.loads(data.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise RecordError(f"{where}: not a JSON object ({e})") from None
        out.append(validate(rec, where, kind))
    return out


STAGE_OF_KIND = {"expert_step": "expert", "transition": "explore", "reflection": "reflect"}


def _rerun(kind: str) -> str:
    return (f"rerun `ee-jax collect {STAGE_OF_KIND.get(kind, 'STAGE')}` on this run: collection is deterministic and "
            "writes exactly this shard again")


def finished_shards(data_dir: str, kind: str, *, redo_damaged: bool = False) -> dict[int, dict]:
    """Sidecars of the finished shards of ``kind``, by shard index.

    A shard whose file does not have the size its sidecar recorded (truncated, replaced), or whose sidecar
    is garbled, is a :class:`CorruptFileError` naming it and the recovery; ``redo_damaged`` (the collection
    stage itself) leaves it out instead, so the stage writes it again."""
    out = {}
    for side in sorted(glob.glob(os.path.join(data_dir, f"{kind}-[0-9]*.arrayrecord.json"))):
        path = side[: -len(".json")]
        if not os.path.exists(path):
            continue
        try:
            meta = read_json(side, _rerun(kind))
            size = os.path.getsize(path)
            if "bytes" in meta and size != meta["bytes"]:  # sidecars before 2026-12-08 did not record it
                raise CorruptFileError(f"{path}: {size} bytes, but {meta['bytes']} were written (truncated or "
                                       f"replaced); {_rerun(kind)}")
        except CorruptFileError:
            if redo_damaged:
                continue
            raise
        out[int(os.path.basename(path)[len(kind) + 1: -len(".arrayrecord")])] = meta
    return out


def shard_files(data_dir: str, kind: str) -> list[str]:
    """Paths of the finished shards of ``kind`` in index order."""
    return [shard_path(data_dir, kind, i) for i in sorted(finished_shards(data_dir, kind))]


def iter_records(data_dir: str, kind: str) -> Iterator[dict]:
    """Every record of ``kind`` in shard order (validated)."""
    for path in shard_files(data_dir, kind):
        yield from read_shard(path, kind)


def load_manifest(data_dir: str) -> dict:
    path = os.path.join(data_dir, MANIFEST)
    if not os.path.exists(path):
        return {}
    return read_json(path, "delete it and rerun the collection stage: its finished shards are kept and the "
                           "manifest is written again")


def _add_counts(total: dict, part: dict) -> dict:
    for k, v in part.items():
        if isinstance(v, dict):
            _add_counts(total.setdefault(k, {}), v)
        elif isinstance(v, list):  # itemised reports (e.g. skipped lines) are concatenated
            total[k] = total.get(k, []) + v
        elif isinstance(v, int | float):
            total[k] = total.get(k, 0) + v
    return total


def _clear(data_dir: str, kind: str) -> None:
    for path in glob.glob(os.path.join(data_dir, f"{kind}-[0-9]*.arrayrecord*")):
        os.remove(path)


def stage_input(data_dir: str, kind: str, command: str) -> tuple[dict, dict[int, dict]]:
    """The manifest section and finished shards of the ``kind`` a stage reads; a clear error naming
    ``command`` (the one that writes them) when there are none."""
    section = load_manifest(data_dir).get(kind)
    shards = finished_shards(data_dir, kind)
    if not section or not shards:
        raise FileNotFoundError(f"{data_dir}: no {kind} records; run `{command}` first")
    return section, shards


def chunk_units(units: Sequence[Any], per_shard: int, key: Callable[[Any], Any] | None = None) -> list[list]:
    """Split ``units`` into shards of at most ``per_shard``; with ``key``, a shard never mixes keys
    (expert shards are split-pure, so each later stage's shard ``i`` is built from expert shard ``i``)."""
    chunks: list[list] = []
    for u in units:
        if not chunks or len(chunks[-1]) >= per_shard or (key is not None and key(chunks[-1][0]) != key(u)):
            chunks.append([])
        chunks[-1].append(u)
    return chunks


def run_sharded_stage(data_dir: str, kind: str, chunks: Sequence[Sequence[Any]], settings: dict,
                      work: Callable[[list, int], tuple[list[dict], dict]], *, overwrite: bool = False,
                      progress: bool = True, desc: str | None = None, unit_name: str = "unit",
                      postfix: Callable[[], dict] | None = None, extra: dict | None = None,
                      barrier_timeout_s: float = 3600.0, defaults: dict | None = None) -> dict:
    """Run ``work(chunks[i], i) -> (records, counters)`` for every unfinished shard ``i`` of ``kind``.

    ``settings`` (JSON) identifies what the stage computes; shards finished under other settings are
    an error naming the difference (or are deleted with ``overwrite``). A setting missing from the recorded
    ones whose value here is its default in ``defaults`` (same nesting as ``settings``) is no difference:
    ee_jax added it after the shards were written; the stage then goes on under the recorded settings.
    Returns the manifest section
    of ``kind`` (written to ``manifest.json`` by process 0 once every process has finished), with
    ``extra`` (JSON) added to it.
    """
    import jax
    from tqdm.auto import tqdm

    os.makedirs(data_dir, exist_ok=True)
    s_hash = settings_hash(settings)
    done = finished_shards(data_dir, kind, redo_damaged=True)  # a damaged shard is written again
    stale = {i: m for i, m in done.items() if m.get("settings_hash") != s_hash}
    old = load_manifest(data_dir).get(kind, {}).get("settings", {}) if stale else {}
    if stale and old and all(m.get("settings_hash") == settings_hash(old) for m in stale.values()) \
            and not settings_diff(old, settings, defaults):
        settings, s_hash, stale = old, settings_hash(old), {}  # the same work, recorded before a new setting
    if stale:
        if not overwrite:
            diff = settings_diff(old, settings, defaults)
            raise StageMismatchError(
                f"{data_dir}: {len(stale)} finished {kind} shard(s) were written with other settings"
                + (f" (differing: {', '.join(diff)})" if diff else "")
                + "; use a new run_dir, or --overwrite to delete them and collect again")
        if jax.process_index() == 0:
            _clear(data_dir, kind)
        done = {}
    n_shards = len(chunks)
    beyond = [i for i in done if i >= n_shards]
    if beyond:
        raise StageMismatchError(f"{data_dir}: {kind} shard(s) {beyond} exist but this stage has only {n_shards} "
                                 f"shards of input; the input changed: use a new run_dir or --overwrite")
    pid, nproc = jax.process_index(), jax.process_count()
    mine = [i for i in range(n_shards) if i % nproc == pid]
    todo = [i for i in mine if i not in done]
    for i in todo:  # leftovers of an interrupted write of this process's shards
        for tmp in glob.glob(shard_path(data_dir, kind, i) + ".tmp*") + glob.glob(
                shard_path(data_dir, kind, i) + ".json.tmp*"):
            os.remove(tmp)
    total_units = sum(len(chunks[i]) for i in mine)
    skipped_units = total_units - sum(len(chunks[i]) for i in todo)
    bar = tqdm(total=total_units, initial=skipped_units, desc=desc or f"collect {kind}", unit=unit_name,
               disable=not progress or pid != 0)
    try:
        for i in todo:
            chunk = list(chunks[i])
            records, counters = work(chunk, i)
            by_split: dict[str, int] = {}
            for r in records:
                by_split[r["split"]] = by_split.get(r["split"], 0) + 1
            write_shard(shard_path(data_dir, kind, i), records,
                        {"kind": kind, "index": i, "process": pid, "settings_hash": s_hash, "units": len(chunk),
                         "by_split": by_split, "counters": counters})
            bar.update(len(chunk))
            if postfix is not None:
                bar.set_postfix(postfix())
    finally:
        bar.close()
    if nproc == 1:
        return write_manifest_section(data_dir, kind, settings, n_shards, extra)

    host_barrier(f"ee_jax_stage_{kind}_shards", barrier_timeout_s)  # every shard is written
    section = write_manifest_section(data_dir, kind, settings, n_shards, extra) if pid == 0 else {}
    host_barrier(f"ee_jax_stage_{kind}_manifest", barrier_timeout_s)  # the next stage may read it
    return section


def write_manifest_section(data_dir: str, kind: str, settings: dict, n_shards: int, extra: dict | None = None) -> dict:
    """Aggregate the sidecars of ``kind`` into ``manifest.json`` (atomically) and return the section."""
    metas = finished_shards(data_dir, kind)
    missing = [i for i in range(n_shards) if i not in metas]
    if missing:
        raise RuntimeError(f"{data_dir}: {kind} shards {missing[:10]} are missing after the stage finished "
                           f"(another process failed?)")
    shards = [metas[i] for i in range(n_shards)]
    content = hashlib.sha256("".join(m["sha256"] for m in shards).encode()).hexdigest()
    section = {
        "settings": settings, "settings_hash": settings_hash(settings), "shards": n_shards,
        "records": sum(m["records"] for m in shards), "units": sum(m["units"] for m in shards),
        "by_split": _sum(m["by_split"] for m in shards),
        "counters": _sum(m["counters"] for m in shards), "content_sha256": content,
        "files": [{"file": m["file"], "records": m["records"], "sha256": m["sha256"]} for m in shards],
        **(extra or {}),
    }
    manifest = load_manifest(data_dir)
    manifest[kind] = section
    atomic_write_text(os.path.join(data_dir, MANIFEST), json.dumps(manifest, indent=1, sort_keys=True))
    return section


def _sum(parts) -> dict:
    total: dict = {}
    for p in parts:
        _add_counts(total, p)
    return total
