"""Where a stage's weights start: random init, another stage or run, or imported weights.

``recipe.init`` (or a stage's own ``stage:NAME``) is one of:

* ``""``: random initialisation with ``seed`` (scratch models);
* ``STAGE`` / ``stage:STAGE``: this run's checkpoint of that stage (its selected step);
* ``RUN_DIR:STAGE``: another run's checkpoint (same model shape);
* ``safetensors:FILE``: a file written by ``ee_jax.export_safetensors``;
* ``hf:DIR``: a Hugging Face checkpoint directory (``config.json`` + ``*.safetensors``) matching ``model``,
  read shard by shard (:func:`ee_jax.models.hf_load.load_hf_params`).

With ``model.lora_rank`` set, weights without adapters get fresh ones (the model starts equal to them);
a LoRA checkpoint of another rank or target set is merged first.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any

import jax

from ee_jax.checkpoint import Checkpointer, import_safetensors
from ee_jax.checkpoint.selection import selected_step
from ee_jax.config import Config, ConfigError, load_config
from ee_jax.files import CorruptFileError
from ee_jax.models.factory import abstract_model, init_params
from ee_jax.models.hf_load import load_hf_params
from ee_jax.models.lora import add_lora, has_adapters, merge_lora
from ee_jax.parallel import make_mesh
from ee_jax.rundir import RunDir
from ee_jax.tokenizer import SentencePieceTokenizer, load_tokenizer


def _check_shapes(params, target, where: str) -> None:
    got = {jax.tree_util.keystr(k): tuple(v.shape) for k, v in jax.tree_util.tree_flatten_with_path(params)[0]}
    want = {jax.tree_util.keystr(k): tuple(v.shape) for k, v in jax.tree_util.tree_flatten_with_path(target)[0]}
    if got != want:
        bad = sorted(k for k in set(got) | set(want) if got.get(k) != want.get(k))[0]
        raise ValueError(f"{where}: the weights do not fit this run's model: {bad} has shape {got.get(bad)}, "
                         f"the model expects {want.get(bad)}; start from a checkpoint of the same model config")


def _with_adapters(params, src_model, cfg: Config, mesh):
    """Fit ``params`` (of model config ``src_model``) to this run's LoRA setting."""
    import dataclasses

    same = dataclasses.replace(src_model, max_seq_len=0) == dataclasses.replace(cfg.model, max_seq_len=0)
    if has_adapters(params) and not same:
        params, _ = merge_lora(params, src_model, mesh)
    if cfg.model.lora_rank and not has_adapters(params):
        params = add_lora(params, cfg.model, mesh, seed=cfg.seed)
    return params


def pretrained_spec(cfg: Config) -> str:
    """``recipe.init`` when it names imported weights (``hf:`` / ``safetensors:``): the run's raw pretrained
    model, which "init" means for it (untrained by this run); else "" (a scratch model)."""
    spec = cfg.recipe.init
    return spec if spec.startswith(("hf:", "safetensors:")) else ""


def initial_params(cfg: Config, mesh, spec: str):
    """``(params or None, source)`` for ``spec`` (see the module docstring); None means random init."""
    if not spec:
        return None, f"init:seed={cfg.seed}"
    _, target = abstract_model(cfg.model, mesh)
    base_model = dataclasses.replace(cfg.model, lora_rank=0)
    if spec.startswith("hf:"):
        # shard by shard into the mesh; config.json must agree with `model` on everything that changes the math
        try:
            params = load_hf_params(spec[3:], base_model, mesh)
        except (FileNotFoundError, ValueError) as e:
            raise type(e)(f"recipe.init={spec!r}: {e}") from e
        return _with_adapters(params, base_model, cfg, mesh), spec
    if spec.startswith("safetensors:"):
        path = spec[len("safetensors:"):]
        try:
            return import_safetensors(path, target), spec
        except ValueError:
            if not cfg.model.lora_rank:
                raise
        params = import_safetensors(path, abstract_model(base_model, mesh)[1])  # plain weights: add adapters
        return _with_adapters(params, base_model, cfg, mesh), spec

    spec_stage = spec[len("stage:"):] if spec.startswith("stage:") else spec
    run_dir, _, stage = spec_stage.rpartition(":")
    # another run reads its own config.yaml; this run's stage uses cfg
    w = stage_weights(run_dir, stage=stage, mesh=mesh) if run_dir else stage_weights(cfg=cfg, stage=stage, mesh=mesh)
    params = _with_adapters(w.params, w.cfg.model, cfg, mesh)
    _check_shapes(params, target, f"recipe.init={spec!r}")
    return params, w.source


@dataclasses.dataclass
class StageWeights:
    """A stage's parameters with the config (LoRA setting, vocabulary) and tokenizer they belong to."""

    cfg: Config
    graphdef: Any
    params: Any
    tokenizer: Any
    mesh: Any
    source: str  # "checkpoint:DIR@STEP" | "init:seed=N" | "init:SPEC"


