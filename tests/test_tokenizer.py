"""Tokenizer package: lossless SentencePiece training, the HF backend, chat templates, rendering."""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest

from ee_jax.config.schema import TokenizerConfig
from ee_jax.tokenizer import (
    DEFAULT_SPECIAL_TOKENS,
    TEMPLATES,
    HFTokenizer,
    SentencePieceTokenizer,
    get_template,
    load_tokenizer,
    render_example,
    render_prompt,
    render_target,
    stop_token_ids,
    train_sentencepiece,
)

VOCAB = 512

_WORDS = [
    "the", "quick", "brown", "fox", "jumps", "over", "a", "lazy", "dog", "while", "model", "learns",
    "token", "statistics", "from", "batches", "of", "text", "and", "loss", "goes", "down", "step", "by",
    "with", "small", "learning", "rate",
]
_UNICODE = ["日本語", "中文字符", "東京タワー", "学习模型", "데이터", "привет мир", "café", "naïve", "Straße"]
_EMOJI = ["🎉", "🚀", "😀", "👍"]


def make_corpus(n: int = 320) -> list[str]:
    """Deterministic varied text: code (double spaces, tabs, newlines), prose, unicode, chat markup."""
    rng = random.Random(0)
    out = []
    for i in range(n):
        w = [rng.choice(_WORDS) for _ in range(rng.randint(4, 12))]
        kind = i % 4
        if kind == 0:
            out.append(
                f"def {w[0]}_{i}(x, y):\n\tif x  >  {rng.randint(0, 999)}:\n\t\treturn  x * {i}\n"
                f"    return y  # {' '.join(w[1:4])}\n"
            )
        elif kind == 1:
            out.append(" ".join(w).capitalize() + f", {rng.randint(0, 10**6)} times.")
        elif kind == 2:
            out.append(f"{rng.choice(_UNICODE)} {w[0]} {rng.choice(_EMOJI)} {rng.random():.4f}")
        else:
            out.append(
                f"<|im_start|>user\n{' '.join(w)}?<|im_end|>\n<|im_start|>assistant\n{i * 7}<|im_end|>\n"
            )
    return out


# Held-out text: none of these strings (nor the parrot / ZWJ emoji, Arabic, Hebrew) is in the corpus.
UNSEEN = [
    "Hello, world!  Two  spaces\tand\ttabs\n\n\nthree newlines",
    "    indented = {'a': [1, 2, 3]}\r\n\tmixed\r\nline endings",
    "Ünïcödé: ñ ß ø å Ω ≈ ∑ → ✓",
    "🦜🦩 parrots and flamingos 🧬 👩‍💻",
    "数学是科学的语言。한국어 텍스트 العربية עברית",
    "1234567890 3.14159 -42 1e-9 0x1F",
    "",
    " leading space",
    "trailing space   ",
    "   \t \n ",
    "<|im_start|>system\nbe brief<|im_end|>\n<start_of_turn>model\nok<end_of_turn>\n",
]
# SentencePiece control pieces typed as text stay text (HF added tokens would match them instead).
SP_ONLY = ["literal <s> and </s> and <pad> and <unk> stay text"]


@pytest.fixture(scope="module")
def corpus() -> list[str]:
    return make_corpus()


@pytest.fixture(scope="module")
def sp_tok(corpus, tmp_path_factory) -> SentencePieceTokenizer:
    return train_sentencepiece(corpus, tmp_path_factory.mktemp("sp") / "tok", VOCAB, seed=0)


