"""ee_jax: training LLM agents with Early Experience, in JAX.

The curated public API. Names resolve lazily, so ``import ee_jax`` is cheap and entry points can
configure the process before JAX initialises.
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

_API = {
    # configuration
    "Config": "ee_jax.config", "ModelConfig": "ee_jax.config", "ConfigError": "ee_jax.config",
    "load_config": "ee_jax.config", "save_config": "ee_jax.config",
    # parallelism
    "make_mesh": "ee_jax.parallel", "use_mesh": "ee_jax.parallel", "LOGICAL_AXIS_RULES": "ee_jax.parallel",
    "initialize_distributed": "ee_jax.parallel",
    # models
    "Decoder": "ee_jax.models", "PRESETS": "ee_jax.models", "preset_config": "ee_jax.models",
    "init_params": "ee_jax.models", "abstract_model": "ee_jax.models", "apply_model": "ee_jax.models",
    "param_count": "ee_jax.models", "train_flops_per_token": "ee_jax.models",
    "Sampler": "ee_jax.models.sampler",
    # pretrained weights: HF directories, GGUF files, LoRA
    "load_hf_params": "ee_jax.models.hf_load", "model_config_from_hf": "ee_jax.config.hf",
    "save_hf_checkpoint": "ee_jax.models.hf_export", "import_gguf": "ee_jax.models.gguf_import",
    "merge_lora": "ee_jax.models.lora", "add_lora": "ee_jax.models.lora",
    # tokenizers
    "load_tokenizer": "ee_jax.tokenizer", "train_sentencepiece": "ee_jax.tokenizer",
    "get_template": "ee_jax.tokenizer", "render_example": "ee_jax.tokenizer", "render_prompt": "ee_jax.tokenizer",
    # training
    "TrainState": "ee_jax.train", "create_train_state": "ee_jax.train", "make_optimizer": "ee_jax.train",
    "make_train_step": "ee_jax.train", "make_batch": "ee_jax.train", "fit": "ee_jax.train",
    "weighted_token_loss": "ee_jax.train", "StageRunner": "ee_jax.train",
    # environments
    "Env": "ee_jax.envs", "Task": "ee_jax.envs", "make_env": "ee_jax.envs", "list_envs": "ee_jax.envs",
    "register_env": "ee_jax.envs", "branch": "ee_jax.envs", "branch_trajectory": "ee_jax.envs",
    "run_oracle": "ee_jax.envs", "EnvPool": "ee_jax.envs.pool",
    # experience: collection, the state renderer, the store, pipelines, policies, serving
    "collect_expert": "ee_jax.experience.expert", "collect_explore": "ee_jax.experience.explore",
    "collect_reflect": "ee_jax.experience.reflect.stage", "iter_records": "ee_jax.records.store",
    "State": "ee_jax.records.schema", "policy_prompt": "ee_jax.records.prompts",
    "world_model_prompt": "ee_jax.records.prompts", "parse_action": "ee_jax.records.prompts",
    "experience_batches": "ee_jax.data.experience_dataset", "ensure_tokenizer": "ee_jax.data.tokenizer_corpus",
    "load_policy": "ee_jax.agent", "Policy": "ee_jax.agent", "ChatClient": "ee_jax.experience.reflect.chat_client",
    "create_app": "ee_jax.serve",
    # methods, evaluation, the main job, reports
    "train_method": "ee_jax.train.recipes", "plan_method": "ee_jax.train.budget",
    "TrainingInterrupted": "ee_jax.train", "NonFiniteLossError": "ee_jax.train",
    "run_episodes": "ee_jax.eval", "evaluate_policy": "ee_jax.eval", "world_model_metrics": "ee_jax.eval",
    "summarize_episodes": "ee_jax.eval", "run_experiment": "ee_jax.pipeline.experiment",
    "build_report": "ee_jax.report", "collect_results": "ee_jax.report",
    "paired_difference": "ee_jax.report", "grounded_rationale": "ee_jax.experience.reflect.grounded",
    # RL continuation
    "train_rl": "ee_jax.rl.trainer", "collect_rollouts": "ee_jax.rl.rollout",
    "grpo_advantages": "ee_jax.rl.advantages", "step_group_advantages": "ee_jax.rl.advantages",
    "gae": "ee_jax.rl.advantages", "policy_loss": "ee_jax.rl.losses", "kl_penalty": "ee_jax.rl.losses",
    # scaling sweeps
    "SweepConfig": "ee_jax.sweep", "load_sweep": "ee_jax.sweep", "run_sweep": "ee_jax.sweep",
    "build_scaling_report": "ee_jax.sweep", "size_figures": "ee_jax.sweep.planning",
    # checkpoints
    "RunDir": "ee_jax.rundir", "Checkpointer": "ee_jax.checkpoint", "export_safetensors": "ee_jax.checkpoint",
    "import_safetensors": "ee_jax.checkpoint",
}

__all__ = sorted(_API) + ["__version__"]


def __getattr__(name: str):
    if name in _API:
        value = getattr(importlib.import_module(_API[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'ee_jax' has no attribute {name!r}")


def __dir__():
    return __all__
