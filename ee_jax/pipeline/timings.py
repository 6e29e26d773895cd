"""The run's time ledger: one JSON line per stage invocation, so wall clock survives resumes.

``run_summary.json`` alone only knows the last invocation (a resumed run re-checks finished stages in
seconds); the ledger keeps every invocation, interrupted ones included, and sums them per stage.
"""

from __future__ import annotations

import json
import os
import time


def append_timing(path: str, stage: str, seconds: float, *, seed: int | None = None,
                  interrupted: bool = False, skipped: bool = False) -> None:
    """Append one stage invocation's wall clock to the ledger at ``path`` (``skipped``: the stage was
    already done and only re-checked)."""
    entry = {"stage": stage, "seconds": round(seconds, 3), "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    if seed is not None:
        entry["seed"] = seed
    for flag, on in (("interrupted", interrupted), ("skipped", skipped)):
        if on:
            entry[flag] = True
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    with open(path, "ab") as f:  # one short line: a run killed mid-append loses at most that line
        if f.tell() > 0:
            with open(path, "rb") as r:
                r.seek(-1, os.SEEK_END)
                torn = r.read(1) != b"\n"
            if torn:  # start on a fresh line, or this entry would be glued to the torn one
                f.write(b"\n")
        f.write((json.dumps(entry) + "\n").encode())


def read_timings(path: str) -> list[dict]:
    """The ledger's entries; a torn last line (a run killed mid-write) is skipped."""
    if not os.path.exists(path):
        return []
    out = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            try:
                entry = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(entry, dict) and isinstance(entry.get("seconds"), (int, float)) and "stage" in entry:
                out.append(entry)
    return out


def total_timings(path: str, *, seed: int | None = None) -> dict[str, float]:
    """Seconds per stage summed over every invocation in the ledger (only ``seed``'s when given)."""
    total: dict[str, float] = {}
    for e in read_timings(path):
        if seed is not None and e.get("seed") != seed:
            continue
        total[e["stage"]] = round(total.get(e["stage"], 0.0) + e["seconds"], 3)
    return total


def worked_seconds(entries: list[dict], stage: str) -> dict[str, float]:
    """Per seed (string keys, as in reports): seconds of ``stage`` summed over the ledger, for the seeds
    where it did work; a seed whose entries are all re-checks (the stage ran before the ledger
    existed) is left out rather than reported as seconds it did not take."""
    total: dict[str, float] = {}
    worked: set[str] = set()
    for e in entries:
        if e["stage"] != stage or e.get("seed") is None:
            continue
        seed = str(e["seed"])
        total[seed] = total.get(seed, 0.0) + e["seconds"]
        if not e.get("skipped"):
            worked.add(seed)
    return {s: round(v, 3) for s, v in total.items() if s in worked}
