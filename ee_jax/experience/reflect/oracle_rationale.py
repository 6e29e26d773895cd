"""The ``oracle_template`` reflection generator's text: a rationale from the environment's hidden feedback.

**Privileged** (reports label it "privileged: reward + hand-written notes"): its verdicts come from the
environment's reward / won / valid / done flags, which the paper's reflection prompt never shows, and it
adds hand-written per-environment notes. Kept as a labelled variant for comparison; the default writer
is :mod:`ee_jax.experience.reflect.grounded`. No language model, no randomness.

:func:`oracle_template_rationale` states the goal, what the expert action leads to (and what it achieves: the
task completed, progress, or an environment-specific reason), then what each alternative led to, quoting the
leading sentences of its observation (at most ``QUOTE_CHARS`` characters, boilerplate the environment repeats
on every page left out) and saying why that is worse (rejected, ends the episode without success, loses or
makes less progress, or no closer to the goal), and ends with "So I will `<expert action>`.". Alternatives
with the same observation are grouped in one sentence.

Environment-specific notes come from a small table keyed by environment name (:data:`NOTES`): a
price above the budget in the goal (``shop``, ``travel``), the option value the goal asks for
(``shop``), the booking system's own notes (``travel``), the object the goal needs (``household``),
the request being worked on (``tools``). Every text passes :func:`ee_jax.experience.reflect.filters.check_reflection`
with the default bounds by construction (the tests check it on cases from every built-in environment).
"""

from __future__ import annotations

import re
from collections.abc import Callable

from ee_jax.envs.worlds.household.world import OBJECTS, PLURAL
from ee_jax.experience.reflect.quoting import GOAL_CHARS, code, join_actions, quote
from ee_jax.experience.reflect.reflection import ReflectionCase
from ee_jax.records.schema import Outcome, State

RATIONALE_VERSION = "template-v1"
"""Version of the text rules below; recorded in the manifest's generator settings."""


# ------------------------------------------------------------------------------------------- env notes
class Notes:
    """Environment-specific clauses; the base class says nothing specific. Clauses have no final
    punctuation; "" means nothing to add."""

    def strip(self, observation: str, state: State) -> str:
        """The part of an observation worth quoting (drop boilerplate the environment repeats)."""
        return observation

    def focus(self, state: State) -> str:
        """A sentence on what the agent is working on right now, or ""."""
        return ""

    def expert(self, case: ReflectionCase) -> str:
        """Why the expert action helps (a clause starting with "and", "which", or an independent one)."""
        return ""

    def alternative(self, alt: Outcome, case: ReflectionCase) -> str:
        """Why ``alt`` (valid, not ending the episode) is worse than the expert action: an independent clause."""
        return ""


_MONEY = r"\$(\d+(?:\.\d+)?)"


def _money(x: float) -> str:
    return f"${x:.2f}" if x != int(x) else f"${int(x)}"


class ShopNotes(Notes):
    """WebShop-like pages: the instruction is repeated on every page; prices vs the goal's budget;
    option values vs the ones the goal asks for."""

    def strip(self, observation: str, state: State) -> str:
        obs = re.sub(r"^Instruction: .*?\.\s+(?=\[|Results|No products|Description|You bought|Invalid)", "",
                     observation.strip(), count=1, flags=re.DOTALL)
        m = re.match(r"(\[\w+\]) (.*?)\. Price: (\$[\d.]+)\..*?(Selected: [^.]*)\.", obs)
        if m:  # a product page: after clicking an option on the same page only the selection changed
            same = m.group(1) in state.observation and "Selected:" in state.observation
            return m.group(4) if same else f"{m.group(1)} {m.group(2)}, price {m.group(3)}"
        return obs

    @staticmethod
    def budget(goal: str) -> float | None:
        m = re.search(r"price lower than (\d+(?:\.\d+)?) dollars", goal)
        return float(m.group(1)) if m else None

    @staticmethod
    def price(observation: str) -> float | None:
        m = re.search(r"Price: " + _MONEY, observation) or re.search(r"You bought .*? for " + _MONEY, observation)
        return float(m.group(1).rstrip(".")) if m else None

    @staticmethod
    def wanted_options(goal: str) -> dict[str, str]:
        return {t.strip(): v.strip() for t, v in re.findall(r"(?:with|and) ([a-z ]+?): ([^,]+)", goal)}

    @staticmethod
    def page_options(observation: str) -> dict[str, list[str]]:
        return {t.strip(): re.findall(r"\[([^\]]+)\]", vals)
                for t, vals in re.findall(r"([a-z ]+): ((?:\[[^\]]+\]\s*)+);", observation)}

    def expert(self, case: ReflectionCase) -> str:
        budget, price = self.budget(case.state.goal), self.price(case.expert.observation)
        if budget is not None and price is not None and price < budget:
            return f"it costs {_money(price)}, under the {_money(budget)} budget"
        return ""

    def alternative(self, alt: Outcome, case: ReflectionCase) -> str:
        budget, price = self.budget(case.state.goal), self.price(alt.observation)
        if budget is not None and price is not None and price >= budget:
            return f"that costs {_money(price)}, more than the {_money(budget)} budget"
        m = re.fullmatch(r"click\[(.+)\]", alt.action.strip())
        if m:
            value = m.group(1).strip().lower()
            wanted = self.wanted_options(case.state.goal)
            for t, values in self.page_options(case.state.observation).items():
                if value in values and t in wanted:
                    if wanted[t] != value:
                        return f"the instruction asks for {t}: {wanted[t]}, not {value}"
                    return f"I need that {t} too, but {code(case.expert.action)} comes first"
        return ""


