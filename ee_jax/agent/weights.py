"""Where a stage's weights start: random init, another stage or run, or imported weights.

``recipe.init`` (or a stage's own ``stage:NAME``) is one of:

* ``""``: random initialisation with ``seed`` (scratch models);
* ``STAGE`` / ``stage:STAGE``: this run's checkpoint of that stage (its selected step);
* ``RUN_DIR:STAGE``: another run's checkpoint (same model shape);
* ``safetensors:FILE``: a file written by ``ee_jax.export_safetensors``;
* ``hf:DIR``: a Hugging Face checkpoint directory (``config.json`` + ``*.safetensors``) matching ``model``,
  read shard by shard (:func:`ee_jax.models.hf_files.load_hf_params`).

With ``model.lora_rank`` set, weights without adapters get fresh ones (the model starts equal to them);
a LoRA checkpoint of another rank or target set is merged first.
"""

from __future__ import annotations

import jax

from ee_jax.agent.policy import load_policy
from ee_jax.checkpoint import import_safetensors
from ee_jax.config import Config
from ee_jax.models.factory import abstract_model
from ee_jax.models.hf_files import load_hf_params
from ee_jax.models.lora import add_lora, has_adapters, merge_lora


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
    import dataclasses

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
    policy = load_policy(run_dir, stage=stage, mesh=mesh) if run_dir else load_policy(cfg=cfg, stage=stage, mesh=mesh)
    params = _with_adapters(policy.params, policy.cfg.model, cfg, mesh)
    _check_shapes(params, target, f"recipe.init={spec!r}")
    return params, policy.source
