"""The ``grounded`` reflection generator's text: a deterministic monologue from observed states alone.

The default writer of reflections for scratch models. It sees exactly what the paper's reflection prompt
shows a language model: the goal, the current observation, the action taken and its observed next
observation, the other actions and their observed next observations. Nothing else: no reward, score,
won / valid / done flags, no environment name and no per-environment notes (this module imports no
environment code and never reads those fields of :class:`~ee_jax.records.schema.Outcome`).

:func:`grounded_rationale` writes, in order: the goal; what the agent sees now; for each other action (those
with the same outcome grouped) what it would lead to; what the action about to be taken leads to; and a
conclusion naming that action, which appears only there, once. The comparisons are generic operations on the
observed text, the same for every environment:

* *clues*: content words of the goal that an outcome shows and the current observation did not
  ("it brings up bread and fridge, which my task names");
* *no visible change*: an outcome whose text equals the current observation;
* *same place*: another action whose outcome equals the chosen action's.

Sentence frames vary between cases: each pick is drawn from a small set with a generator seeded by a hash of
the state and the action taken, so the same case always gets the same text and cases differing only in hidden
flags (or the environment's name) get identical text. Every text passes
:func:`ee_jax.experience.reflect.filters.check_reflection` with the default bounds (tested on every built-in
environment).
"""

from __future__ import annotations

import hashlib
import json
import random
import re

from ee_jax.experience.reflect.filters import case_texts, is_repetitive
from ee_jax.experience.reflect.quoting import GOAL_CHARS, QUOTE_CHARS, code, join_actions, quote
from ee_jax.experience.reflect.reflection import ReflectionCase

GROUNDED_VERSION = "grounded-v1"
"""Version of the text rules below; recorded in the manifest's generator settings."""

MAX_CLUES = 3
QUOTE_LIMITS = (QUOTE_CHARS, 90, 60)  # characters of each quoted observation: tried in order (see below)
# Function words never count as clues (a goal's "the", "with", "some" shows up in every observation).
_STOP = frozenset("""
a an the and or but if then than of in on at to for from with without into onto by as is are was were be been
being it its this that these those there here you your yours i me my we our they them their he she his her
some any all each every no not nothing none can could should would will shall may might must do does did done
have has had get got go goes put make made what which who whom when where why how also only just very more most
less least one two three up down out off over under again after before now so such own same other
""".split())  # noqa: SIM905 (a word list reads better as text)

_GOAL = ("My task: {goal}.", "The goal is {goal}.", "What I have to do: {goal}.", "I am asked to do this: {goal}.")
_NOW = ("Right now I see {q}.", "At this point the environment shows {q}.", "What I have in front of me: {q}.",
        "Currently: {q}.")
_ALT = ("If I did {acts} instead, I would get {q}{why}.", "Trying {acts} gives {q}{why}.",
        "With {acts}, the result would be {q}{why}.", "Doing {acts} leads to {q}{why}.",
        "Had I picked {acts}, I would see {q}{why}.")
_ALT_PAIR = ("Both {acts} give {q}{why}.", "Either of {acts} leads to {q}{why}.")
_ALT_MANY = ("Each of {acts} gives {q}{why}.", "{acts} all end in {q}{why}.")
_MINE = ("The move I am about to make leads to {q}{why}.", "What I will do next gives {q}{why}.",
         "My next move brings {q}{why}.", "The step I choose results in {q}{why}.")
_END = ("So I will {a}.", "That is why I choose {a}.", "So my action is {a}.", "Therefore I will do {a}.")


def _words(text: str) -> list[str]:
    return re.findall(r"[a-z][a-z0-9]*", text.lower())


def _norm(text: str) -> str:
    return " ".join(text.split()).lower()


def goal_words(goal: str) -> list[str]:
    """The goal's content words, in order, once each (no function words, none shorter than 3 letters)."""
    seen: dict[str, None] = {}
    for w in _words(goal):
        if len(w) >= 3 and w not in _STOP:
            seen.setdefault(w, None)
    return list(seen)


def clues(goal: str, now: str, outcome: str, others: list[str] = ()) -> list[str]:
    """Goal words that ``outcome`` shows, the current observation ``now`` did not, and not every one of the
    ``others`` (the case's other outcomes) shows too: what sets this outcome apart (at most ``MAX_CLUES``)."""
    shown, before = set(_words(outcome)), set(_words(now))
    everywhere = set.intersection(*(set(_words(o)) for o in others)) if others else set()
    return [w for w in goal_words(goal) if w in shown and w not in before and w not in everywhere][:MAX_CLUES]


