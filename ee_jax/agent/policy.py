"""A policy: a model's parameters with its config, tokenizer, chat template and mesh.

Everything that *runs* a model outside the train step (policy-proposed alternatives, ``self``
reflections, ``ee-jax serve``, evaluation) loads it through :func:`load_policy`, so they all agree on
which weights, tokenizer and template a run directory means.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any

from ee_jax.checkpoint import Checkpointer
from ee_jax.checkpoint.selection import selected_step
from ee_jax.config import Config, MeshConfig, load_config
from ee_jax.data.tokenizer_corpus import ensure_tokenizer
from ee_jax.models.factory import abstract_model, init_params
from ee_jax.models.sampler import Sampler
from ee_jax.parallel import make_mesh
from ee_jax.records.prompts import policy_prompt, shrinking_prompt_cfgs
from ee_jax.tokenizer import SentencePieceTokenizer, get_template, load_tokenizer, render_prompt


@dataclasses.dataclass
class Policy:
    """Weights plus what is needed to prompt them. ``source`` says where the weights came from."""

    cfg: Config
    graphdef: Any
    params: Any
    tokenizer: Any
    mesh: Any
    source: str  # "checkpoint:DIR@STEP" | "init:seed=N"

    @property
    def template(self) -> str:
        return self.cfg.tokenizer.template

    def sampler(self):
        """A :class:`~ee_jax.models.sampler.Sampler` over these weights (stops at end of turn)."""
        scfg = self.cfg.sampler
        stop = list(dict.fromkeys(list(scfg.stop) + list(get_template(self.template).stop_strings)))
        scfg = dataclasses.replace(scfg, stop=stop)
        return Sampler(self.graphdef, self.params, self.cfg.model, self.mesh, self.tokenizer, scfg)

    def prompt_ids(self, state, prompt_cfg, max_new_tokens: int) -> list[int]:
        """The policy prompt of ``state`` as token ids that leave ``max_new_tokens`` of the context free.

        The prompt is rendered through the chat template with ``prompt_cfg``, then re-rendered with the
        ever tighter settings of :func:`~ee_jax.records.prompts.shrinking_prompt_cfgs` (the rule
        training shortens prompts by) until it fits ``model.max_seq_len - max_new_tokens``; as a last
        resort BOS and the most recent tokens are kept.
        """
        budget = self.cfg.model.max_seq_len - max_new_tokens
        if budget < 1:
            raise ValueError(f"max_new_tokens={max_new_tokens} leaves no room for a prompt in "
                             f"model.max_seq_len={self.cfg.model.max_seq_len}")
        for pcfg in shrinking_prompt_cfgs(prompt_cfg):
            ids = render_prompt(self.tokenizer, self.template, policy_prompt(state, pcfg)).tolist()
            if len(ids) <= budget:
                return ids
        return ids[:1] + ids[len(ids) - budget + 1:]  # last resort: BOS and the most recent context


def run_tokenizer(cfg: Config):
    """The tokenizer of a run: ``tokenizer.path`` if set, else the run's trained ``tokenizer/spm.model``."""
    if cfg.tokenizer.path:
        return load_tokenizer(cfg.tokenizer)
    path = os.path.join(cfg.run_dir, "tokenizer", "spm.model")
    if not os.path.exists(path):
        raise FileNotFoundError(f"run {cfg.run_dir!r} has no tokenizer: {path} does not exist and tokenizer.path "
                                f"is empty (scratch runs train it from their expert data first)")
    return SentencePieceTokenizer(path)


def _stage_model(cfg: Config, saved: set[str], where: str) -> Config:
    """``cfg`` with the LoRA setting the checkpoint was trained with: a stage trained without adapters
    (e.g. ``il``, before ``ee-jax rl ... model.lora_rank=8`` on the same run) loads as the plain model."""
    has_adapters = any(".lora_" in n for n in saved)
    if has_adapters == bool(cfg.model.lora_rank):
        return cfg
    if not has_adapters:
        return dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, lora_rank=0))
    raise ValueError(f"checkpoint {where} holds LoRA adapters but the config has model.lora_rank=0; load it with "
                     "the run's LoRA settings (model.lora_rank, model.lora_alpha, model.lora_targets)")


def has_checkpoint(run_dir: str, stage: str) -> bool:
    """Whether stage ``stage`` of ``run_dir`` has at least one finished checkpoint."""
    path = os.path.join(run_dir, "ckpt", stage)
    if not os.path.isdir(path):
        return False
    with Checkpointer(path, async_save=False) as ck:
        return ck.latest_step() is not None


