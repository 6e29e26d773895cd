"""The training recipes: ``il``, ``iwm`` (world-model stage, then imitation) and ``sr``.

Every method trains the same model with the same masked next-token loss; what differs is the data
(the objective's pipeline), the number of updates (:mod:`ee_jax.train.budget`) and where a stage
starts. Each stage is an ordinary :func:`~ee_jax.train.trainer.fit` run in ``ckpt/STAGE`` (resumable,
preemptible), evaluated on the valid split every ``train.eval_every`` steps, and its reported
checkpoint is chosen by the same rule for every method (:mod:`ee_jax.checkpoint.selection`).

``RUN/train/METHOD.json`` records the plan, the selections and the settings; a finished method
whose settings match is skipped, a mismatch is refused naming the keys (``overwrite=True`` redoes it).
"""

from __future__ import annotations

import dataclasses
import math
import os

import jax

from ee_jax.agent.episodes import run_episodes
from ee_jax.agent.policy import Policy
from ee_jax.agent.weights import initial_params
from ee_jax.config import Config, config_to_dict
from ee_jax.data.examples import sources_for
from ee_jax.data.experience_dataset import dataset_sizes, experience_batches, to_train_batch
from ee_jax.data.tokenizer_corpus import ensure_tokenizer
from ee_jax.models.factory import abstract_model
from ee_jax.parallel import make_mesh
from ee_jax.records.store import load_manifest
from ee_jax.rundir import RunDir
from ee_jax.train.budget import BUDGET_OBJECTIVES, METHOD_STAGES, STAGE_OBJECTIVE, StagePlan, plan_method
from ee_jax.train.trainer import fit


def method_settings(cfg: Config, method: str, data_dir: str) -> dict:
    """Everything that decides what a method's training produces (compared before skipping or resuming)."""
    d = config_to_dict(cfg)
    manifest = load_manifest(data_dir)
    objectives = {STAGE_OBJECTIVE[st] for st in METHOD_STAGES[method]} | set(BUDGET_OBJECTIVES[method])
    kinds = sorted({k for obj in objectives for k in sources_for(obj, cfg)})
    return {
        "method": method, "seed": cfg.seed,
        **{k: d[k] for k in ("model", "optimizer", "data", "prompt")},
        "train": {k: v for k, v in d["train"].items()
                  if k not in ("stop_after_steps", "log_every", "async_checkpoint")},
        "recipe": {k: v for k, v in d["recipe"].items() if k not in ("methods", "seeds")},
        "template": cfg.tokenizer.template,
        "data_content": {k: manifest.get(k, {}).get("content_sha256") for k in kinds},
        "eval_for_selection": {k: d["eval"][k] for k in ("max_new_tokens", "max_invalid", "temperature")},
    }


def check_settings(cfg: Config, method: str, settings: dict, overwrite: bool,
                   stages: tuple[str, ...] | None = None) -> dict | None:
    """The finished record when ``method`` is done with these settings; None to (re)start or resume.

    ``stages``: the checkpoint stages ``overwrite`` clears (default: the method's)."""
    return RunDir(cfg.run_dir).check_stage_settings(method, settings, overwrite=overwrite,
                                                    clears=stages or METHOD_STAGES[method],
                                                    defaults=config_to_dict(Config()))


def _valid_loss_batches(cfg: Config, objective: str, tokenizer, data_dir: str):
    """Factory of one finite pass over the valid split (None when it has no records of a needed kind)."""
    if not all(dataset_sizes(cfg, objective, "valid", data_dir).values()):
        return None
    return lambda: experience_batches(cfg, objective, tokenizer, data_dir=data_dir, split="valid",
                                      shuffle=False, repeat=False)


def episode_evaluator(cfg: Config, graphdef, tokenizer, mesh):
    """``evaluate_fn`` running ``recipe.valid_tasks`` valid-split episodes with the current weights."""
    holder: dict = {}

    def evaluate_fn(params, step: int) -> dict:
        if "sampler" not in holder:  # compiled once, then fed each evaluation's parameters
            holder["policy"] = Policy(cfg, graphdef, params, tokenizer, mesh, source="training")
            holder["sampler"] = holder["policy"].sampler()
        holder["sampler"].params = params
        holder["policy"].source = f"training:step={step}"
        eps = run_episodes(holder["policy"], cfg, "valid", n_tasks=cfg.recipe.valid_tasks,
                           sampler=holder["sampler"], progress=False)
        return {"success": sum(e["won"] for e in eps) / max(len(eps), 1), "episodes": len(eps)}

    return evaluate_fn


