"""The tokenizer interface every backend implements.

Conventions shared by all backends, so callers never branch on the backend:

* ``encode`` never adds BOS/EOS: callers (``render``, data pipelines) add them explicitly, which
  keeps "what the model sees" in one place instead of hidden in a backend flag.
* Special ids that a vocabulary lacks are ``-1`` rather than ``None``, so they can be stored in int
  arrays and compared without ``None`` checks.
* ``decode`` drops the control ids (BOS, EOS, PAD) but keeps chat markers such as ``<|im_end|>`` as
  text, so decoding a rendered conversation shows its turn structure.
"""

from __future__ import annotations

import abc
from collections.abc import Iterable, Sequence

import numpy as np


def ids_to_list(ids: Iterable[int] | np.ndarray) -> list[int]:
    """Return ``ids`` (a list, tuple or integer array) as a list of Python ints.

    The native backends reject numpy scalars, and model outputs usually arrive as arrays.
    """
    if isinstance(ids, np.ndarray):
        if ids.ndim != 1:
            raise ValueError(f"expected a 1-D array of token ids, got shape {ids.shape}")
        return ids.astype(np.int64).tolist()
    return [int(i) for i in ids]


class Tokenizer(abc.ABC):
    """Text <-> token ids. Subclasses: ``SentencePieceTokenizer``, ``HFTokenizer``."""

    @abc.abstractmethod
    def encode(self, text: str) -> list[int]:
        """Token ids of ``text``, with no BOS/EOS added. Chat markers in ``text`` map to one id each."""

    @abc.abstractmethod
    def decode(self, ids: Iterable[int] | np.ndarray) -> str:
        """Text of ``ids``; BOS/EOS/PAD ids decode to nothing, chat markers to their text."""

    @property
    @abc.abstractmethod
    def vocab_size(self) -> int:
        """Number of ids, special tokens included (ids are ``0 .. vocab_size - 1``)."""

    @property
    @abc.abstractmethod
    def bos_id(self) -> int:
        """Beginning-of-sequence id, or -1 if the vocabulary has none."""

    @property
    def add_bos(self) -> bool:
        """Whether prompts start with the BOS id: True when there is one, unless the tokenizer's config
        says the model was trained without it (``add_bos_token: false``, e.g. ChatML models)."""
        return self.bos_id >= 0

    @property
    @abc.abstractmethod
    def eos_id(self) -> int:
        """End-of-sequence id, or -1 if the vocabulary has none."""

    @property
    @abc.abstractmethod
    def pad_id(self) -> int:
        """Padding id, or -1 if the vocabulary has none."""

    @abc.abstractmethod
    def token_to_id(self, piece: str) -> int | None:
        """Id of the vocabulary entry ``piece``, or ``None`` if it is not one (no unk fallback)."""

    @abc.abstractmethod
    def id_to_token(self, i: int) -> str:
        """Vocabulary entry of id ``i``; ``IndexError`` if ``i`` is out of range."""

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
        """``[encode(t) for t in texts]``; backends override this with a native batched call."""
        return [self.encode(t) for t in texts]

    def __len__(self) -> int:
        return self.vocab_size

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(vocab_size={self.vocab_size}, bos_id={self.bos_id}, "
            f"eos_id={self.eos_id}, pad_id={self.pad_id})"
        )