def run_tokenizer(cfg: Config):
    """The tokenizer of a run: ``tokenizer.path`` if set, else the run's trained ``tokenizer/spm.model``."""
    if cfg.tokenizer.path:
        return load_tokenizer(cfg.tokenizer)
    path = RunDir(cfg.run_dir).tokenizer_model
    if not os.path.exists(path):
        raise FileNotFoundError(f"run {cfg.run_dir!r} has no tokenizer: {path} does not exist and tokenizer.path "
                                f"is empty (scratch runs train it from their expert data first)")
    return SentencePieceTokenizer(path)


def _stage_model(cfg: Config, saved: set[str], where: str) -> Config:
    """``cfg`` with the LoRA setting the checkpoint was trained with: a stage trained without adapters
    (e.g. ``il``, before ``ee-jax rl ... model.lora_rank=8`` on the same run) loads as the plain model."""
    has_lora = any(".lora_" in n for n in saved)
    if has_lora == bool(cfg.model.lora_rank):
        return cfg
    if not has_lora:
        return dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, lora_rank=0))
    raise ValueError(f"checkpoint {where} holds LoRA adapters but the config has model.lora_rank=0; load it with "
                     "the run's LoRA settings (model.lora_rank, model.lora_alpha, model.lora_targets)")


def stage_weights(run_dir: str | None = None, *, cfg: Config | None = None, stage: str | None = None,
                  overrides: list[str] | None = None, init_if_missing: bool = False, mesh=None) -> StageWeights:
    """The weights of a stage of ``run_dir`` (its ``config.yaml``) or of ``cfg``'s run: what
    :func:`ee_jax.agent.policy.load_policy` wraps (see there for ``stage`` and ``init_if_missing``)."""
    if cfg is None:
        if run_dir is None:
            raise ValueError("load_policy needs run_dir or cfg")
        path = RunDir(run_dir).config
        if not os.path.exists(path):
            raise FileNotFoundError(f"{run_dir!r} has no config.yaml: not an ee-jax run directory")
        cfg = load_config(path, overrides)
    run = RunDir(cfg.run_dir if run_dir is None else run_dir)
    tok = run_tokenizer(dataclasses.replace(cfg, run_dir=run.root))
    if cfg.model.vocab_size != tok.vocab_size:
        cfg = dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, vocab_size=tok.vocab_size))
    mesh = make_mesh(cfg) if mesh is None else mesh
    stages = run.checkpoint_stages()
    if stage is None and len(stages) > 1:
        raise ValueError(f"run {run.root!r} has checkpoints for stages {stages}; choose one with stage=")
    stage = stage or (stages[0] if stages else None)
    if stage is None or stage not in stages:
        if not init_if_missing and stage != "init":
            raise FileNotFoundError(f"run {run.root!r} has no checkpoint for stage {stage!r} (stages with "
                                    f"checkpoints: {stages or 'none'})")
        spec = pretrained_spec(cfg)
        if spec:  # the raw pretrained model the run starts from (imported weights)
            params, _ = initial_params(cfg, mesh, spec)
            return StageWeights(cfg, abstract_model(cfg.model, mesh)[0], params, tok, mesh, f"init:{spec}")
        graphdef, params = init_params(cfg.model, mesh, seed=cfg.seed)
        return StageWeights(cfg, graphdef, params, tok, mesh, f"init:seed={cfg.seed}")
    ckpt_dir = run.ckpt(stage)
    with Checkpointer(ckpt_dir, async_save=False) as ckpt:
        step = selected_step(ckpt_dir) or ckpt.latest_step()  # the stage's reported checkpoint
        try:
            cfg = _stage_model(cfg, ckpt.saved_names(step), f"{ckpt_dir}@{step}")
            graphdef, abs_params = abstract_model(cfg.model, mesh)
            # only the parameters: optimizer moments (and an RL stage's reference / critic) stay on disk
            restored = ckpt.restore_subtree(step, {"params": abs_params})
        except (ConfigError, ValueError) as e:
            if not isinstance(e, ConfigError) and "shape" not in str(e).lower():
                raise _damaged(ckpt, ckpt_dir, step, e) from None
            raise
        except Exception as e:  # orbax / tensorstore errors on damaged files have no common type
            raise _damaged(ckpt, ckpt_dir, step, e) from None
    return StageWeights(cfg, graphdef, restored["params"], tok, mesh, f"checkpoint:{ckpt_dir}@{step}")


def _damaged(ckpt, ckpt_dir: str, step: int, e: Exception) -> CorruptFileError:
    others = [s for s in ckpt.all_steps() if s != step]
    return CorruptFileError(
        f"{ckpt_dir}: checkpoint step {step} cannot be restored ({type(e).__name__}: "
        f"{str(e).strip().splitlines()[0][:300]}); it is damaged: train the stage again"
        + (f" (other steps on disk: {others})" if others else ""))


