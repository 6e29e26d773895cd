"""Reading a compiled program's HLO text: which collectives it runs, how often, and how many bytes they move.

Counts are *dynamic* where they can be: a collective inside a ``while`` loop (scanned layers, gradient
accumulation) counts once per iteration when the loop's trip count can be read from its condition (the
``compare(i, constant(N)), direction=LT`` that ``lax.scan`` / ``fori_loop`` lower to); a loop whose count
cannot be read counts once and is reported in ``unknown_trip_loops``.

Bytes per collective are the bytes of its result on one chip, and ``transfer_bytes`` estimates what one chip
sends over its links with ring algorithms over a group of ``n`` chips: all-gather ``R (n-1)/n`` of its
gathered result ``R``; reduce-scatter ``R (n-1)`` of its scattered result; all-reduce ``2 R (n-1)/n``;
all-to-all ``R (n-1)/n``; collective-permute ``R``.
"""

from __future__ import annotations

import re
from collections import defaultdict

KINDS = ("all-gather", "all-reduce", "reduce-scatter", "all-to-all", "collective-permute")
_DTYPE_BYTES = {"pred": 1, "s8": 1, "u8": 1, "s16": 2, "u16": 2, "f16": 2, "bf16": 2, "s32": 4, "u32": 4, "f32": 4,
                "s64": 8, "u64": 8, "f64": 8, "c64": 8, "c128": 16, "f8e4m3fn": 1, "f8e5m2": 1, "s4": 0.5, "u4": 0.5}
_COMP = re.compile(r"^(?:ENTRY\s+)?%?([\w.\-]+)\s*\(.*\{\s*$")
_INSTR = re.compile(r"^\s+(?:ROOT\s+)?%?[\w.\-]+\s*=\s*(.+?)\s+([a-z][a-z0-9\-]*)\(")
_ARRAY = re.compile(r"\b([a-z]+\d*(?:e\dm\d(?:fn)?)?)\[([\d,]*)\]")
_CALLS = re.compile(r"\b(?:calls|body|condition|to_apply|branch_computations|called_computations)"
                    r"=\{?([^,}\s]+(?:,\s*%[\w.\-]+)*)")
_WHILE = re.compile(r"condition=%?([\w.\-]+),\s*body=%?([\w.\-]+)")
_GROUPS_LIST = re.compile(r"replica_groups=\{\{([\d,]*)\}")
_GROUPS_IOTA = re.compile(r"replica_groups=\[([\d,]+)\]<=")
_GROUPS_MESH = re.compile(r"replica_groups=mesh\[([^\]]*)\]\s*\{([^}]*)\}")
_TRIP = re.compile(r"constant\((\d+)\)")


def _array_bytes(type_text: str) -> list[float]:
    out = []
    for dtype, dims in _ARRAY.findall(type_text):
        if dtype not in _DTYPE_BYTES:
            continue
        n = 1
        for d in dims.split(","):
            if d:
                n *= int(d)
        out.append(n * _DTYPE_BYTES[dtype])
    return out


def _group_size(line: str, num_devices: int) -> int:
    m = _GROUPS_LIST.search(line)
    if m:
        return max(1, len([x for x in m.group(1).split(",") if x]))
    m = _GROUPS_IOTA.search(line)
    if m:
        return int(m.group(1).split(",")[-1])
    m = _GROUPS_MESH.search(line)
    if m:
        sizes = dict(re.findall(r"'(\w+)'=(\d+)", m.group(1)))
        n = 1
        for axis in re.findall(r"'(\w+)'", m.group(2)):
            n *= int(sizes.get(axis, 1))
        return n
    return num_devices


def _transfer(kind: str, result: float, n: int) -> float:
    if n <= 1:
        return 0.0
    return {"all-gather": result * (n - 1) / n, "reduce-scatter": result * (n - 1),
            "all-reduce": 2 * result * (n - 1) / n, "all-to-all": result * (n - 1) / n,
            "collective-permute": result}[kind]


def collectives(hlo_text: str, num_devices: int) -> dict:
    """Collectives of a compiled (SPMD-partitioned) HLO module: per kind ``count``, ``bytes`` (results, summed
    over executions) and ``transfer_bytes``; plus ``static_count`` (ops in the text) and loops whose trip
    count was unreadable."""
    comps: dict[str, list[str]] = defaultdict(list)
    current, entry = None, None
    for line in hlo_text.splitlines():
        if not line.startswith((" ", "\t")):
            m = _COMP.match(line)
            if m:
                current = m.group(1)
                if line.startswith("ENTRY"):
                    entry = current
            continue
        if current is not None:
            comps[current].append(line)

    # How many times each computation runs per step: calls multiply by 1, while bodies by the trip count.
    def trip(cond: str) -> int | None:
        consts = {int(c) for ln in comps.get(cond, []) for c in _TRIP.findall(ln) if "s32[]" in ln or "s64[]" in ln}
        lt = any("direction=LT" in ln for ln in comps.get(cond, []))
        return consts.pop() if lt and len(consts) == 1 else None

    runs: dict[str, float] = defaultdict(float)
    unknown: set[str] = set()

    def visit(comp: str, times: float, depth: int = 0) -> None:
        if depth > 64:
            return
        runs[comp] += times
        for ln in comps.get(comp, []):
            w = _WHILE.search(ln)
            if w:
                n = trip(w.group(1))
                if n is None:
                    unknown.add(w.group(2))
                visit(w.group(2), times * (n or 1), depth + 1)
                continue
            for group in _CALLS.findall(ln):
                for callee in re.findall(r"%?([\w.\-]+)", group):
                    if callee in comps and callee != comp:
                        visit(callee, times, depth + 1)

    if entry is not None:
        visit(entry, 1.0)
    out = {k: {"count": 0, "static_count": 0, "bytes": 0.0, "transfer_bytes": 0.0} for k in KINDS}
    for comp, lines in comps.items():
        times = runs.get(comp, 0.0)
        for ln in lines:
            m = _INSTR.match(ln)
            if not m:
                continue
            op = m.group(2)
            kind = op[:-6] if op.endswith("-start") else op
            if kind not in KINDS or op.endswith("-done"):
                continue
            sizes = _array_bytes(m.group(1))
            if not sizes:
                continue
            result = max(sizes) if op.endswith("-start") else sum(sizes)  # a -start returns (operand, result)
            n = _group_size(ln, num_devices)
            row = out[kind]
            row["static_count"] += 1
            row["count"] += int(times)
            row["bytes"] += result * times
            row["transfer_bytes"] += _transfer(kind, result, n) * times
    present = {k: v for k, v in out.items() if v["static_count"]}
    return {"by_kind": present, "transfer_bytes": sum(v["transfer_bytes"] for v in present.values()),
            "unknown_trip_loops": len(unknown)}