def _and(words: list[str]) -> str:
    return words[0] if len(words) == 1 else ", ".join(words[:-1]) + " and " + words[-1]


class _Picker:
    """Draws from each pool of phrasings without repeating one until the pool is used up."""

    def __init__(self, rng: random.Random):
        self.rng, self.left = rng, {}

    def __call__(self, pool: tuple[str, ...]) -> str:
        left = self.left.get(pool)
        if not left:
            left = self.left[pool] = list(pool)
            self.rng.shuffle(left)
        return left.pop()


_SAME_AS_NOW = ("; nothing I can see would change", "; it leaves things as they are")
_SAME_AS_MINE = ("; my own move ends up in the same place", "; that is where my move leads too")
_CLUE = (", which brings up {w} from my task", "; it shows {w}, which my task names",
         ", and {w} from my task appear there")
_NO_CLUE = ("; none of it points at what my task names", "; nothing there is named in my task",
            "; it shows nothing new that my task mentions")


def _why(case: ReflectionCase, observation: str, mine: str | None, pick: _Picker) -> str:
    """The clause after an outcome: a visible non-change, the same outcome as the chosen move, or clues."""
    now = without_goal(case.state.observation, case.state.goal)
    if _norm(observation) == _norm(now):
        return pick(_SAME_AS_NOW)
    if mine is not None and _norm(observation) == _norm(mine):
        return pick(_SAME_AS_MINE)
    outcomes = [without_goal(o.observation, case.state.goal) for o in (case.expert, *case.alternatives)]
    others = [o for o in outcomes if _norm(o) != _norm(observation)]
    found = clues(case.state.goal, now, observation, others)
    return pick(_CLUE).format(w=_and(found)) if found else pick(_NO_CLUE)


def without_goal(observation: str, goal: str) -> str:
    """``observation`` without a restatement of the goal (pages that repeat the instruction on top): the
    text up to and including the goal's first occurrence and the punctuation after it, when it has one."""
    at = observation.lower().find(goal.strip().lower()) if goal.strip() else -1
    if at < 0:
        return observation
    rest = observation[at + len(goal.strip()):].lstrip(" .;:,\n")
    return rest or observation


def _seed(case: ReflectionCase) -> int:
    """The phrasing seed: a hash of the state and the action taken (not the environment's name)."""
    blob = json.dumps([case.state.to_json(), case.expert.action], sort_keys=True)
    return int.from_bytes(hashlib.sha256(blob.encode()).digest()[:8], "little")


def _write(case: ReflectionCase, limit: int) -> str:
    rng = random.Random(_seed(case))
    pick = _Picker(rng)
    goal = case.state.goal
    now, mine = without_goal(case.state.observation, goal), without_goal(case.expert.observation, goal)
    parts = [pick(_GOAL).format(goal=quote(case.state.goal, GOAL_CHARS, whole=True)),
             pick(_NOW).format(q=quote(now, limit))]
    groups: dict[str, list] = {}
    for o in case.alternatives:
        groups.setdefault(_norm(o.observation), []).append(o)
    for outs in groups.values():
        obs = without_goal(outs[0].observation, goal)
        form = pick(_ALT) if len(outs) == 1 else pick(_ALT_PAIR if len(outs) == 2 else _ALT_MANY)
        sentence = form.format(acts=join_actions([o.action for o in outs]), q=quote(obs, limit),
                               why=_why(case, obs, mine, pick))
        parts.append(sentence if sentence.startswith("`") else sentence[0].upper() + sentence[1:])
    parts.append(pick(_MINE).format(q=quote(mine, limit), why=_why(case, mine, None, pick)))
    parts.append(pick(_END).format(a=code(case.expert.action)))
    return " ".join(parts)


def grounded_rationale(case: ReflectionCase) -> str:
    """The deterministic monologue of ``case`` (rules in the module docstring).

    Observations are quoted by their leading sentences; where outcomes look so alike that the text would
    repeat itself (the ``repetitive`` filter), they are quoted shorter."""
    actions = [case.expert.action, *(o.action for o in case.alternatives)]
    source = case_texts(case)
    text = ""
    for limit in QUOTE_LIMITS:
        text = _write(case, limit)
        if not is_repetitive(text, actions, source):
            break
    return text