class TravelNotes(Notes):
    """Trip planning: the spending line and the booking system's notes after each set/clear."""

    def strip(self, observation: str, state: State) -> str:
        # the spending line and the booking notes are said by the notes below; the empty slots are noise here
        obs = re.sub(r"\s*You have spent .*? budget(?: \(over by \$\d+(?:\.\d+)?\))?\.", "", observation)
        obs = re.sub(r"\s*Note: .*?\.(?=\s|$)", "", obs)
        return re.sub(r"\s*(?:Empty: [^.]*|All slots are filled; submit plan when ready)\.", "", obs)

    @staticmethod
    def spent(observation: str) -> tuple[float, float] | None:
        m = re.search(r"You have spent " + _MONEY + " of your " + _MONEY + " budget", observation)
        return (float(m.group(1)), float(m.group(2))) if m else None

    @staticmethod
    def note(observation: str) -> str:
        m = re.search(r"Note: (.*?)\.(?:\s|$)", observation)
        return m.group(1) if m else ""

    def expert(self, case: ReflectionCase) -> str:
        money = self.spent(case.expert.observation)
        if money and money[0] <= money[1]:
            return f"that keeps the spending at {_money(money[0])} of the {_money(money[1])} budget"
        if case.expert.action.startswith("view "):
            return "it lists the entries I can book for the next empty part of the plan"
        if case.expert.action.startswith("clear "):
            return "the plan cannot be completed within the constraints while that booking stays"
        return ""

    def alternative(self, alt: Outcome, case: ReflectionCase) -> str:
        mine, theirs = self.spent(case.expert.observation), self.spent(alt.observation)
        if theirs and theirs[0] > theirs[1]:
            return f"that takes the spending to {_money(theirs[0])}, over the {_money(theirs[1])} budget"
        note = self.note(alt.observation)
        if note:
            return f"the booking system warns that {note}"
        if alt.action.startswith("clear "):
            return "that only undoes a booking I already made"
        if alt.action.startswith("view "):
            return "that listing is not the one I need now"
        if mine and theirs and alt.action.startswith("set "):
            if theirs[0] > mine[0]:
                return f"that costs more: {_money(theirs[0])} spent instead of {_money(mine[0])}"
            if theirs[0] == mine[0]:
                return f"it costs the same, but {code(case.expert.action)} is the booking to make first"
            return "it is cheaper, but the plan has to meet every constraint of the task"
        return ""


class HouseholdNotes(Notes):
    """Household: the object kind the goal names."""

    @staticmethod
    def targets(goal: str) -> list[str]:
        """Object kinds named in ``goal`` (singular or plural), in vocabulary order."""
        words = set(re.findall(r"[a-z]+", goal.lower()))
        return [k for k in OBJECTS if k in words or PLURAL.get(k, k + "s").split()[0] in words]

    def _thing(self, goal: str) -> str:
        found = self.targets(goal)
        return found[0] if found else ""

    def expert(self, case: ReflectionCase) -> str:
        thing = self._thing(case.state.goal)
        if not thing:
            return ""
        if re.search(rf"\b{thing} \d", case.expert.observation.lower()):
            return f"and now I can see the {thing} the task is about"
        return f"which brings me closer to the {thing}"

    def alternative(self, alt: Outcome, case: ReflectionCase) -> str:
        thing = self._thing(case.state.goal)
        if thing and thing not in (alt.action + " " + alt.observation).lower():
            return f"that does not get me closer to the {thing}"
        return ""