def selection_eval_steps(steps: int, n: int) -> set[int] | None:
    """The steps after which a stage of ``steps`` updates is evaluated for checkpoint selection:
    ``ceil(i * steps / n)`` for i = 1..n (the last is the final step); None for ``n = 0`` (use
    ``train.eval_every``). Fewer than ``n`` when the stage has fewer than ``n`` steps."""
    if n <= 0:
        return None
    return {math.ceil(i * steps / n) for i in range(1, n + 1)}


def train_stage(cfg: Config, plan: StagePlan, tokenizer, mesh, data_dir: str, *, progress: bool = True):
    """Run (or resume) one stage; returns its :class:`~ee_jax.train.trainer.FitResult`."""
    scfg = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, steps=plan.steps))
    ckpt_dir = RunDir(cfg.run_dir).ckpt(plan.stage)
    params, source = (None, "resume") if os.path.isdir(ckpt_dir) and os.listdir(ckpt_dir) else \
        initial_params(scfg, mesh, plan.init)
    batches = experience_batches(scfg, plan.objective, tokenizer, data_dir=data_dir, split="train")
    select = "last" if plan.stage == "iwm_wm" else cfg.recipe.select
    evaluate_fn = None
    if cfg.recipe.select_metric == "success" and plan.stage != "iwm_wm" and cfg.recipe.valid_tasks:
        evaluate_fn = episode_evaluator(scfg, abstract_model(cfg.model, mesh)[0], tokenizer, mesh)
    meta = {"objective": plan.objective, "init": plan.init, "init_source": source, "seed": cfg.seed,
            "steps_per_epoch": plan.steps_per_epoch}
    steps = selection_eval_steps(plan.steps, cfg.recipe.selection_evals) if select == "best" else None
    try:
        return fit(scfg, mesh, batches, to_train_batch, stage=plan.stage,
                   valid_batches=_valid_loss_batches(scfg, plan.objective, tokenizer, data_dir),
                   evaluate_fn=evaluate_fn, select=select, select_metric=cfg.recipe.select_metric, params=params,
                   metadata=meta, progress=progress, eval_steps=steps)
    finally:
        batches.close()


def train_method(cfg: Config, method: str, *, data_dir: str | None = None, overwrite: bool = False,
                 progress: bool = True) -> dict:
    """Train ``method`` (``il`` | ``iwm`` | ``sr``) in ``cfg.run_dir``; returns ``train/METHOD.json``."""
    run = RunDir(cfg.run_dir)
    data_dir = data_dir or run.data
    settings = method_settings(cfg, method, data_dir)
    done = check_settings(cfg, method, settings, overwrite)
    if done is not None:
        return {**done, "skipped": True}
    tok = ensure_tokenizer(cfg, data_dir)
    cfg = dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, vocab_size=tok.vocab_size))
    mesh = make_mesh(cfg, steps=("train",))
    stages = []
    for plan in plan_method(cfg, method, tok, data_dir):
        result = train_stage(cfg, plan, tok, mesh, data_dir, progress=progress)
        if result.selection is None:  # train.stop_after_steps ended this invocation: run again to resume
            return {"method": method, "policy_stage": METHOD_STAGES[method][-1], "stage": plan.stage,
                    "stopped_at": int(jax.device_get(result.state.step)), "steps": plan.steps, "stages": stages}
        final = result.history[-1] if result.history else {}
        stages.append({**dataclasses.asdict(plan), "epochs": plan.epochs, "resumed_from": result.resumed_from,
                       "selected_step": result.selection["step"], "selection": result.selection,
                       "final_train_loss": final.get("loss")})
    record = {"method": method, "policy_stage": METHOD_STAGES[method][-1], "stages": stages,
              "updates": sum(s["steps"] for s in stages), "seed": cfg.seed}
    run.write_json(run.train_record(method), record)
    return record
