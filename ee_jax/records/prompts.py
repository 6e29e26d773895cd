"""The one state renderer: the text of every prompt and target the policy trains on and acts on.

Imitation, world modeling, self-reflection, evaluation and RL all build their text here, so training
and inference can never disagree on a prompt:

* :func:`policy_prompt` (state -> what the agent reads before acting);
* :func:`action_target` / :func:`reflection_target` (what the policy emits: the action, or a
  reflection followed by ``Action: <action>``) and :func:`parse_action` (its inverse, used at
  inference for both);
* :func:`world_model_prompt` (state + action, under its own instruction, so a policy trained on it
  never learns to emit observations after an action) and :func:`world_model_target`.
"""

from __future__ import annotations

import dataclasses

from ee_jax.config import PromptConfig
from ee_jax.records.schema import State

ACTION_MARKER = "Action:"
POLICY_INSTRUCTION = "You are an agent in a text environment. Reply with your next action."
WORLD_MODEL_INSTRUCTION = ("You are a world model of a text environment. Predict the observation the "
                           "environment returns after the action.")
_ELLIPSIS = " [...] "


def clip_text(text: str, limit: int) -> str:
    """``text`` if it fits in ``limit`` characters, else its head and tail around a ``[...]`` marker."""
    if len(text) <= limit:
        return text
    keep = max(0, limit - len(_ELLIPSIS))
    head = keep - keep // 3
    return text[:head] + _ELLIPSIS + text[len(text) - (keep - head):]


def history_start(n: int, cfg: PromptConfig) -> int:
    """The first of ``n`` past steps a prompt shows. ``sliding``: the last ``history_window``. ``append``: the
    window starts at a multiple of ``history_window`` and grows to ``2 * history_window - 1`` steps before it
    moves on, so each prompt extends the previous one for ``history_window`` turns (always at least as much
    history as ``sliding`` shows)."""
    w = cfg.history_window
    if w <= 0:
        return n
    if cfg.history_mode == "append":
        return w * max(0, (n - w) // w)
    return max(0, n - w)


def context_lines(state: State, cfg: PromptConfig) -> list[str]:
    """Task, the last ``history_window`` steps and the current observation: the situation every
    prompt (policy, world model, reflection) starts from."""
    lines = [f"Task: {state.goal}"]
    first = history_start(len(state.history), cfg)
    window = state.history[first:]
    if window:
        if cfg.history_mode == "append":  # a header that stays the same while the window grows
            lines.append("Previous steps" + (f" (from step {first + 1})" if first else "") + ":")
        else:
            lines.append("Previous steps" + (f" (the last {len(window)} of {len(state.history)})" if first else "")
                         + ":")
        for s in window:
            lines.append(f"> {s.action}")
            lines.append(clip_text(s.observation, cfg.max_observation_chars))
    lines.append("Current observation:")
    lines.append(clip_text(state.observation, cfg.max_observation_chars))
    return lines


def admissible_line(admissible: tuple[str, ...] | list[str] | None, cfg: PromptConfig) -> str | None:
    """The admissible-actions line (sorted, at most ``max_admissible``), or None when not shown."""
    if admissible is None or not cfg.show_admissible:
        return None
    shown = sorted(admissible)
    more = len(shown) - cfg.max_admissible if cfg.max_admissible and len(shown) > cfg.max_admissible else 0
    if more:
        shown = shown[: cfg.max_admissible]
    return "Admissible actions: " + " | ".join(shown) + (f" | ... ({more} more)" if more else "")


def policy_prompt(state: State, cfg: PromptConfig) -> str:
    """What the agent reads before acting: task, recent steps, current observation, admissible actions."""
    lines = [POLICY_INSTRUCTION, *context_lines(state, cfg)]
    adm = admissible_line(state.admissible, cfg)
    if adm:
        lines.append(adm)
    lines.append("Next action?")
    return "\n".join(lines) + "\n"


def world_model_prompt(state: State, action: str, cfg: PromptConfig) -> str:
    """The world-model question for (state, action): its own instruction, the action, then the slot."""
    lines = [WORLD_MODEL_INSTRUCTION, *context_lines(state, cfg), f"Action taken: {action}", "Next observation?"]
    return "\n".join(lines) + "\n"


def shrinking_prompt_cfgs(cfg: PromptConfig) -> list[PromptConfig]:
    """``cfg``, then ever tighter versions of it (history halved down to none, then observations
    clipped to 600 and 200 characters): the order in which every stage shortens a prompt that does not
    fit the model's context, so training and inference shorten it the same way. The instruction and
    the current observation's head and tail survive; only when even the last one is too long are
    tokens cut from the start."""
    out = [cfg]
    h = cfg.history_window
    while h > 0:
        h //= 2
        out.append(dataclasses.replace(out[-1], history_window=h))
    for chars in (600, 200):
        if chars < out[-1].max_observation_chars:
            out.append(dataclasses.replace(out[-1], max_observation_chars=chars))
    return out


def world_model_target(next_observation: str, cfg: PromptConfig) -> str:
    return clip_text(next_observation, cfg.max_observation_chars)


def action_target(action: str) -> str:
    """The policy's reply for imitation: the action alone."""
    return action


def reflection_target(reflection: str, action: str) -> str:
    """The policy's reply for self-reflection: the reflection, then the action on its own line."""
    return f"{reflection.strip()}\n{ACTION_MARKER} {action}"


def parse_action(reply: str) -> str:
    """The action in a policy reply: the text after the last ``Action:`` marker (reflection replies),
    else the reply's first non-empty line (imitation replies)."""
    idx = reply.rfind(ACTION_MARKER)
    text = reply[idx + len(ACTION_MARKER):] if idx >= 0 else reply
    for line in text.strip().splitlines():
        if line.strip():
            return line.strip()
    return ""
