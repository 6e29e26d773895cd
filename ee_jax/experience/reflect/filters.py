"""Reflection filters: which generated reflections are kept, and why the others are dropped.

:func:`check_reflection` applies the checks below in this order and reports the first that fails
(the manifest counts one reason per dropped reflection, named in :data:`FILTER_REASONS`):

``empty``
    nothing but whitespace.
``too_short`` / ``too_long``
    fewer than ``min_words`` / more than ``max_words`` whitespace-separated words (``max_words`` 0:
    no upper bound).
``leaked_label``
    a slot label of the prompt or a label-like name for an action (:data:`LABEL_PATTERNS`, case-
    insensitive): "expert", "the chosen/correct/given/taken action", "action 2", "option B" (a
    capital letter or a number: the lowercase "size option m" of a shop page is legitimate),
    "alternative 3", "candidate #1", "slot 2", a template placeholder like ``{expert_action}`` or the
    prompt's own headers ("the action that was taken"). A match that also occurs in the case's own
    texts (goal, observations, actions) is the environment speaking, not a leak, and is ignored.
``repetitive``
    duplicated or looping text, after each action text of the case is replaced by one token of its
    own (reflections mention actions several times, and a long JSON call would otherwise count as a
    loop): a sentence of at least 4 words that occurs more often than in the case's own texts (quoting
    the same observation sentence of two outcomes is not a loop); a run of 1-3 words repeated 4 times in
    a row ("no no no no"); or, in a text of at least 20 words, more than 30% of its word 4-grams
    being repeats of an earlier 4-gram.
``contradicts_expert``
    the conclusion (the last sentence) names one of the alternatives' actions and not the expert's.
``no_conclusion``
    the conclusion names no action of the case at all.

An action is *named* in a sentence when its normalised text (lowercase, every run of non-letters
and non-digits a single space, the articles "a", "an", "the" dropped) occurs there as whole words;
longer action texts are matched first and masked, so ``go to cabinet 1`` inside ``go to cabinet 10``
or ``look`` inside ``look at mug 1`` does not count. A JSON tool call (``{"name": ..., "arguments":
{...}}``) is also named when its function name occurs as a word together with the first 8 words of
each non-empty argument value, so "I will ``cd`` into photos" names ``{"name": "cd", "arguments":
{"folder": "photos"}}``. Sentences end at ``.``, ``!`` or ``?`` followed by whitespace, or at a line
break; text in backticks and the case's action texts never split.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Iterable

from ee_jax.experience.reflect.reflection import ReflectionCase

FILTER_REASONS = ("empty", "too_short", "too_long", "leaked_label", "repetitive", "contradicts_expert",
                  "no_conclusion")

LABEL_PATTERNS = (
    r"\bexperts?\b",
    r"\bthe (?:chosen|correct|given|taken|expert|gold|reference) action\b",
    r"\baction\s*(?:#\s*)?\d+\b",
    r"\b(?:option|choice|alternative|candidate)\s*(?:#\s*)?\d+\b",
    r"\b(?:option|choice|alternative|candidate)\s+(?-i:[A-H])\b",
    r"\bslot\s*(?:#\s*)?\d+\b",
    r"[{<]\s*(?:expert|alternative|chosen|action|outcome)[_ a-z]*[}>]",
    r"\baction that was taken\b",
    r"\bactions that could have been taken\b",
)
_LABELS = re.compile("|".join(f"(?:{p})" for p in LABEL_PATTERNS), re.IGNORECASE)

NGRAM = 4
NGRAM_MIN_WORDS = 20
NGRAM_MAX_REPEAT_SHARE = 0.3
LOOP_RUN = 4
DUP_SENTENCE_MIN_WORDS = 4
JSON_VALUE_WORDS = 8

_ARTICLES = {"a", "an", "the"}
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+|\n+")


def normalise(text: str) -> str:
    """Lowercase words and numbers, single-spaced, without articles (the matching form of actions)."""
    words = re.findall(r"[a-z0-9]+", text.lower())
    return " ".join(w for w in words if w not in _ARTICLES)


def _contains(haystack: str, needle: str) -> bool:
    return bool(needle) and f" {needle} " in f" {haystack} "


def _json_call(action: str) -> tuple[str, list[str]] | None:
    """``(function name, normalised argument values)`` of a JSON tool call, else None."""
    s = action.strip()
    if not s.startswith("{"):
        return None
    try:
        call = json.loads(s)
    except ValueError:
        return None
    if not isinstance(call, dict) or not isinstance(call.get("name"), str):
        return None
    args = call.get("arguments")
    values = []
    for v in (args.values() if isinstance(args, dict) else ()):
        words = normalise(v if isinstance(v, str) else json.dumps(v)).split()[:JSON_VALUE_WORDS]
        if words:
            values.append(" ".join(words))
    return normalise(call["name"]), values


def named_actions(sentence: str, actions: Iterable[str]) -> set[str]:
    """The ``actions`` named in ``sentence`` (rules in the module docstring)."""
    text = normalise(sentence)
    found = set()
    for a in sorted(set(actions), key=lambda x: -len(normalise(x))):
        na = normalise(a)
        if _contains(text, na):
            found.add(a)
            text = f" {text} ".replace(f" {na} ", " \x00 ").strip()
    for a in set(actions) - found:
        call = _json_call(a)
        if call and _contains(text, call[0]) and all(_contains(text, v) for v in call[1]):
            found.add(a)
    return found


def _mask_actions(text: str, actions: list[str]) -> str:
    """``text`` with every occurrence of each action (case-insensitive) replaced by a token of its own."""
    for i, a in enumerate(sorted(set(actions), key=len, reverse=True)):
        if a.strip():
            text = re.sub(re.escape(a.strip()), f" actiontoken{i} ", text, flags=re.IGNORECASE)
    return text


def sentences(text: str, actions: list[str] = ()) -> list[str]:
    """``text`` split into sentences; backtick spans and the given action texts are never split."""
    protected: list[str] = []

    def hide(m: re.Match) -> str:
        protected.append(m.group(0))
        return f"\x01{len(protected) - 1}\x01"

    spans = [re.escape(a.strip()) for a in sorted(set(actions), key=len, reverse=True) if a.strip()]
    pattern = "|".join(["`[^`\n]*`", *spans])
    hidden = re.sub(pattern, hide, text, flags=re.IGNORECASE)
    parts = [p.strip() for p in _SENTENCE_END.split(hidden)]
    restore = lambda p: re.sub("\x01(\\d+)\x01", lambda m: protected[int(m.group(1))], p)
    return [restore(p) for p in parts if re.search(r"\w", p)]


def case_texts(case: ReflectionCase) -> str:
    """Every text of the case (goal, observations, actions), lowercased: what a reflection may quote."""
    st = case.state
    parts = [st.goal, st.observation, *(s.action + "\n" + s.observation for s in st.history)]
    parts += [o.action + "\n" + o.observation for o in (case.expert, *case.alternatives)]
    return "\n".join(parts).lower()


def leaked_labels(text: str, case: ReflectionCase) -> list[str]:
    """Label-like matches in ``text`` that the case's own texts do not contain."""
    source = case_texts(case)
    return [m.group(0) for m in _LABELS.finditer(text) if m.group(0).lower() not in source]


