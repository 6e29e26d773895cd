"""Tokenizers rebuilt from the vocabulary a GGUF file stores (``tokenizer.ggml.*`` metadata).

Two kinds, by ``tokenizer.ggml.model``:

* ``llama`` (SentencePiece BPE, e.g. Gemma 3): a SentencePiece ``ModelProto`` written as
  ``tokenizer.model``. GGUF's ``token_type`` is SentencePiece's own enum (1 normal, 2 unknown,
  3 control, 4 user-defined, 5 unused, 6 byte), and the scores are the BPE merge ranks. llama.cpp's
  converter altered two things that we undo: user-defined pieces had ``▁`` replaced by a plain space
  (Gemma's whitespace runs), and special tokens such as ``<start_of_turn>`` became *control* pieces,
  which SentencePiece never matches in raw text. Every control piece except BOS/EOS/UNK/PAD becomes
  user-defined again, so chat markers typed in a prompt are one token each, as in ``transformers``.
* ``gpt2`` (byte-level BPE, e.g. SmolLM2): a ``tokenizers`` ``tokenizer.json`` from the vocabulary
  and merges, with the pre-tokenizer llama.cpp names in ``tokenizer.ggml.pre`` (:data:`BYTE_LEVEL_PRE`)
  and the control tokens as special added tokens.

Plus a ``tokenizer_config.json`` (BOS/EOS/PAD/UNK names, ``add_bos_token``, the chat template), which
:class:`~ee_jax.tokenizer.HFTokenizer` and ``transformers`` both read. Nothing here imports torch or
transformers; building Gemma 3's 262k-piece model takes a few seconds.
"""

from __future__ import annotations

import json
from typing import Any

NORMAL, UNKNOWN, CONTROL, USER_DEFINED, UNUSED, BYTE = 1, 2, 3, 4, 5, 6

# llama.cpp's pre-tokenizer regexes (llama-vocab.cpp), as `tokenizers` pre-tokenizer specs.
_QWEN2_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+"
                r"|\s+(?!\S)|\s+")
_LLAMA3_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
                 r"|\s*[\r\n]+|\s+(?!\S)|\s+")
BYTE_LEVEL_PRE = {
    "smollm": "digits+gpt2",  # each digit alone, then GPT-2's split (SmolLM's own tokenizer.json)
    "gpt-2": "gpt2",
    "default": "gpt2",
    "qwen2": _QWEN2_SPLIT,
    "llama-bpe": _LLAMA3_SPLIT,
    "llama3": _LLAMA3_SPLIT,
}


def _ids(meta: dict[str, Any], name: str) -> int | None:
    v = meta.get(f"tokenizer.ggml.{name}_token_id")
    return None if v is None else int(v)


def _vocab(meta: dict[str, Any], where: str) -> tuple[list[str], list[int]]:
    tokens = meta.get("tokenizer.ggml.tokens")
    if not tokens:
        raise ValueError(f"{where}: no tokenizer.ggml.tokens; the file carries no vocabulary")
    types = meta.get("tokenizer.ggml.token_type") or [NORMAL] * len(tokens)
    if len(types) != len(tokens):
        raise ValueError(f"{where}: tokenizer.ggml.token_type has {len(types)} entries for {len(tokens)} tokens")
    return list(tokens), [int(t) for t in types]


def sentencepiece_proto(meta: dict[str, Any], where: str = "GGUF") -> bytes:
    """A serialised SentencePiece ``ModelProto`` for a ``tokenizer.ggml.model == "llama"`` vocabulary."""
    from sentencepiece import sentencepiece_model_pb2 as spm_pb2

    tokens, types = _vocab(meta, where)
    scores = meta.get("tokenizer.ggml.scores") or [0.0] * len(tokens)
    special = {k: _ids(meta, k) for k in ("bos", "eos", "unknown", "padding")}
    if special["unknown"] is None:
        raise ValueError(f"{where}: a SentencePiece vocabulary needs tokenizer.ggml.unknown_token_id")
    core = {i for i in special.values() if i is not None}
    m = spm_pb2.ModelProto()
    for i, (tok, score, kind) in enumerate(zip(tokens, scores, types, strict=True)):
        if kind == USER_DEFINED:
            tok = tok.replace(" ", "\u2581")  # llama.cpp stored "▁▁" as "  "
        if i == special["unknown"]:
            kind = UNKNOWN  # SentencePiece needs exactly one unknown piece
        elif kind == CONTROL and i not in core:
            kind = USER_DEFINED  # chat markers match in raw text (as HF added tokens do)
        m.pieces.add(piece=tok, score=float(score), type=kind)
    ts = m.trainer_spec
    ts.model_type = spm_pb2.TrainerSpec.BPE
    ts.vocab_size = len(tokens)
    ts.byte_fallback = BYTE in types
    ts.split_digits = True
    ts.allow_whitespace_only_pieces = True
    ts.treat_whitespace_as_suffix = False
    ts.unk_id = special["unknown"]
    ts.bos_id = -1 if special["bos"] is None else special["bos"]
    ts.eos_id = -1 if special["eos"] is None else special["eos"]
    ts.pad_id = -1 if special["padding"] is None else special["padding"]
    for role, key in (("unk", "unknown"), ("bos", "bos"), ("eos", "eos"), ("pad", "padding")):
        if special[key] is not None:
            setattr(ts, f"{role}_piece", tokens[special[key]])
    ns = m.normalizer_spec
    ns.name = "identity"
    ns.add_dummy_prefix = bool(meta.get("tokenizer.ggml.add_space_prefix", True))
    ns.remove_extra_whitespaces = False
    ns.escape_whitespaces = True
    return m.SerializeToString()


