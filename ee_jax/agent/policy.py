"""A policy: a model's parameters with its config, tokenizer, chat template and mesh.

Everything that *runs* a model outside the train step (policy-proposed alternatives, ``self``
reflections, ``ee-jax serve``, evaluation) loads it through :func:`load_policy`, so they all agree on
which weights, tokenizer and template a run directory means.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax

from ee_jax.agent.weights import stage_weights
from ee_jax.config import Config, MeshConfig
from ee_jax.data.tokenizer_corpus import ensure_tokenizer
from ee_jax.models.sampler import Sampler
from ee_jax.parallel import make_mesh
from ee_jax.records.prompts import policy_prompt, shrinking_prompt_cfgs
from ee_jax.tokenizer import get_template, render_prompt


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
        """A :class:`~ee_jax.models.sampler.Sampler` over these weights (stops at end of turn).

        Under ``jax.distributed`` with weights on every host's devices, the sampler runs on this host's
        devices (:func:`local_mesh`, the weights gathered once per policy version): each host then plays
        its own share of episodes (:func:`~ee_jax.parallel.distributed.splits_work`) instead of every
        host decoding every episode on the sharded model.
        """
        scfg = self.cfg.sampler
        stop = list(dict.fromkeys(list(scfg.stop) + list(get_template(self.template).stop_strings)))
        scfg = dataclasses.replace(scfg, stop=stop)
        mesh = local_mesh(self.cfg) if self.mesh.is_multi_process else self.mesh
        return Sampler(self.graphdef, self.params, self.cfg.model, mesh, self.tokenizer, scfg)

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


def run_policy(cfg: Config, stage: str = "") -> Policy:
    """The policy a collection stage of ``cfg``'s run acts with: checkpoint ``stage``, or the untrained
    model for ``""``. A scratch run's tokenizer is trained from its records first if it is missing."""
    ensure_tokenizer(cfg)
    return load_policy(cfg=cfg, stage=stage or "init", mesh=local_mesh(cfg) if jax.process_count() > 1 else None)


def local_mesh(cfg: Config):
    """A mesh over this host's devices only (``cfg.mesh.tensor`` kept when it divides them).

    Collection shards are per host, so under ``jax.distributed`` hosts make different sampler calls;
    each samples with its own copy of the model, which a global mesh would not allow.
    """
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
    w = stage_weights(run_dir, cfg=cfg, stage=stage, overrides=overrides, init_if_missing=init_if_missing,
                      mesh=mesh)
    return Policy(w.cfg, w.graphdef, w.params, w.tokenizer, w.mesh, source=w.source)
