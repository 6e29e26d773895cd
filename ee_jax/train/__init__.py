"""Losses, the jitted train step, schedules, the stage runner, the supervised loop and metrics."""

from ee_jax.data.batch import BATCH_KEYS, make_batch
from ee_jax.train.guard import NonFiniteLossError, TrainingInterrupted
from ee_jax.train.loss import mean_token_loss, weighted_token_loss
from ee_jax.train.optimizer import learning_rate_schedule, make_optimizer
from ee_jax.train.runner import Deferred, Periodic, Schedule, StageRunner
from ee_jax.train.state import TrainState, abstract_state, create_train_state, state_shardings
from ee_jax.train.step import make_eval_step, make_train_step
from ee_jax.train.trainer import FitResult, evaluate, fit, global_batch

__all__ = [
    "BATCH_KEYS", "Deferred", "FitResult", "NonFiniteLossError", "Periodic", "Schedule", "StageRunner",
    "TrainingInterrupted",
    "TrainState", "abstract_state", "create_train_state", "evaluate", "fit",
    "global_batch", "learning_rate_schedule", "make_batch", "make_eval_step", "make_optimizer",
    "make_train_step", "mean_token_loss", "state_shardings", "weighted_token_loss",
]
