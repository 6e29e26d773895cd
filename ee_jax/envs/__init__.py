"""Environments: the ``Env`` protocol, the built-in text worlds, adapters and branching."""

from ee_jax.envs.base import SPLITS, Env, EnvError, StepResult, Task, observation_hash, task_seed
from ee_jax.envs.branching import Branch, NondeterministicEnvError, branch, branch_trajectory, check_determinism, reach
from ee_jax.envs.checks import Episode, check_env, run_oracle
from ee_jax.envs.registry import BUILTIN, env_class, list_envs, make_env, register_env

__all__ = ["SPLITS", "Env", "EnvError", "StepResult", "Task", "observation_hash", "task_seed", "Branch",
           "NondeterministicEnvError", "branch", "branch_trajectory", "check_determinism", "reach", "Episode",
           "check_env", "run_oracle", "BUILTIN", "env_class", "list_envs", "make_env", "register_env"]
