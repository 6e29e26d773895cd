"""Update budgets of the methods, in the paper's terms (epochs over a dataset -> optimizer steps).

``il``: ``recipe.epochs`` epochs over the expert steps; that number of updates is the budget.
``iwm``: stage ``iwm_wm`` takes ``recipe.wm_epochs`` epochs over the transitions, at most
``recipe.wm_max_fraction`` of the budget; stage ``iwm`` imitates for the rest: the same total as ``il``.
``sr``: ``recipe.epochs`` epochs over reflections + expert steps (more updates than ``il``, as in the
paper: the same number of *epochs*). ``il_matched``: the control for that difference: imitation on the
expert steps for exactly ``sr``'s number of updates. ``recipe.epochs = 0`` gives every method
``train.steps`` updates.

An epoch is one pass of the actual pipeline (rendered, packed, batched), counted, so the step counts
hold whatever the packing fill.
"""

from __future__ import annotations

import dataclasses
import math

from ee_jax.config import Config
from ee_jax.data.experience_dataset import experience_batches

METHOD_STAGES = {"il": ("il",), "il_matched": ("il_matched",), "iwm": ("iwm_wm", "iwm"), "sr": ("sr",)}
STAGE_OBJECTIVE = {"il": "il", "il_matched": "il", "iwm_wm": "iwm", "iwm": "il", "sr": "sr"}
BUDGET_OBJECTIVES = {"il": ("il",), "il_matched": ("il", "sr"), "iwm": ("il", "iwm"), "sr": ("sr",)}
"""The datasets whose size sets each method's number of updates (``il_matched`` trains on ``il`` data for
``sr``'s budget)."""


@dataclasses.dataclass(frozen=True)
class StagePlan:
    """One training stage of a method: what it trains on, for how long, and where it starts."""

    stage: str
    objective: str
    steps: int
    steps_per_epoch: int | None  # None when the budget is train.steps (recipe.epochs = 0)
    init: str  # recipe.init for a method's first stage, "stage:NAME" for a stage that continues another

    @property
    def epochs(self) -> float | None:
        return None if not self.steps_per_epoch else self.steps / self.steps_per_epoch


def steps_per_epoch(cfg: Config, objective: str, tokenizer, data_dir: str) -> int:
    """Optimizer steps in one pass over the train split of ``objective`` (every host agrees)."""
    import jax

    it = experience_batches(cfg, objective, tokenizer, data_dir=data_dir, split="train", repeat=False)
    n = sum(1 for _ in it)
    it.close()
    if jax.process_count() > 1:  # hosts' shares can pack into different batch counts: take the largest
        from jax.experimental import multihost_utils

        n = int(max(multihost_utils.process_allgather(n)))
    return max(n, 1)


def plan_method(cfg: Config, method: str, tokenizer, data_dir: str) -> list[StagePlan]:
    """The stages of ``method`` with their step counts (see the module docstring)."""
    if method not in METHOD_STAGES:
        raise ValueError(f"unknown method {method!r}; expected one of {list(METHOD_STAGES)}")
    r = cfg.recipe
    spe = {}

    def per_epoch(objective: str) -> int | None:
        if not r.epochs:
            return None
        if objective not in spe:
            spe[objective] = steps_per_epoch(cfg, objective, tokenizer, data_dir)
        return spe[objective]

    def budget(objective: str) -> int:
        n = per_epoch(objective)
        return cfg.train.steps if n is None else max(1, math.ceil(r.epochs * n))

    if method == "il":
        return [StagePlan("il", "il", budget("il"), per_epoch("il"), r.init)]
    if method == "sr":
        return [StagePlan("sr", "sr", budget("sr"), per_epoch("sr"), r.init)]
    if method == "il_matched":  # imitation data, SR's update count
        return [StagePlan("il_matched", "il", budget("sr"), per_epoch("il"), r.init)]
    total = budget("il")
    wm_epoch = per_epoch("iwm") or steps_per_epoch(cfg, "iwm", tokenizer, data_dir)
    wm = min(max(1, math.ceil(r.wm_epochs * wm_epoch)), math.floor(r.wm_max_fraction * total))
    wm = max(wm, 1)
    return [StagePlan("iwm_wm", "iwm", wm, wm_epoch, r.init),
            StagePlan("iwm", "il", total - wm, per_epoch("il"), "stage:iwm_wm")]
