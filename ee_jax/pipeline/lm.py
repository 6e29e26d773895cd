"""``ee-jax lm``: train a tokenizer and a small LM on a text file, sample from it, resume it.

The same pieces the agent stages use (tokenizer, Grain pipeline, jitted sharded step, Orbax
checkpoints, sampler), on plain text: the quickest end-to-end check of the training stack.
"""

from __future__ import annotations

import dataclasses
import os
import random

import jax
import numpy as np

from ee_jax.checkpoint import Checkpointer
from ee_jax.config import Config, load_config, save_config
from ee_jax.data import lm_batches, pack_windows, read_corpus, synthetic_corpus
from ee_jax.models.factory import abstract_model
from ee_jax.models.sampler import Sampler
from ee_jax.parallel import host_barrier, initialize_distributed, make_mesh
from ee_jax.rundir import RunDir
from ee_jax.runinfo import run_info
from ee_jax.tokenizer import SentencePieceTokenizer, train_sentencepiece
from ee_jax.train import abstract_state, fit, make_batch, make_optimizer

DEFAULT_PROMPTS = ("the agent puts the", "3 plus 4 is", "count: 5 6 7")


def _tokens_to_batch(item) -> dict[str, np.ndarray]:
    return make_batch(item["tokens"])


def prepare_tokenizer(cfg: Config, lines: list[str]) -> SentencePieceTokenizer:
    """Load ``run_dir/tokenizer/spm.model`` or ``tokenizer.path``; train it from ``lines`` if absent."""
    if cfg.tokenizer.path:
        return SentencePieceTokenizer(cfg.tokenizer.path)
    path = RunDir(cfg.run_dir).tokenizer_model
    if not os.path.exists(path) and jax.process_index() == 0:
        train_sentencepiece(lines, path[: -len(".model")], cfg.tokenizer.vocab_size, seed=cfg.seed)
    # every process, every call (whether the file existed differs between hosts; see ensure_tokenizer)
    host_barrier("ee_jax_tokenizer_trained", cfg.distributed.barrier_timeout_s)
    return SentencePieceTokenizer(path)


def _split(lines: list[str], valid_fraction: float, seed: int) -> tuple[list[str], list[str]]:
    order = list(range(len(lines)))
    random.Random(seed).shuffle(order)
    n_valid = max(1, int(len(lines) * valid_fraction)) if valid_fraction > 0 else 0
    valid = [lines[i] for i in order[:n_valid]]
    train = [lines[i] for i in order[n_valid:]]
    return train, valid


def run_lm(cfg: Config, *, prompts=DEFAULT_PROMPTS, progress: bool = True) -> dict:
    """Train (or resume) the LM described by ``cfg``; returns a JSON-able summary with samples."""
    initialize_distributed(cfg.distributed)
    lines = read_corpus(cfg.data.text_path) if cfg.data.text_path else synthetic_corpus(seed=cfg.seed)
    os.makedirs(cfg.run_dir, exist_ok=True)
    tok = prepare_tokenizer(cfg, lines)
    cfg = dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, vocab_size=tok.vocab_size))
    mesh = make_mesh(cfg)
    if jax.process_index() == 0:
        save_config(cfg, RunDir(cfg.run_dir).config, extra=run_info(cfg.seed))

    train_lines, valid_lines = _split(lines, cfg.data.valid_fraction, cfg.seed)
    seq, bsz = cfg.train.seq_len, cfg.train.batch_size
    train_w = pack_windows([tok.encode(x) for x in train_lines], tok.eos_id, tok.bos_id, seq)
    valid_w = pack_windows([tok.encode(x) for x in valid_lines], tok.eos_id, tok.bos_id, seq) if valid_lines else None
    if valid_w is not None and len(valid_w) < bsz:
        valid_w = np.resize(valid_w, (bsz, seq + 1))  # tile a tiny validation set up to one batch
    batches = lm_batches(train_w, bsz, cfg.seed)
    valid = (lambda: lm_batches(valid_w, bsz, cfg.seed, shuffle=False, repeat=False)) if valid_w is not None else None

    result = fit(cfg, mesh, batches, _tokens_to_batch, stage="lm", valid_batches=valid,
                 metadata={"seed": cfg.seed, "vocab_size": tok.vocab_size}, progress=progress)
    sampler = Sampler(result.graphdef, result.state.params, cfg.model, mesh, tok, cfg.sampler)
    samples = sampler.generate(list(prompts), seed=cfg.seed)
    hist = [h for h in result.history if "loss" in h]
    valid_hist = [h for h in result.history if "valid_loss" in h]
    return {
        "run_dir": cfg.run_dir,
        "steps": cfg.train.steps,
        "resumed_from": result.resumed_from,
        "train_windows": int(len(train_w)),
        "vocab_size": tok.vocab_size,
        "first_logged_loss": hist[0]["loss"] if hist else None,
        "final_loss": hist[-1]["loss"] if hist else None,
        "valid_loss": valid_hist[-1]["valid_loss"] if valid_hist else None,
        "tokens_per_s": hist[-1].get("tokens_per_s") if hist else None,
        "mfu": hist[-1].get("mfu") if hist else None,
        "samples": [{"prompt": p, "text": s.text, "finish_reason": s.finish_reason} for p, s in zip(prompts, samples)],
    }


def load_lm(run_dir: str, overrides: list[str] | None = None):
    """``(cfg, graphdef, params, tokenizer, mesh)`` from a finished or interrupted ``ee-jax lm`` run."""
    path = RunDir(run_dir).config
    if not os.path.exists(path):
        raise FileNotFoundError(f"{run_dir!r} has no config.yaml: not an ee-jax lm run directory")
    cfg = load_config(path, overrides)
    tok = SentencePieceTokenizer(cfg.tokenizer.path or RunDir(run_dir).tokenizer_model)
    mesh = make_mesh(cfg)
    graphdef, abs_params = abstract_model(cfg.model, mesh)
    target = abstract_state(make_optimizer(cfg.optimizer, cfg.train.steps), abs_params, mesh)
    with Checkpointer(RunDir(run_dir).ckpt("lm"), async_save=False) as ckpt:
        restored, _ = ckpt.restore(None, target=target.as_dict())
    return cfg, graphdef, restored["params"], tok, mesh


def sample_lm(run_dir: str, prompts: list[str], overrides: list[str] | None = None, **kwargs) -> list[dict]:
    """Generate from a trained ``ee-jax lm`` run; ``kwargs`` go to :meth:`Sampler.generate`."""
    cfg, graphdef, params, tok, mesh = load_lm(run_dir, overrides)
    sampler = Sampler(graphdef, params, cfg.model, mesh, tok, cfg.sampler)
    out = sampler.generate(prompts, **kwargs)
    return [{"prompt": p, "text": s.text, "ids": s.ids, "logprobs": s.logprobs, "finish_reason": s.finish_reason}
            for p, s in zip(prompts, out)]
