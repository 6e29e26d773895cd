"""Seeds derived from names: every random choice of a run is a function of (seed, what, which)."""

from __future__ import annotations

import hashlib


def unit_seed(*parts) -> int:
    """A 31-bit seed from the parts (stable across machines and Python hash seeds)."""
    return int.from_bytes(hashlib.sha256("|".join(map(str, parts)).encode()).digest()[:4], "little") >> 1