def checkpoint_stages(run_dir: str) -> list[str]:
    """Stages of ``run_dir`` that have at least one finished checkpoint."""
    root = os.path.join(run_dir, "ckpt")
    return [name for name in (sorted(os.listdir(root)) if os.path.isdir(root) else []) if has_checkpoint(run_dir, name)]


def run_policy(cfg: Config, stage: str = "") -> Policy:
    """The policy a collection stage of ``cfg``'s run acts with: checkpoint ``stage``, or the untrained
    model for ``""``. A scratch run's tokenizer is trained from its records first if it is missing."""
    import jax

    ensure_tokenizer(cfg)
    return load_policy(cfg=cfg, stage=stage or "init", mesh=local_mesh(cfg) if jax.process_count() > 1 else None)


def local_mesh(cfg: Config):
    """A mesh over this host's devices only (``cfg.mesh.tensor`` kept when it divides them).

    Collection shards are per host, so under ``jax.distributed`` hosts make different sampler calls;
    each samples with its own copy of the model, which a global mesh would not allow.
    """
    import jax

    local = jax.local_devices()
    tensor = cfg.mesh.tensor if cfg.mesh.tensor > 0 and len(local) % cfg.mesh.tensor == 0 else 1
    return make_mesh(dataclasses.replace(cfg, mesh=MeshConfig(data=-1, fsdp=1, tensor=tensor)), local)


def load_policy(run_dir: str | None = None, *, cfg: Config | None = None, stage: str | None = None,
                overrides: list[str] | None = None, init_if_missing: bool = False, mesh=None) -> Policy:
    """Load the policy of ``run_dir`` (its ``config.yaml``) or of ``cfg``.

    ``stage`` picks ``ckpt/STAGE`` (default: the only stage with a checkpoint) at its selected step
    (``ckpt/STAGE/selection.json``, else the newest); ``stage="init"`` is the model before any training,
    which ``init_if_missing=True`` also falls back to: the imported weights of ``recipe.init=hf:DIR`` /
    ``safetensors:FILE``, else the randomly initialised ``cfg.model`` (seed ``cfg.seed``).
    """
    if cfg is None:
        if run_dir is None:
            raise ValueError("load_policy needs run_dir or cfg")
        path = os.path.join(run_dir, "config.yaml")
        if not os.path.exists(path):
            raise FileNotFoundError(f"{run_dir!r} has no config.yaml: not an ee-jax run directory")
        cfg = load_config(path, overrides)
    run_dir = cfg.run_dir if run_dir is None else run_dir
    tok = run_tokenizer(dataclasses.replace(cfg, run_dir=run_dir))
    if cfg.model.vocab_size != tok.vocab_size:
        cfg = dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, vocab_size=tok.vocab_size))
    mesh = make_mesh(cfg) if mesh is None else mesh
    stages = checkpoint_stages(run_dir)
    if stage is None and len(stages) > 1:
        raise ValueError(f"run {run_dir!r} has checkpoints for stages {stages}; choose one with stage=")
    stage = stage or (stages[0] if stages else None)
    if stage is None or stage not in stages:
        if not init_if_missing and stage != "init":
            raise FileNotFoundError(f"run {run_dir!r} has no checkpoint for stage {stage!r} (stages with "
                                    f"checkpoints: {stages or 'none'})")
        from ee_jax.agent.weights import pretrained_spec

        spec = pretrained_spec(cfg)
        if spec:  # the raw pretrained model the run starts from (imported weights)
            from ee_jax.agent.weights import initial_params

            params, _ = initial_params(cfg, mesh, spec)
            return Policy(cfg, abstract_model(cfg.model, mesh)[0], params, tok, mesh, source=f"init:{spec}")
        graphdef, params = init_params(cfg.model, mesh, seed=cfg.seed)
        return Policy(cfg, graphdef, params, tok, mesh, source=f"init:seed={cfg.seed}")
    ckpt_dir = os.path.join(run_dir, "ckpt", stage)
    with Checkpointer(ckpt_dir, async_save=False) as ckpt:
        step = selected_step(ckpt_dir) or ckpt.latest_step()  # the stage's reported checkpoint
        cfg = _stage_model(cfg, ckpt.saved_names(step), f"{ckpt_dir}@{step}")
        graphdef, abs_params = abstract_model(cfg.model, mesh)
        # only the parameters: optimizer moments (and an RL stage's reference / critic) stay on disk
        restored = ckpt.restore_subtree(step, {"params": abs_params})
    return Policy(cfg, graphdef, restored["params"], tok, mesh, source=f"checkpoint:{ckpt_dir}@{step}")
