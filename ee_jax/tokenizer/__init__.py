"""Tokenizers (SentencePiece, Hugging Face ``tokenizer.json``), chat templates and example rendering.

Typical use::

    tok = load_tokenizer(cfg.tokenizer)          # or train_sentencepiece(texts, prefix, 1024)
    ex = render_example(tok, cfg.tokenizer.template, "2+3=", "5")
    prompt_ids = render_prompt(tok, cfg.tokenizer.template, "2+3=")
"""

from __future__ import annotations

from pathlib import Path

from ee_jax.config.schema import TokenizerConfig
from ee_jax.tokenizer.base import Tokenizer, ids_to_list
from ee_jax.tokenizer.hf_tokenizer import HFTokenizer
from ee_jax.tokenizer.render import (
    RenderedExample,
    prompt_messages,
    render_example,
    render_prompt,
    render_target,
    stop_token_ids,
)
from ee_jax.tokenizer.sentencepiece_tokenizer import (
    DEFAULT_SPECIAL_TOKENS,
    SentencePieceTokenizer,
    train_sentencepiece,
)
from ee_jax.tokenizer.templates import EOS, TEMPLATES, ChatTemplate, get_template

KINDS = ("sentencepiece", "hf")

__all__ = [
    "DEFAULT_SPECIAL_TOKENS",
    "EOS",
    "KINDS",
    "TEMPLATES",
    "ChatTemplate",
    "HFTokenizer",
    "RenderedExample",
    "SentencePieceTokenizer",
    "Tokenizer",
    "get_template",
    "ids_to_list",
    "load_tokenizer",
    "prompt_messages",
    "render_example",
    "render_prompt",
    "render_target",
    "stop_token_ids",
    "train_sentencepiece",
]


def load_tokenizer(cfg: TokenizerConfig) -> Tokenizer:
    """Load the tokenizer ``cfg`` points at (``cfg.kind`` picks the backend, ``cfg.path`` the file).

    For ``hf``, ``path`` may be the ``tokenizer.json`` or the folder holding it. An empty path is an
    error here: training a scratch tokenizer needs a corpus, see :func:`train_sentencepiece`.

    Raises:
        ValueError: unknown ``tokenizer.kind`` or empty ``tokenizer.path`` (the message names the
            field and its value).
        FileNotFoundError: ``tokenizer.path`` does not exist.
    """
    if cfg.kind not in KINDS:
        raise ValueError(f"tokenizer.kind={cfg.kind!r} is not supported; valid kinds: {', '.join(KINDS)}")
    if not cfg.path:
        raise ValueError(
            "tokenizer.path is empty: set it to a .model file (sentencepiece) or tokenizer.json (hf), "
            "or train one with ee_jax.tokenizer.train_sentencepiece"
        )
    path = Path(cfg.path).expanduser()
    if not path.exists():
        raise FileNotFoundError(f"tokenizer.path={cfg.path!r} does not exist (tokenizer.kind={cfg.kind!r})")
    if cfg.kind == "sentencepiece":
        if path.is_dir():
            raise ValueError(f"tokenizer.path={cfg.path!r} is a folder; sentencepiece needs a .model file")
        return SentencePieceTokenizer(path)
    return HFTokenizer(path)
