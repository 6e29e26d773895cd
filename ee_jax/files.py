"""Durable file writes: a reader never sees a half-written file, whatever stops the writer."""

from __future__ import annotations

import contextlib
import json
import os
from typing import Any


def fsync_dir(path: str) -> None:
    """Make a rename or a new file in ``path`` durable."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write_text(path: str, text: str | bytes) -> None:
    """Write ``text`` (or bytes) to ``path`` via a temporary file, fsync and rename (never a half-written
    file); the folder is created if needed."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = f"{path}.tmp{os.getpid()}"
    try:
        with open(tmp, "wb") as f:
            f.write(text.encode("utf-8") if isinstance(text, str) else text)
            f.flush()
            os.fsync(f.fileno())
    except BaseException:  # disk full, a file-size limit, an interrupt: no partial file stays behind
        remove_quietly(tmp)
        raise
    os.replace(tmp, path)
    fsync_dir(os.path.dirname(os.path.abspath(path)))


def remove_quietly(path: str) -> None:
    """Delete ``path`` if it exists (cleanup after a failed write; never raises)."""
    with contextlib.suppress(OSError):
        os.remove(path)


class CorruptFileError(ValueError):
    """A file ee_jax wrote earlier cannot be read back as written (garbled, truncated)."""


def read_json(path: str, remedy: str) -> Any:
    """The JSON value in ``path``; a garbled file is a :class:`CorruptFileError` naming it, what is wrong
    and ``remedy`` (how to recover)."""
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except json.JSONDecodeError as e:
        raise CorruptFileError(f"{path}: not valid JSON ({e.msg} at line {e.lineno} column {e.colno}); "
                               f"{remedy}") from None
    except UnicodeDecodeError as e:
        raise CorruptFileError(f"{path}: not UTF-8 text (byte offset {e.start}); {remedy}") from None
