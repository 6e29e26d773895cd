"""Quoting helpers shared by the deterministic reflection writers: observations cut to their leading
sentences, actions in backticks. Pure text functions; they know nothing about any environment."""

from __future__ import annotations

import re

QUOTE_CHARS = 140
GOAL_CHARS = 240


def clip_words(text: str, limit: int) -> str:
    """``text`` cut at a word boundary to at most ``limit`` characters (``...`` marks a cut)."""
    text = " ".join(text.split())
    if len(text) <= limit:
        return text
    cut = text[:limit].rsplit(" ", 1)[0] if " " in text[:limit] else text[:limit]
    return cut.rstrip(",;:") + "..."


def lead(text: str, limit: int = QUOTE_CHARS) -> str:
    """The first line's leading sentences: the first one, plus the next while they fit in ``limit``
    characters (sentences end at ``.``, ``!`` or ``?`` followed by whitespace)."""
    line = next((x.strip() for x in text.strip().splitlines() if x.strip()), "")
    parts = re.split(r"(?<=[.!?])\s+", line)
    shown = parts[0]
    for p in parts[1:]:
        if len(shown) + 1 + len(p) > limit:
            break
        shown += " " + p
    return shown


def quote(text: str, limit: int = QUOTE_CHARS, whole: bool = False) -> str:
    """``text``'s leading sentences (all of it if ``whole``), clipped, in double quotes (inner double
    quotes become single)."""
    shown = clip_words(text if whole else lead(text, limit), limit)
    return '"' + shown.replace('"', "'").rstrip(".") + '"'


def code(action: str) -> str:
    """``action`` in backticks."""
    return f"`{action}`"


def join_actions(actions: list[str]) -> str:
    """```a```, ```a`` and ``b```, ```a``, ``b`` and ``c``` (each in backticks)."""
    shown = [code(a) for a in actions]
    return shown[0] if len(shown) == 1 else ", ".join(shown[:-1]) + " and " + shown[-1]