@pytest.fixture(scope="module")
def hf_dir(corpus, tmp_path_factory):
    """A ByteLevel BPE tokenizer.json trained on the corpus, with HF-style sibling config files."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=600,
        special_tokens=["<pad>", "<s>", "</s>", *DEFAULT_SPECIAL_TOKENS],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(corpus, trainer=trainer)
    d = tmp_path_factory.mktemp("hf")
    tok.save(str(d / "tokenizer.json"))
    # bos as a plain string and eos as a serialised AddedToken, the two forms found in the wild;
    # pad only in special_tokens_map.json, to exercise the fallback file.
    (d / "tokenizer_config.json").write_text(
        json.dumps({"bos_token": "<s>", "eos_token": {"__type": "AddedToken", "content": "</s>"}})
    )
    (d / "special_tokens_map.json").write_text(json.dumps({"pad_token": "<pad>", "bos_token": "<pad>"}))
    return d


@pytest.fixture(scope="module")
def hf_tok(hf_dir) -> HFTokenizer:
    return HFTokenizer(hf_dir / "tokenizer.json")


# --------------------------------------------------------------------------- SentencePiece


def test_sp_layout_and_special_ids(sp_tok):
    assert sp_tok.vocab_size == VOCAB
    assert (sp_tok.pad_id, sp_tok.bos_id, sp_tok.eos_id) == (0, 2, 3)
    assert [sp_tok.id_to_token(i) for i in range(4)] == ["<pad>", "<unk>", "<s>", "</s>"]
    # Template markers get ids 4.. in order, each encodes to exactly that one id.
    for k, marker in enumerate(DEFAULT_SPECIAL_TOKENS):
        assert sp_tok.token_to_id(marker) == 4 + k
        assert sp_tok.encode(marker) == [4 + k]
        assert sp_tok.decode([4 + k]) == marker
    assert {"<|im_start|>", "<|im_end|>", "<|eot_id|>", "<start_of_turn>", "<end_of_turn>"} <= set(
        DEFAULT_SPECIAL_TOKENS
    )
    # Markers stay atomic inside running text.
    ids = sp_tok.encode("x<|im_end|>y")
    assert sp_tok.token_to_id("<|im_end|>") in ids and sp_tok.decode(ids) == "x<|im_end|>y"
    assert sp_tok.token_to_id("definitely-not-a-piece") is None
    assert sp_tok.token_to_id("<unk>") == 1
    with pytest.raises(IndexError, match=str(VOCAB)):
        sp_tok.id_to_token(VOCAB)


@pytest.mark.parametrize("text", [*UNSEEN, *SP_ONLY, *make_corpus(8)])
def test_sp_round_trip_lossless_never_unk(sp_tok, text):
    ids = sp_tok.encode(text)
    assert sp_tok.decode(ids) == text
    assert sp_tok.decode(np.asarray(ids, dtype=np.int32)) == text  # arrays accepted too
    assert 1 not in ids  # never <unk>: byte fallback covers everything
    assert sp_tok.bos_id not in ids and sp_tok.eos_id not in ids  # encode adds no BOS/EOS


def test_sp_unseen_emoji_uses_byte_fallback(sp_tok):
    ids = sp_tok.encode("🦜")  # U+1F99C = F0 9F A6 9C in UTF-8, absent from the corpus
    assert [sp_tok.id_to_token(i) for i in ids] == ["<0xF0>", "<0x9F>", "<0xA6>", "<0x9C>"]
    # Whitespace is preserved exactly: two spaces and a tab survive encode.
    assert sp_tok.decode(sp_tok.encode("a  \tb")) == "a  \tb"


def test_sp_batch_and_control_decode(sp_tok):
    texts = UNSEEN[:5]
    assert sp_tok.encode_batch(texts) == [sp_tok.encode(t) for t in texts]
    ids = sp_tok.encode("hi")
    assert sp_tok.decode([sp_tok.bos_id, *ids, sp_tok.eos_id, sp_tok.pad_id]) == "hi"


def test_sp_load_from_file_identical_and_deterministic(sp_tok, corpus, tmp_path):
    loaded = SentencePieceTokenizer(sp_tok.model_file)
    texts = [*UNSEEN, *corpus[:20]]
    assert loaded.encode_batch(texts) == sp_tok.encode_batch(texts)
    assert loaded.vocab_size == sp_tok.vocab_size
    # Retraining with the same inputs writes a byte-identical model, and no temp file is left.
    again = train_sentencepiece(iter(corpus), tmp_path / "sub" / "again", VOCAB, seed=0)
    assert Path(again.model_file).read_bytes() == Path(sp_tok.model_file).read_bytes()
    assert sorted(p.name for p in (tmp_path / "sub").iterdir()) == ["again.model"]


def test_sp_train_from_file_path(corpus, tmp_path):
    path = tmp_path / "corpus.txt"
    path.write_text("\n".join(corpus), encoding="utf-8")
    tok = train_sentencepiece(str(path), tmp_path / "fromfile", 400)
    assert tok.vocab_size == 400
    assert tok.decode(tok.encode(UNSEEN[0])) == UNSEEN[0]


def test_sp_vocab_too_large_error(corpus, tmp_path):
    with pytest.raises(ValueError, match=r"vocab_size=100000 is too large.*vocab_size <= \d+"):
        train_sentencepiece(corpus, tmp_path / "big", 100_000)
    assert not (tmp_path / "big.model").exists()


def test_sp_vocab_too_small_and_bad_inputs(corpus, tmp_path):
    with pytest.raises(ValueError, match=r"vocab_size=200 is too small"):
        train_sentencepiece(corpus, tmp_path / "small", 200)
    with pytest.raises(ValueError, match="empty corpus"):
        train_sentencepiece([], tmp_path / "empty", 400)
    with pytest.raises(ValueError, match="'<s>'"):
        train_sentencepiece(corpus, tmp_path / "clash", 400, special_tokens=["<s>"])
    with pytest.raises(FileNotFoundError, match="no_corpus.txt"):
        train_sentencepiece(str(tmp_path / "no_corpus.txt"), tmp_path / "x", 400)


def test_sp_missing_or_invalid_model_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.model"):
        SentencePieceTokenizer(tmp_path / "missing.model")
    bad = tmp_path / "garbage.model"
    bad.write_bytes(b"this is not a protobuf \x00\xff")
    with pytest.raises(ValueError, match="garbage.model.*not a SentencePiece model"):
        SentencePieceTokenizer(bad)


# --------------------------------------------------------------------------- Hugging Face


def test_hf_special_ids_from_sibling_configs(hf_tok):
    assert hf_tok.vocab_size == 600
    assert (hf_tok.pad_id, hf_tok.bos_id, hf_tok.eos_id) == (0, 1, 2)  # tokenizer_config.json wins for bos
    for marker in DEFAULT_SPECIAL_TOKENS:
        i = hf_tok.token_to_id(marker)
        assert i is not None and hf_tok.encode(marker) == [i] and hf_tok.id_to_token(i) == marker
    with pytest.raises(IndexError):
        hf_tok.id_to_token(600)


def test_hf_round_trip_and_matches_transformers(hf_tok, hf_dir, corpus):
    from transformers import PreTrainedTokenizerFast

    ref = PreTrainedTokenizerFast(tokenizer_file=str(hf_dir / "tokenizer.json"))
    texts = [*UNSEEN, *corpus[:12]]
    batch = hf_tok.encode_batch(texts)
    for text, ids in zip(texts, batch, strict=True):
        assert hf_tok.encode(text) == ids
        assert ref.encode(text, add_special_tokens=False) == ids
        assert hf_tok.decode(ids) == text
    ids = hf_tok.encode("hi")
    assert hf_tok.decode([hf_tok.bos_id, *ids, hf_tok.eos_id]) == "hi"  # control ids drop out


def test_hf_constructor_overrides_and_errors(hf_dir, tmp_path):
    tok = HFTokenizer(hf_dir, eos_token="<|im_end|>", pad_token=2)  # a folder is accepted too
    assert tok.eos_id == tok.token_to_id("<|im_end|>") and tok.pad_id == 2 and tok.bos_id == 1
    bare = tmp_path / "bare"
    bare.mkdir()
    (bare / "tokenizer.json").write_bytes((hf_dir / "tokenizer.json").read_bytes())
    assert (HFTokenizer(bare).bos_id, HFTokenizer(bare).eos_id, HFTokenizer(bare).pad_id) == (-1, -1, -1)
    with pytest.raises(ValueError, match="'<nope>'"):
        HFTokenizer(bare, bos_token="<nope>")
    with pytest.raises(FileNotFoundError, match="nowhere"):
        HFTokenizer(tmp_path / "nowhere" / "tokenizer.json")
    (bare / "broken.json").write_text("{not json")
    with pytest.raises(ValueError, match="broken.json"):
        HFTokenizer(bare / "broken.json")


# --------------------------------------------------------------------------- templates

CONVO = [
    {"role": "system", "content": "You are terse."},
    {"role": "user", "content": "What is 2+3?"},
    {"role": "assistant", "content": "5"},
]

EXPECTED = {
    "plain": "You are terse.\n\nWhat is 2+3?5",
    "chatml": (
        "<|im_start|>system\nYou are terse.<|im_end|>\n"
        "<|im_start|>user\nWhat is 2+3?<|im_end|>\n"
        "<|im_start|>assistant\n5<|im_end|>\n"
    ),
    "llama3": (
        "<|begin_of_text|>"
        "<|start_header_id|>system<|end_header_id|>\n\nYou are terse.<|eot_id|>"
        "<|start_header_id|>user<|end_header_id|>\n\nWhat is 2+3?<|eot_id|>"
        "<|start_header_id|>assistant<|end_header_id|>\n\n5<|eot_id|>"
    ),
    "gemma": (
        "<bos><start_of_turn>user\nYou are terse.\n\nWhat is 2+3?<end_of_turn>\n"
        "<start_of_turn>model\n5<end_of_turn>\n"
    ),
}

EXPECTED_GENERATION = {
    "plain": "You are terse.\n\nWhat is 2+3?",
    "chatml": (
        "<|im_start|>system\nYou are terse.<|im_end|>\n"
        "<|im_start|>user\nWhat is 2+3?<|im_end|>\n<|im_start|>assistant\n"
    ),
    "llama3": (
        "<|begin_of_text|>"
        "<|start_header_id|>system<|end_header_id|>\n\nYou are terse.<|eot_id|>"
        "<|start_header_id|>user<|end_header_id|>\n\nWhat is 2+3?<|eot_id|>"
        "<|start_header_id|>assistant<|end_header_id|>\n\n"
    ),
    "gemma": "<bos><start_of_turn>user\nYou are terse.\n\nWhat is 2+3?<end_of_turn>\n<start_of_turn>model\n",
}


@pytest.mark.parametrize("name", sorted(TEMPLATES))
def test_template_renders_exact_strings(name):
    t = get_template(name)
    assert t.render(CONVO) == EXPECTED[name]
    assert t.render(CONVO[:2], add_generation_prompt=True) == EXPECTED_GENERATION[name]
    assert t.render(CONVO[:2], add_generation_prompt=True).endswith(t.generation_prefix)


def test_template_markers_and_stop_strings():
    expected = {
        "plain": ("", "", ()),
        "chatml": ("<|im_start|>assistant\n", "<|im_end|>\n", ("<|im_end|>",)),
        "llama3": ("<|start_header_id|>assistant<|end_header_id|>\n\n", "<|eot_id|>", ("<|eot_id|>",)),
        "gemma": ("<start_of_turn>model\n", "<end_of_turn>\n", ("<end_of_turn>",)),
    }
    for name, (prefix, eot, stops) in expected.items():
        t = get_template(name)
        assert (t.generation_prefix, t.end_of_turn, t.stop_strings) == (prefix, eot, stops)
    assert get_template("plain").eos_after_assistant and not get_template("chatml").eos_after_assistant
    # Gemma with only a system message still renders it (as a user turn).
    assert get_template("gemma").render(CONVO[:1], include_bos=False) == (
        "<start_of_turn>user\nYou are terse.<end_of_turn>\n"
    )


def test_template_errors():
    with pytest.raises(ValueError, match=r"'vicuna'.*plain, chatml, llama3, gemma"):
        get_template("vicuna")
    t = get_template("chatml")
    with pytest.raises(ValueError, match=r"messages\[1\].*'tool'"):
        t.render([{"role": "user", "content": "a"}, {"role": "tool", "content": "b"}])
    with pytest.raises(ValueError, match=r"messages\[1\] is a system message"):
        t.render([{"role": "user", "content": "a"}, {"role": "system", "content": "b"}])
    with pytest.raises(ValueError, match=r"messages\[0\] content must be a str"):
        t.render([{"role": "user", "content": 3}])


# --------------------------------------------------------------------------- render


@pytest.mark.parametrize("name", sorted(TEMPLATES))
def test_render_example_mask_and_prompt_consistency(sp_tok, name):
    t = get_template(name)
    target = "The answer is  5.\n\tDone 🦜"
    ex = render_example(sp_tok, name, "What is 2+3?", target, system="You are terse.")
    prompt = render_prompt(sp_tok, name, "What is 2+3?", system="You are terse.")
    assert ex.ids.dtype == np.int32 and ex.loss_mask.dtype == np.float32
    assert ex.ids.shape == ex.loss_mask.shape
    # Training prompt == inference prompt, token for token.
    np.testing.assert_array_equal(ex.ids[: len(prompt)], prompt)
    assert ex.ids[0] == sp_tok.bos_id and sp_tok.bos_id not in ex.ids[1:]
    # The inference prompt is exactly BOS + the tokenised generation-prompt string.
    text = t.render(CONVO[:2], add_generation_prompt=True, include_bos=False)
    assert prompt.tolist() == [sp_tok.bos_id, *sp_tok.encode(text)]
    # Loss exactly on the target + end-of-turn tokens, and nothing else.
    np.testing.assert_array_equal(ex.loss_mask, (np.arange(len(ex.ids)) >= len(prompt)).astype(np.float32))
    assert ex.num_prompt_tokens == len(prompt)
    masked = ex.ids[ex.loss_mask == 1.0]
    if name == "plain":
        assert masked[-1] == sp_tok.eos_id and sp_tok.decode(masked[:-1]) == target
        assert masked[:-1].tolist() == sp_tok.encode(target)
    else:
        assert sp_tok.eos_id not in masked
        assert sp_tok.decode(masked) == target + t.end_of_turn
    np.testing.assert_array_equal(masked, render_target(sp_tok, name, target))


def test_render_multi_turn_prompt(sp_tok):
    turns = [
        {"role": "user", "content": "a"},
        {"role": "assistant", "content": "b"},
        {"role": "user", "content": "c"},
    ]
    # plain: earlier assistant turns are closed by the EOS id, as in training.
    plain = render_prompt(sp_tok, "plain", turns)
    assert plain.tolist() == [2, *sp_tok.encode("ab"), 3, *sp_tok.encode("c")]
    chat = render_prompt(sp_tok, "chatml", turns, add_bos=False)
    assert sp_tok.decode(chat) == (
        "<|im_start|>user\na<|im_end|>\n<|im_start|>assistant\nb<|im_end|>\n"
        "<|im_start|>user\nc<|im_end|>\n<|im_start|>assistant\n"
    )
    assert chat[0] == sp_tok.token_to_id("<|im_start|>")
    with pytest.raises(ValueError, match="last message is an assistant turn"):
        render_prompt(sp_tok, "chatml", turns[:2])
    with pytest.raises(ValueError, match="already starts with a system message"):
        render_prompt(sp_tok, "chatml", [{"role": "system", "content": "s"}, *turns], system="t")


def test_render_truncation_keeps_target_and_bos(sp_tok):
    prompt = " ".join(f"word{i}" for i in range(60))
    full = render_example(sp_tok, "chatml", prompt, "the target")
    n_target = int(full.loss_mask.sum())
    assert len(full) > 40 and n_target == len(render_target(sp_tok, "chatml", "the target"))
    cut = render_example(sp_tok, "chatml", prompt, "the target", max_len=40)
    assert len(cut) == 40 and cut.ids[0] == sp_tok.bos_id
    np.testing.assert_array_equal(cut.ids[1:], full.ids[len(full) - 39 :])  # oldest prompt tokens dropped
    assert cut.loss_mask.sum() == n_target and cut.loss_mask[-n_target:].all()
    # Long enough: unchanged.  Exactly BOS + target: prompt dropped entirely.
    same = render_example(sp_tok, "chatml", prompt, "the target", max_len=len(full))
    np.testing.assert_array_equal(same.ids, full.ids)
    bare = render_example(sp_tok, "chatml", prompt, "the target", max_len=n_target + 1)
    assert bare.ids[0] == sp_tok.bos_id and bare.num_prompt_tokens == 1
    with pytest.raises(ValueError, match=rf"max_len={n_target}\b"):
        render_example(sp_tok, "chatml", prompt, "the target", max_len=n_target)


def test_render_with_hf_backend_and_stop_ids(hf_tok, sp_tok):
    ex = render_example(hf_tok, "llama3", "hi", "yo")
    prompt = render_prompt(hf_tok, "llama3", "hi")
    np.testing.assert_array_equal(ex.ids[: len(prompt)], prompt)
    assert prompt[0] == hf_tok.bos_id == 1
    assert hf_tok.decode(ex.ids[ex.loss_mask == 1]) == "yo<|eot_id|>"
    assert stop_token_ids(sp_tok, "chatml") == [3, sp_tok.token_to_id("<|im_end|>")]
    assert stop_token_ids(sp_tok, "plain") == [3]
    assert stop_token_ids(hf_tok, "gemma") == [2, hf_tok.token_to_id("<end_of_turn>")]


# --------------------------------------------------------------------------- load_tokenizer


def test_load_tokenizer_dispatch_and_errors(sp_tok, hf_dir, tmp_path):
    sp = load_tokenizer(TokenizerConfig(kind="sentencepiece", path=sp_tok.model_file))
    assert isinstance(sp, SentencePieceTokenizer) and sp.encode(UNSEEN[0]) == sp_tok.encode(UNSEEN[0])
    hf = load_tokenizer(TokenizerConfig(kind="hf", path=str(hf_dir / "tokenizer.json")))
    assert isinstance(hf, HFTokenizer) and hf.eos_id == 2
    with pytest.raises(ValueError, match=r"tokenizer\.kind='tiktoken'.*sentencepiece, hf"):
        load_tokenizer(TokenizerConfig(kind="tiktoken", path=sp_tok.model_file))
    with pytest.raises(ValueError, match=r"tokenizer\.path is empty"):
        load_tokenizer(TokenizerConfig(kind="sentencepiece", path=""))
    missing = str(tmp_path / "gone.model")
    with pytest.raises(FileNotFoundError, match=r"tokenizer\.path=.*gone\.model"):
        load_tokenizer(TokenizerConfig(kind="sentencepiece", path=missing))
