"""Experience records -> supervised examples (token ids + loss mask), one rule per training objective.

All text comes from the one state renderer (:mod:`ee_jax.records.prompts`), so what a model is
trained on is exactly what it is prompted with at inference:

* ``il`` (imitation): an ``expert_step`` -> ``policy_prompt(state)`` / ``action_target(action)``;
* ``iwm`` (implicit world modeling): every ``transition`` (expert and alternatives, valid or not) ->
  ``world_model_prompt(state, action)`` / ``world_model_target(next_observation)``;
* ``sr`` (self-reflection): a ``reflection`` -> ``policy_prompt(state)`` /
  ``reflection_target(text, expert.action)``, mixed with ``expert_step`` records rendered as in ``il``
  (weights ``data.sr_mix``).

The loss covers the target (and its end-of-turn / EOS) only. A prompt that does not fit is re-rendered
with less history and shorter observations (``prompts.shrinking_prompt_cfgs``, the same rule inference
uses) and only then cut from the start; a target that does not fit is never cut: the example is
dropped (``None``) and counted.
"""

from __future__ import annotations

from ee_jax.config import Config, PromptConfig
from ee_jax.records import prompts
from ee_jax.records.schema import State
from ee_jax.tokenizer import RenderedExample, render_example

OBJECTIVES = ("il", "iwm", "sr")
_KIND_OF = {"il": ("expert_step",), "iwm": ("transition",), "sr": ("reflection", "expert_step")}


def check_objective(objective: str) -> str:
    """``objective`` if it is one of :data:`OBJECTIVES`, else a ValueError listing them."""
    if objective not in OBJECTIVES:
        raise ValueError(f"unknown objective {objective!r}; expected one of {list(OBJECTIVES)}")
    return objective


def prompt_and_target(record: dict, objective: str, prompt_cfg: PromptConfig) -> tuple[str, str]:
    """The (prompt, target) texts of ``record`` under ``objective`` (see the module docstring)."""
    kind = record["kind"]
    if kind not in _KIND_OF[check_objective(objective)]:
        raise ValueError(f"objective {objective!r} does not train on {kind!r} records "
                         f"(it uses {list(_KIND_OF[objective])})")
    state = State.from_json(record["state"])
    if kind == "expert_step":
        return prompts.policy_prompt(state, prompt_cfg), prompts.action_target(record["action"])
    if kind == "transition":
        return (prompts.world_model_prompt(state, record["action"], prompt_cfg),
                prompts.world_model_target(record["next_observation"], prompt_cfg))
    return (prompts.policy_prompt(state, prompt_cfg),
            prompts.reflection_target(record["text"], record["expert"]["action"]))


def render_record(record: dict, objective: str, tokenizer, template, prompt_cfg: PromptConfig,
                  max_len: int) -> RenderedExample | None:
    """Token ids and loss mask of ``record`` for ``objective``, at most ``max_len`` tokens.

    Returns None when the target (with end-of-turn and BOS) alone is longer than ``max_len``: the
    target is never truncated, the caller counts the example as dropped.
    """
    # Only the prompt shrinks: a shrunk config also clips observations, and the iwm target (the next
    # observation) must stay the one rendered with ``prompt_cfg`` whatever the prompt's length.
    _, target = prompt_and_target(record, objective, prompt_cfg)
    for cfg in prompts.shrinking_prompt_cfgs(prompt_cfg):
        prompt, _ = prompt_and_target(record, objective, cfg)
        try:
            ex = render_example(tokenizer, template, prompt, target, max_len=max_len)
        except ValueError as e:
            if "never truncated" in str(e):
                return None
            raise
        if not ex.truncated:
            return ex
    return ex


def sources_for(objective: str, cfg: Config) -> dict[str, float]:
    """Record kinds an objective trains on, with their mixture weights (share of examples)."""
    check_objective(objective)
    if objective == "il":
        return {"expert_step": 1.0}
    if objective == "iwm":
        return {"transition": 1.0}
    return {k: float(w) for k, w in cfg.data.sr_mix.items()}
