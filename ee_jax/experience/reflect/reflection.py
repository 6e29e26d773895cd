"""Self-reflection prompts: one expert state, the action taken there and the alternatives' outcomes.

A :class:`ReflectionCase` is what a reflection is written about (the paper's "Self-Reflection"): the
state the agent saw, the expert's action with its outcome, and a few other actions with theirs.
:func:`reflection_messages` turns it into a chat (system + user) asking for a first-person monologue
that compares the actions by what they led to and ends by stating the expert action.

Slot names are neutral on purpose: the prompt shows every action by its own text, the other actions
as unnumbered bullets, and never calls any of them "expert", "option 1" or the like, so such labels
have nothing to leak from (:mod:`ee_jax.experience.reflect.filters` drops reflections that use them anyway).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import random
from collections.abc import Sequence

from ee_jax.config import PromptConfig
from ee_jax.records.prompts import clip_text, context_lines
from ee_jax.records.schema import Outcome, State

PROMPT_VERSION = "reflect-v2"
"""Version of the prompt text below; recorded in the manifest's generator settings."""

SYSTEM = ("You are the agent acting in a text environment. Before each move you think it through in a short "
          "inner monologue, in the first person, grounded only in what you have observed.")
TAKEN_HEADER = "The action that was taken"
OTHERS_HEADER = "Other actions that could have been taken, and what they lead to:"


@dataclasses.dataclass(frozen=True)
class ReflectionCase:
    """One reflection's material: the state, the expert action's outcome and the alternatives' outcomes."""

    state: State
    expert: Outcome
    alternatives: list[Outcome]
    env: str

    def key(self) -> str:
        """A stable id of this case (environment, state, expert action): seeds are derived from it, so a
        case draws the same text whatever batch or order it is generated in."""
        blob = json.dumps([self.env, self.state.to_json(), self.expert.action], sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]


def case_seed(seed: int, case: ReflectionCase) -> int:
    """The sampling seed of ``case`` under run seed ``seed`` (a 31-bit int, stable across machines)."""
    digest = hashlib.sha256(f"{seed}/{case.key()}".encode()).digest()
    return int.from_bytes(digest[:4], "little") & 0x7FFFFFFF


def _norm(text: str) -> str:
    return " ".join(text.lower().split())


def choose_alternatives(expert: Outcome, candidates: Sequence[Outcome], n: int, seed: int) -> list[Outcome]:
    """Up to ``n`` of ``candidates`` to show next to ``expert``, deterministic in ``seed``.

    Rules: never the expert action itself (compared case- and whitespace-insensitively), one outcome
    per distinct action; outcomes whose next observation differs from the expert's and from those
    already picked come first (a different outcome is what a comparison can use), then repeated
    outcomes, and last those that look exactly like the expert's.
    Invalid actions are kept: "nothing happens" is informative too. The result does not depend on the
    order of ``candidates``: they are sorted by action, then shuffled by ``seed``.
    """
    if n <= 0:
        return []
    by_action: dict[str, Outcome] = {}
    for c in sorted(candidates, key=lambda o: (o.action, o.observation)):
        a = _norm(c.action)
        if a and a != _norm(expert.action) and a not in by_action:
            by_action[a] = c
    pool = list(by_action.values())
    random.Random(seed).shuffle(pool)
    same_as_expert, seen = _norm(expert.observation), set()
    new, repeats, like_expert = [], [], []
    for c in pool:
        obs = _norm(c.observation)
        (like_expert if obs == same_as_expert else repeats if obs in seen else new).append(c)
        seen.add(obs)
    return (new + repeats + like_expert)[:n]


def _outcome_text(o: Outcome, cfg: PromptConfig, show_reward: bool = False) -> str:
    """The observation quoted; with ``show_reward`` (privileged) also the environment's hidden verdict
    (validity, completion, end of episode, reward), which the paper's prompt does not show."""
    notes = []
    if show_reward:
        if not o.valid:
            notes.append("the environment did not accept this action")
        if o.won:
            notes.append("the task was completed")
        elif o.done:
            notes.append("the episode ended")
        elif o.reward > 0:
            notes.append(f"progress +{o.reward:g}")
        elif o.reward < 0:
            notes.append(f"progress {o.reward:g}")
    quoted = json.dumps(clip_text(o.observation.strip(), cfg.max_observation_chars), ensure_ascii=False)
    return quoted + (f" ({'; '.join(notes)})" if notes else "")


def _instruction(action: str, max_words: int) -> str:
    length = f" Use at most {max_words} words." if max_words > 0 else ""
    return (
        "Write the inner monologue you have right before acting. Think as the agent about to act, in the first "
        "person: work out what the task needs, compare what each of the actions above leads to, and explain why "
        f"`{action}` is the best move now, pointing at the constraints and clues in the observations. Use only "
        "the information given here. Refer to every action by its own text, never by a number, a letter or a "
        "label, and do not talk about this prompt or these instructions." + length +
        f" End with one sentence that states the action you will take: `{action}`.")


def reflection_messages(case: ReflectionCase, prompt_cfg: PromptConfig, *, max_words: int = 0,
                        show_reward: bool = False) -> list[dict]:
    """The chat asking for ``case``'s reflection: ``[{"role": "system", ...}, {"role": "user", ...}]``.

    The user turn holds the situation (goal, recent steps, current observation: the same pieces and
    clipping as the policy prompt), the action taken with its outcome, the other actions with theirs as
    unnumbered bullets, then the instruction. ``max_words`` > 0 adds a length limit to it. Outcomes are the
    observed next observations only, as in the paper; ``show_reward=True`` (``experience.reflect.show_reward``,
    privileged and labelled in reports) adds the environment's reward / won / done / valid notes.
    """
    lines = ["Here is the situation.", *context_lines(case.state, prompt_cfg), ""]
    taken = _outcome_text(case.expert, prompt_cfg, show_reward)
    lines.append(f"{TAKEN_HEADER}: `{case.expert.action}`, which leads to: {taken}")
    if case.alternatives:
        lines.append("")
        lines.append(OTHERS_HEADER)
        for o in case.alternatives:
            lines.append(f"- `{o.action}`, which leads to: {_outcome_text(o, prompt_cfg, show_reward)}")
    lines += ["", _instruction(case.expert.action, max_words)]
    return [{"role": "system", "content": SYSTEM}, {"role": "user", "content": "\n".join(lines)}]

