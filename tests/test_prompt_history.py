"""The prompt's history window: ``sliding`` (unchanged text: exactly the last ``history_window`` steps) and
``append`` (consecutive prompts extend each other for ``history_window`` turns, so the rollout engine reuses
their cache; never less history than ``sliding``)."""

import pytest

from ee_jax.config import ConfigError, PromptConfig, load_config
from ee_jax.records.prompts import policy_prompt
from ee_jax.records.schema import State, Step

HISTORY = tuple(Step(f"go {i}", f"You are in room {i}.") for i in range(9))


def _state(n: int) -> State:
    return State("find the coin", HISTORY[:n], f"You are in room {n}.", ("go 1", "look"))


def _context(text: str) -> str:
    """The prompt up to the current observation (what the next prompt may extend)."""
    return text[: text.index("Current observation:")]


def test_sliding_shows_the_last_steps_as_before():
    text = policy_prompt(_state(5), PromptConfig(history_window=2))
    assert "Previous steps (the last 2 of 5):\n> go 3\nYou are in room 3.\n> go 4\nYou are in room 4.\n" in text
    assert "go 2" not in text
    assert "Previous steps" not in policy_prompt(_state(0), PromptConfig(history_window=2))
    assert "Previous steps" not in policy_prompt(_state(3), PromptConfig(history_window=0))


@pytest.mark.parametrize("w", [1, 2, 3])
def test_append_prompts_extend_each_other_between_window_moves(w):
    cfg = PromptConfig(history_window=w, history_mode="append")
    texts = [policy_prompt(_state(n), cfg) for n in range(len(HISTORY) + 1)]
    moves = 0
    for n in range(1, len(texts)):
        shown = sum(f"> go {i}\n" in texts[n] for i in range(n))
        assert shown == n if n < w else w <= shown <= 2 * w - 1
        assert all(f"> go {i}\n" in texts[n] for i in range(n - min(n, w), n))  # at least sliding's steps
        if _context(texts[n]).startswith(_context(texts[n - 1])):
            continue
        moves += 1
        assert n >= 2 * w and n % w == 0 and f"(from step {n - w + 1})" in texts[n]
    assert moves == len([n for n in range(2 * w, len(texts)) if n % w == 0])


def test_unknown_history_mode_names_the_key():
    with pytest.raises(ConfigError, match="prompt.history_mode"):
        load_config(None, ["prompt.history_mode=growing"])
