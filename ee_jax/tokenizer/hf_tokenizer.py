"""Hugging Face ``tokenizer.json`` backend, through the ``tokenizers`` library only.

``transformers`` is not needed: the special-token names it would read come from the sibling
``tokenizer_config.json`` / ``special_tokens_map.json``, which we parse ourselves.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
from tokenizers import Tokenizer as _RustTokenizer

from ee_jax.tokenizer.base import Tokenizer, ids_to_list

_SIBLING_CONFIGS = ("tokenizer_config.json", "special_tokens_map.json")  # earlier file wins
_ROLES = ("bos", "eos", "pad")


def _token_content(value) -> str | None:
    """A special-token entry is a string or a serialised AddedToken ``{"content": ...}``."""
    if isinstance(value, dict):
        value = value.get("content")
    return value if isinstance(value, str) and value else None


class HFTokenizer(Tokenizer):
    """A ``tokenizer.json`` (any model: BPE, Unigram, WordPiece) behind the :class:`Tokenizer` interface."""

    def __init__(
        self,
        tokenizer_json_path: str | os.PathLike,
        *,
        bos_token: str | int | None = None,
        eos_token: str | int | None = None,
        pad_token: str | int | None = None,
    ):
        """Load ``tokenizer_json_path`` (a ``tokenizer.json`` file, or a folder holding one).

        BOS/EOS/PAD are taken, first found wins, from the constructor arguments (a token string or
        an id), the sibling ``tokenizer_config.json``, then ``special_tokens_map.json``; absent ones
        are -1. Raises ``FileNotFoundError`` naming the path if there is no file, ``ValueError`` if
        it does not parse or a named special token is not in the vocabulary.
        """
        path = Path(tokenizer_json_path)
        if path.is_dir():
            path = path / "tokenizer.json"
        if not path.is_file():
            raise FileNotFoundError(f"tokenizer.json not found: {str(path)!r}")
        try:
            self._tok = _RustTokenizer.from_file(str(path))
        except Exception as e:  # the Rust side raises a bare Exception on parse errors
            raise ValueError(f"{str(path)!r} is not a valid tokenizer.json: {e}") from e
        self.path = str(path)

        overrides = {"bos": bos_token, "eos": eos_token, "pad": pad_token}
        self._special: dict[str, int] = {}
        for role in _ROLES:
            value, source = overrides[role], "constructor argument"
            if value is None:
                value, source = self._from_sibling_configs(path.parent, f"{role}_token")
            self._special[role] = self._resolve(role, value, source)
        self._control_ids = {i for i in self._special.values() if i >= 0}
        self._add_bos = self._special["bos"] >= 0 and self._sibling_value(path.parent, "add_bos_token") is not False

    @staticmethod
    def _sibling_configs(folder: Path):
        for name in _SIBLING_CONFIGS:
            cfg_path = folder / name
            if not cfg_path.is_file():
                continue
            try:
                yield json.loads(cfg_path.read_text(encoding="utf-8")), str(cfg_path)
            except (json.JSONDecodeError, UnicodeDecodeError) as e:
                raise ValueError(f"cannot parse {str(cfg_path)!r}: {e}") from e

    @classmethod
    def _from_sibling_configs(cls, folder: Path, key: str) -> tuple[str | None, str]:
        for cfg, where in cls._sibling_configs(folder):
            token = _token_content(cfg.get(key))
            if token is not None:
                return token, where
        return None, ""

    @classmethod
    def _sibling_value(cls, folder: Path, key: str):
        return next((cfg[key] for cfg, _ in cls._sibling_configs(folder) if key in cfg), None)

    def _resolve(self, role: str, value: str | int | None, source: str) -> int:
        if value is None:
            return -1
        if isinstance(value, int):
            if not 0 <= value < self.vocab_size:
                raise ValueError(f"{role}_token id {value} ({source}) is out of range [0, {self.vocab_size})")
            return value
        i = self._tok.token_to_id(value)
        if i is None:
            raise ValueError(f"{role}_token {value!r} ({source}) is not in the vocabulary of {self.path!r}")
        return i

    def encode(self, text: str) -> list[int]:
        """Token ids of ``text``; ``add_special_tokens=False`` so no post-processor BOS/EOS."""
        return self._tok.encode(text, add_special_tokens=False).ids

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
        """Token ids of each text, in one native (multi-threaded) call."""
        return [e.ids for e in self._tok.encode_batch(list(texts), add_special_tokens=False)]

    def decode(self, ids: Iterable[int] | np.ndarray) -> str:
        """Text of ``ids``; BOS/EOS/PAD are dropped, other special tokens (chat markers) kept."""
        # skip_special_tokens=True would also drop chat markers such as <|im_end|>, so filter only
        # the control ids ourselves, matching what SentencePiece does.
        kept = [i for i in ids_to_list(ids) if i not in self._control_ids]
        return self._tok.decode(kept, skip_special_tokens=False)

    @property
    def vocab_size(self) -> int:
        """Number of ids, added tokens included."""
        return self._tok.get_vocab_size(with_added_tokens=True)

    @property
    def bos_id(self) -> int:
        """BOS id, or -1 if none was configured."""
        return self._special["bos"]

    @property
    def add_bos(self) -> bool:
        """False when ``tokenizer_config.json`` says ``add_bos_token: false`` (e.g. SmolLM2's ChatML)."""
        return self._add_bos

    @property
    def eos_id(self) -> int:
        """EOS id, or -1 if none was configured."""
        return self._special["eos"]

    @property
    def pad_id(self) -> int:
        """PAD id, or -1 if none was configured."""
        return self._special["pad"]

    def token_to_id(self, piece: str) -> int | None:
        """Id of ``piece`` (in the model's own spelling, e.g. ``Ġthe`` for ByteLevel), or ``None``."""
        return self._tok.token_to_id(piece)

    def id_to_token(self, i: int) -> str:
        """Vocabulary entry of id ``i``."""
        tok = self._tok.id_to_token(int(i)) if int(i) >= 0 else None
        if tok is None:
            raise IndexError(f"token id {i} out of range [0, {self.vocab_size})")
        return tok