def byte_level_tokenizer_json(meta: dict[str, Any], where: str = "GGUF") -> str:
    """``tokenizer.json`` text for a ``tokenizer.ggml.model == "gpt2"`` (byte-level BPE) vocabulary."""
    from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, pre_tokenizers

    tokens, types = _vocab(meta, where)
    merges = meta.get("tokenizer.ggml.merges")
    if not merges:
        raise ValueError(f"{where}: a byte-level BPE vocabulary needs tokenizer.ggml.merges")
    pre = meta.get("tokenizer.ggml.pre", "default")
    if pre not in BYTE_LEVEL_PRE:
        raise ValueError(f"{where}: tokenizer.ggml.pre={pre!r} is not supported; expected one of "
                         f"{sorted(BYTE_LEVEL_PRE)}")
    pairs = []
    for line in merges:
        a, sep, b = line.partition(" ")
        if not sep:
            raise ValueError(f"{where}: tokenizer.ggml.merges entry {line!r} is not two tokens")
        pairs.append((a, b))
    tok = Tokenizer(models.BPE(vocab={t: i for i, t in enumerate(tokens)}, merges=pairs, fuse_unk=False))
    split = BYTE_LEVEL_PRE[pre]
    byte_level = pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True, use_regex=True)
    if split == "gpt2":
        tok.pre_tokenizer = byte_level
    elif split == "digits+gpt2":
        tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Digits(individual_digits=True), byte_level])
    else:
        tok.pre_tokenizer = pre_tokenizers.Sequence([
            pre_tokenizers.Split(Regex(split), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=False, use_regex=False)])
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False)
                            for t, kind in zip(tokens, types, strict=True) if kind == CONTROL])
    return tok.to_str(pretty=False)


def tokenizer_config(meta: dict[str, Any]) -> dict[str, Any]:
    """``tokenizer_config.json``: special-token names, whether prompts start with BOS, the chat template."""
    tokens = meta["tokenizer.ggml.tokens"]
    kind = meta.get("tokenizer.ggml.model")
    cfg: dict[str, Any] = {}
    for name, key in (("bos_token", "bos"), ("eos_token", "eos"), ("unk_token", "unknown"), ("pad_token", "padding")):
        i = _ids(meta, key)
        cfg[name] = tokens[i] if i is not None and 0 <= i < len(tokens) else None
    # llama.cpp adds BOS to a SentencePiece vocabulary unless the file says otherwise.
    cfg["add_bos_token"] = bool(meta.get("tokenizer.ggml.add_bos_token", kind == "llama"))
    cfg["add_eos_token"] = bool(meta.get("tokenizer.ggml.add_eos_token", False))
    if meta.get("tokenizer.chat_template"):
        cfg["chat_template"] = meta["tokenizer.chat_template"]
    return cfg


def tokenizer_files(meta: dict[str, Any], where: str = "GGUF") -> dict[str, bytes]:
    """The tokenizer files of a GGUF vocabulary: ``{file name: content}``.

    ``tokenizer.model`` (SentencePiece) or ``tokenizer.json`` (byte-level BPE), and ``tokenizer_config.json``.
    """
    kind = meta.get("tokenizer.ggml.model")
    if kind == "llama":
        files = {"tokenizer.model": sentencepiece_proto(meta, where)}
    elif kind == "gpt2":
        files = {"tokenizer.json": byte_level_tokenizer_json(meta, where).encode()}
    else:
        raise ValueError(f"{where}: tokenizer.ggml.model={kind!r} is not supported; expected 'llama' "
                         "(SentencePiece) or 'gpt2' (byte-level BPE)")
    files["tokenizer_config.json"] = json.dumps(tokenizer_config(meta), indent=1).encode()
    return files
