"""The scratch tokenizer of a run, trained on the texts its models will read and write.

:func:`corpus_lines` renders the store's records with the one state renderer (policy prompts, actions,
world-model prompts and next observations, reflections), so the vocabulary fits exactly the text that
the pipelines tokenize. :func:`ensure_tokenizer` loads ``tokenizer.path``, or the run's
``tokenizer/spm.model`` (the file :func:`ee_jax.agent.weights.run_tokenizer` loads), training it first when
it does not exist yet.
"""

from __future__ import annotations

import glob
import itertools
import os
from collections.abc import Iterator

from ee_jax.config import Config, PromptConfig
from ee_jax.parallel import host_barrier
from ee_jax.records import prompts
from ee_jax.records.schema import KINDS, State
from ee_jax.records.store import iter_records
from ee_jax.rundir import RunDir
from ee_jax.tokenizer import SentencePieceTokenizer, load_tokenizer, train_sentencepiece

# SentencePiece skips training sentences over 4192 bytes; longer texts are fed line by line instead.
_MAX_SENTENCE_BYTES = 4000


def _texts(record: dict, cfg: PromptConfig) -> list[str]:
    kind = record["kind"]
    state = State.from_json(record["state"])
    if kind == "expert_step":
        return [prompts.policy_prompt(state, cfg), prompts.action_target(record["action"])]
    if kind == "transition":
        return [prompts.world_model_prompt(state, record["action"], cfg),
                prompts.world_model_target(record["next_observation"], cfg)]
    return [prompts.reflection_target(record["text"], record["expert"]["action"])]


def _kind_lines(data_dir: str, kind: str, cfg: PromptConfig) -> Iterator[str]:
    for rec in iter_records(data_dir, kind):
        for text in _texts(rec, cfg):
            if len(text.encode("utf-8")) <= _MAX_SENTENCE_BYTES:
                yield text
            else:
                yield from (ln + "\n" for ln in text.split("\n") if ln)


def corpus_lines(data_dir: str, prompt_cfg: PromptConfig, max_lines: int = 20000) -> list[str]:
    """Up to ``max_lines`` rendered texts from the store, taken round-robin over the record kinds (so
    a large transition store does not crowd out reflections), in shard order (deterministic)."""
    streams = [_kind_lines(data_dir, kind, prompt_cfg) for kind in KINDS]
    out: list[str] = []
    for group in itertools.zip_longest(*streams):
        out.extend(x for x in group if x is not None)
        if len(out) >= max_lines:
            return out[:max_lines]
    return out


def ensure_tokenizer(cfg: Config, data_dir: str | None = None, max_lines: int = 20000):
    """The run's tokenizer: ``cfg.tokenizer.path`` if set, else ``run_dir/tokenizer/spm.model``.

    A missing ``spm.model`` is trained (``cfg.tokenizer.vocab_size`` pieces, seed ``cfg.seed``) on
    :func:`corpus_lines` of ``data_dir`` (default ``run_dir/data``) by process 0, to a temporary
    prefix that is then renamed into place, so a crash never leaves a half-written tokenizer.
    """
    import jax

    if cfg.tokenizer.path:
        return load_tokenizer(cfg.tokenizer)
    run = RunDir(cfg.run_dir)
    folder, path = run.tokenizer, run.tokenizer_model
    if not os.path.exists(path) and jax.process_index() == 0:
        data_dir = run.data if data_dir is None else data_dir
        lines = corpus_lines(data_dir, cfg.prompt, max_lines)
        if not lines:
            raise FileNotFoundError(f"{data_dir}: no experience records to train the tokenizer on (and "
                                    f"tokenizer.path is empty); collect expert data first")
        tmp = os.path.join(folder, f".spm.tmp{os.getpid()}")
        try:
            train_sentencepiece(lines, tmp, cfg.tokenizer.vocab_size, seed=cfg.seed)
            if os.path.exists(tmp + ".vocab"):
                os.replace(tmp + ".vocab", os.path.join(folder, "spm.vocab"))
            os.replace(tmp + ".model", path)  # the .model last: its presence means "done"
        finally:
            for leftover in glob.glob(tmp + ".*"):
                os.remove(leftover)
    # Every process, every call: whether spm.model existed when a host looked is not the same on every
    # host (process 0 may have finished training it), so a barrier inside the branch above could be
    # skipped by one host and waited at by another.

    host_barrier("ee_jax_run_tokenizer", cfg.distributed.barrier_timeout_s)
    return SentencePieceTokenizer(path)