class ToolsNotes(Notes):
    """Function calling: observations end with the working directory and the current request."""

    def strip(self, observation: str, state: State) -> str:
        return observation.split("\n[", 1)[0]

    @staticmethod
    def request(observation: str) -> tuple[str, str] | None:
        m = re.findall(r"Request (\d+/\d+): ([^\n]*)", observation)
        return m[-1] if m else None

    def focus(self, state: State) -> str:
        req = self.request(state.observation)
        return f"Right now I am working on request {req[0]}: {quote(req[1])}." if req else ""

    def expert(self, case: ReflectionCase) -> str:
        m = re.search(r"Requests? ([\d-]+) done", case.expert.observation)
        if m:
            return f"which completes request {m.group(1)}"
        return "which is the next step this request needs"


NOTES: dict[str, Callable[[], Notes]] = {"shop": ShopNotes, "travel": TravelNotes, "household": HouseholdNotes,
                                         "tools": ToolsNotes}


# ------------------------------------------------------------------------------------------- the text
def _clause(note: str) -> str:
    """A note attached to a sentence: relative clauses after a comma, others after a semicolon."""
    if not note:
        return ""
    return f", {note}" if note.startswith(("and ", "which ")) else f"; {note}"


def _expert_sentence(case: ReflectionCase, notes: Notes) -> str:
    e = case.expert
    q = quote(notes.strip(e.observation, case.state))
    a = code(e.action)
    if e.won:
        return f"Doing {a} completes the task: the environment answers {q}."
    if e.done:
        return f"Doing {a} ends the episode with {q}, the best result within reach."
    if e.reward > 0:
        return f"Doing {a} makes progress toward the goal: {q}{_clause(notes.expert(case))}."
    return f"Doing {a} leads to {q}{_clause(notes.expert(case))}."


_NO_PROGRESS = ("not move me forward", "make no progress")


def _verdict(alt: Outcome, case: ReflectionCase) -> str:
    """How ``alt`` compares, as a verb phrase after "would"."""
    e = case.expert
    if not alt.valid:
        return "not be accepted here"
    if alt.done and not alt.won:
        return "end the episode without success"
    if alt.reward < 0:
        return "set my progress back"
    if 0 < alt.reward < e.reward:
        return f"make less progress than {code(e.action)}"
    if alt.reward > 0:
        return f"help too, but {code(e.action)} is the more direct step"
    if " ".join(alt.observation.split()) == " ".join(e.observation.split()):
        return f"give the same result as {code(e.action)}, so it is no better"
    return _NO_PROGRESS[0] if e.won or e.reward > 0 else _NO_PROGRESS[1]


_ALT_FORMS = (
    "If I did {acts} instead, I would get {q}, and {why}.",
    "Trying {acts} gives {q}; {why}.",
    "As for {acts}, the result would be {q}, so {why}.",
    "With {acts}, I would see {q}; {why}.",
)
_GROUP_FORM = "Both {acts} give {q}; {why}."
_MANY_FORM = "Each of {acts} gives {q}; {why}."


def _alternative_sentences(case: ReflectionCase, notes: Notes) -> list[str]:
    groups: dict[str, list[Outcome]] = {}
    for o in case.alternatives:
        groups.setdefault(" ".join(o.observation.split()), []).append(o)
    out = []
    for i, outs in enumerate(groups.values()):
        alt = outs[0]
        verdict = _verdict(alt, case)
        note = notes.alternative(alt, case) if alt.valid and not alt.done else ""
        pronoun = "it" if len(outs) == 1 else "they"
        # an environment-specific reason says more than "no progress"; otherwise it follows the verdict
        why = note if note and verdict in _NO_PROGRESS else f"{pronoun} would {verdict}" + (f"; {note}" if note else "")
        form = _ALT_FORMS[i % len(_ALT_FORMS)] if len(outs) == 1 else _GROUP_FORM if len(outs) == 2 else _MANY_FORM
        out.append(form.format(acts=join_actions([o.action for o in outs]), why=why,
                               q=quote(notes.strip(alt.observation, case.state))))
    return out


def oracle_template_rationale(case: ReflectionCase) -> str:
    """The deterministic rationale of ``case`` (rules in the module docstring)."""
    notes = NOTES.get(case.env, Notes)()
    parts = [f"My task: {quote(case.state.goal, GOAL_CHARS, whole=True)}."]
    focus = notes.focus(case.state)
    if focus:
        parts.append(focus)
    parts.append(_expert_sentence(case, notes))
    parts += _alternative_sentences(case, notes)
    parts.append(f"So I will {code(case.expert.action)}.")
    return " ".join(parts)