def _looping(words: list[str]) -> bool:
    for n in (1, 2, 3):
        for i in range(len(words) - n * LOOP_RUN + 1):
            unit = words[i:i + n]
            if all(words[i + k * n:i + (k + 1) * n] == unit for k in range(1, LOOP_RUN)):
                return True
    return False


def repeated_ngram_share(words: list[str], n: int = NGRAM) -> float:
    """Share of the word ``n``-grams of ``words`` that repeat an earlier one (0 when there are none)."""
    grams = [tuple(words[i:i + n]) for i in range(len(words) - n + 1)]
    if not grams:
        return 0.0
    return (len(grams) - len(set(grams))) / len(grams)


def is_repetitive(text: str, actions: list[str], source: str = "") -> bool:
    """The ``repetitive`` rule of the module docstring; ``source`` is the case's own text."""
    masked = _mask_actions(text, actions)
    counts = Counter(k for k in map(normalise, sentences(masked)) if len(k.split()) >= DUP_SENTENCE_MIN_WORDS)
    source = f" {normalise(source)} "
    if any(n > 1 and n > source.count(f" {k} ") for k, n in counts.items()):
        return True
    words = re.findall(r"[a-z0-9]+", masked.lower())
    if _looping(words):
        return True
    return len(words) >= NGRAM_MIN_WORDS and repeated_ngram_share(words) > NGRAM_MAX_REPEAT_SHARE


def conclude(text: str, case: ReflectionCase) -> str:
    """``text`` with ``So I will take `ACTION`.`` appended when its last sentence names no action of the case
    (``reflect.conclude``); unchanged otherwise, so a conclusion naming another action is still caught."""
    actions = [case.expert.action, *(o.action for o in case.alternatives)]
    parts = sentences(text, actions)
    if not text.strip() or (parts and named_actions(parts[-1], actions)):
        return text
    return text.rstrip() + f"\nSo I will take `{case.expert.action}`."


def check_reflection(text: str, case: ReflectionCase, cfg_reflect) -> tuple[str, str]:
    """``("kept", "")`` or ``("dropped", reason)`` for reflection ``text`` about ``case``.

    ``cfg_reflect`` is a :class:`~ee_jax.config.schema.ReflectConfig` (``min_words``, ``max_words``);
    the checks, their order and their exact rules are in the module docstring.
    """
    if not text.strip():
        return "dropped", "empty"
    n_words = len(text.split())
    if n_words < cfg_reflect.min_words:
        return "dropped", "too_short"
    if cfg_reflect.max_words > 0 and n_words > cfg_reflect.max_words:
        return "dropped", "too_long"
    if leaked_labels(text, case):
        return "dropped", "leaked_label"
    actions = [case.expert.action, *(o.action for o in case.alternatives)]
    if is_repetitive(text, actions, case_texts(case)):
        return "dropped", "repetitive"
    parts = sentences(text, actions)
    named = named_actions(parts[-1], actions) if parts else set()
    if case.expert.action not in named:
        return "dropped", "contradicts_expert" if named else "no_conclusion"
    return "kept", ""
