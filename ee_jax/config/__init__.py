"""Typed configs, YAML presets and dotted overrides."""

from ee_jax.config.loader import (
    ConfigError,
    config_from_dict,
    config_to_dict,
    load_config,
    preset_config,
    raw_config,
    save_config,
)
from ee_jax.config.presets import PRESETS, get_preset
from ee_jax.config.schema import (
    Config,
    DataConfig,
    DistributedConfig,
    EnvConfig,
    EvalConfig,
    ExperienceConfig,
    ExploreConfig,
    MeshConfig,
    ModelConfig,
    OptimizerConfig,
    PromptConfig,
    RecipeConfig,
    ReflectConfig,
    RLConfig,
    RopeScalingConfig,
    SamplerConfig,
    StepGroupConfig,
    TokenizerConfig,
    TrainConfig,
    trained_model,
)
from ee_jax.config.validate import resolve_mesh_shape, validate, validate_mesh

__all__ = [
    "Config", "ConfigError", "DataConfig", "EnvConfig", "EvalConfig",
    "RecipeConfig", "ExperienceConfig", "ExploreConfig", "PromptConfig",
    "ReflectConfig", "RLConfig", "StepGroupConfig",
    "DistributedConfig", "MeshConfig", "ModelConfig",
    "OptimizerConfig", "RopeScalingConfig", "SamplerConfig", "TokenizerConfig", "TrainConfig",
    "PRESETS", "config_from_dict", "config_to_dict", "get_preset", "load_config", "preset_config", "raw_config",
    "resolve_mesh_shape", "save_config",
    "trained_model", "validate", "validate_mesh",
]
