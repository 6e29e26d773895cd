"""A reproducible expert for TextWorldExpress: breadth-first search over replays.

TWX's own gold agents for coin, mapreader, twc and cookingworld walk the map at random with an
unseeded ``scala.util.Random`` (``new Random()`` in each ``GameGenerator``), so every generation can
give another gold path and a collection never repeats. This search depends only on the game (seed,
fold, parameters): it replays action sequences from reset, in order of length, and returns the first
that wins. Actions are tried in sorted order, so ties break the same way on every machine.

States are told apart by what TWX reports after each step: the current room's description
(``look``), the inventory and the raw score. Two paths that reach the same room with the same
inventory are one state even if they left something different in another room; the path kept is
then the first found, which may make the result a step longer than the true shortest, never
irreproducible. The search gives up (returns ``None``) after ``max_states`` distinct states, which
bounds its cost: cookingworld's open containers and ingredients make thousands of states already at
difficulty 1, while coin needs at most a few dozen.
"""

from __future__ import annotations

import json
from collections import deque
from typing import Any

_OBSERVING = ("look around", "inventory", "examine ")
"""Actions that never change a TWX game's state: not worth a replay."""


def _key(result: dict) -> tuple:
    return result["look"], result["inventory"], result["scoreRaw"]


def _actions(result: dict) -> list[str]:
    return sorted(a for a in result["validActions"] if not a.startswith(_OBSERVING))


def shortest_winning_path(server: Any, seed: int, fold: str, max_states: int) -> tuple[str, ...] | None:
    """The shortest action sequence that wins the loaded TWX game at ``seed`` in ``fold`` (ties broken
    by sorted action text; actions that only observe are skipped), or ``None`` if none is found within
    ``max_states`` distinct states.

    ``server`` is TWX's ``PythonInterface`` with the game already loaded; its episode is left at an
    arbitrary state (callers reset)."""

    def replay(path: tuple[str, ...]) -> dict:
        result = json.loads(server.generateNewGameJSON(seed, fold, False))
        for action in path:
            result = json.loads(server.stepJSON(action))
        return result

    start = replay(())
    seen = {_key(start)}
    frontier = deque([((), _actions(start))])
    while frontier:
        path, actions = frontier.popleft()
        for action in actions:
            child = path + (action,)
            result = replay(child)
            if result["tasksuccess"]:
                return child
            key = _key(result)
            if result["taskfailure"] or key in seen:
                continue
            if len(seen) >= max_states:
                return None
            seen.add(key)
            frontier.append((child, _actions(result)))
    return None
