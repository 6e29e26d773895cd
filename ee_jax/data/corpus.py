"""A small procedural English corpus, so ``ee-jax lm`` runs with no download and visibly learns.

Sentences come from a seeded grammar (household scenes, shopping, simple arithmetic), which gives a
language model real structure to pick up within a few hundred CPU steps.
"""

from __future__ import annotations

import random

_PEOPLE = ["the agent", "a robot", "the cook", "my friend", "the shopper", "a child", "the teacher"]
_OBJECTS = ["mug", "apple", "book", "knife", "plate", "towel", "lamp", "shirt", "key", "bowl"]
_COLORS = ["red", "blue", "green", "white", "black", "yellow"]
_PLACES = ["cabinet", "fridge", "table", "sink", "drawer", "shelf", "microwave", "counter"]
_VERBS = [("puts", "in"), ("places", "on"), ("finds", "near"), ("cleans", "at"), ("leaves", "beside")]
_ADJ = ["clean", "dirty", "hot", "cold", "small", "large"]


def _sentence(r: random.Random) -> str:
    kind = r.random()
    if kind < 0.45:
        verb, prep = r.choice(_VERBS)
        return (f"{r.choice(_PEOPLE)} {verb} the {r.choice(_ADJ)} {r.choice(_COLORS)} "
                f"{r.choice(_OBJECTS)} {prep} the {r.choice(_PLACES)}.")
    if kind < 0.7:
        price = r.randint(5, 60)
        budget = r.randint(10, 50)
        verdict = "buys it" if price <= budget else "keeps looking"
        return (f"a {r.choice(_COLORS)} {r.choice(['shirt', 'lamp', 'bowl', 'towel'])} costs ${price}; "
                f"with a budget of ${budget} {r.choice(_PEOPLE)} {verdict}.")
    if kind < 0.85:
        a, b = r.randint(0, 20), r.randint(0, 20)
        return f"{a} plus {b} is {a + b}."
    start = r.randint(1, 30)
    return "count: " + " ".join(str(start + i) for i in range(r.randint(4, 8))) + "."


def synthetic_corpus(num_lines: int = 4000, seed: int = 0) -> list[str]:
    """``num_lines`` lines, each a few sentences; the same seed gives the same corpus."""
    r = random.Random(seed)
    return [" ".join(_sentence(r) for _ in range(r.randint(1, 3))) for _ in range(num_lines)]


def read_corpus(path: str) -> list[str]:
    """Non-empty lines of a UTF-8 text file, with a clear error for a missing or empty file."""
    try:
        with open(path, encoding="utf-8") as f:
            lines = [ln.rstrip("\n") for ln in f if ln.strip()]
    except FileNotFoundError:
        raise FileNotFoundError(f"data.text_path={path!r}: no such file") from None
    except UnicodeDecodeError as e:
        raise ValueError(f"data.text_path={path!r}: not UTF-8 text ({e})") from None
    if not lines:
        raise ValueError(f"data.text_path={path!r}: the file has no non-empty lines")
    return lines
