"""``coin``: find the coin in a small house and take it (TextWorld-Express's coin game, built in).

Rooms sit on a grid; neighbouring rooms are joined by an open doorway or by a door that starts closed.
Actions (closed space, ``admissible_actions()``): ``move north|east|south|west``, ``open door to DIR``,
``take coin``, ``look``, ``inventory``. The coin lies in a room other than the start room; taking it wins.
Difficulty 1-3: 2-4, 5-7 and 8-11 rooms, more closed doors and, from 2, loops in the floor plan. The
``ood`` split names its rooms from a vocabulary the other splits never use.

Two experts. ``expert="explore"`` (default) sees what the agent sees: it takes the coin when it is in
the room, otherwise it opens the first closed door or enters the first unvisited room in compass order,
and when the room has neither it walks back through visited rooms to the nearest one that has (a
breadth-first search over the rooms it has been in). Its moves can be read off the observations and the
history, so an imitation policy can in principle match it. ``expert="shortest"`` knows which room holds
the coin and walks the shortest path (TextWorld-Express's search expert does the same); an imitation
policy cannot know where it is going. The quickstart uses ``explore`` at difficulty 1.
"""

from __future__ import annotations

import dataclasses
import random
import re

from ee_jax.envs.base import Env, EnvError, Task, check_split

DIRECTIONS = {"north": (0, 1), "east": (1, 0), "south": (0, -1), "west": (-1, 0)}
NAMES = ("kitchen", "pantry", "corridor", "living room", "bedroom", "bathroom", "laundry room", "backyard",
         "driveway", "garage", "study", "hallway", "dining room", "attic", "cellar", "porch", "garden",
         "workshop", "nursery", "library")
OOD_NAMES = ("greenhouse", "sunroom", "mudroom", "observatory", "wine cellar", "music room", "gym", "balcony",
             "boathouse", "gallery", "playroom", "sauna")
DOORS = ("wooden door", "screen door", "sliding patio door", "frosted-glass door", "barn door", "metal door")
ROOMS = {1: (2, 4), 2: (5, 7), 3: (8, 11)}
CLOSED = {1: 0.3, 2: 0.45, 3: 0.6}  # chance that a connection is a closed door
LOOPS = {1: 0.0, 2: 0.25, 3: 0.35}  # chance that two rooms side by side get a second connection
GOAL = "find the coin and take it"


@dataclasses.dataclass(frozen=True, eq=False)
class House:
    """The static part of an episode: rooms by grid cell, connections, the coin's room."""

    names: dict[tuple[int, int], str]
    doors: dict[frozenset, str | None]  # connection -> door name (None: an open doorway)
    start: tuple[int, int]
    coin: tuple[int, int]

    def __deepcopy__(self, memo):
        return self


def _neighbour(cell: tuple[int, int], direction: str) -> tuple[int, int]:
    dx, dy = DIRECTIONS[direction]
    return cell[0] + dx, cell[1] + dy


def connections(house: House, cell: tuple[int, int], opened: frozenset):
    """``(direction, neighbour, door, shut)`` for every connection of ``cell``, in compass order."""
    for d in DIRECTIONS:
        b = _neighbour(cell, d)
        link = frozenset((cell, b))
        if link in house.doors:
            door = house.doors[link]
            yield d, b, door, door is not None and link not in opened


def build(seed: int, split: str, difficulty: int) -> House:
    """The house of task ``seed``: a pure function of its arguments."""
    rng = random.Random(seed)
    n = rng.randint(*ROOMS[difficulty])
    cells, links = [(0, 0)], []
    while len(cells) < n:  # grow a tree of rooms on a 5 x 5 grid
        c, d = rng.choice(cells), rng.choice(list(DIRECTIONS))
        nxt = _neighbour(c, d)
        if nxt not in cells and max(abs(nxt[0]), abs(nxt[1])) <= 2:
            cells.append(nxt)
            links.append(frozenset((c, nxt)))
    for a in cells:  # loops: side-by-side rooms not yet joined
        for d in ("north", "east"):
            b = _neighbour(a, d)
            if b in cells and frozenset((a, b)) not in links and rng.random() < LOOPS[difficulty]:
                links.append(frozenset((a, b)))
    names = rng.sample(OOD_NAMES if split == "ood" else NAMES, n)
    doors = {k: rng.choice(DOORS) if rng.random() < CLOSED[difficulty] else None for k in links}
    return House(names=dict(zip(cells, names)), doors=doors, start=cells[0], coin=rng.choice(cells[1:]))


class CoinEnv(Env):
    """Find the coin in a house of 2-11 rooms and take it."""

    name = "coin"
    description = ("TextWorld-Express coin, built in: walk through a house of 2-11 rooms (doors to open on the "
                   "way) to the room with the coin and take it; difficulty adds rooms, closed doors and loops; "
                   "ood uses unseen room names.")
    default_max_steps = 40  # the exploring expert needs up to 27 steps at difficulty 3
    _state_attrs = ("house", "cell", "opened", "has_coin", "visited")

    def __init__(self, max_steps: int | None = None, expert: str = "explore", **options):
        super().__init__(max_steps, **options)
        if expert not in ("explore", "shortest"):
            raise EnvError(f"coin: option expert={expert!r}; expected 'explore' (sees what the agent sees) or "
                           "'shortest' (knows where the coin is)")
        self.expert = expert
        self.house: House | None = None
        self.cell = (0, 0)
        self.opened: frozenset = frozenset()
        self.has_coin = False
        self.visited: frozenset = frozenset()  # rooms the agent has been in

    # ----------------------------------------------------------------- tasks
    def _generate(self, split: str, difficulty: int, index: int, seed: int):
        h = build(seed, split, difficulty)
        return GOAL, {"rooms": len(h.names), "closed_doors": sum(d is not None for d in h.doors.values()),
                      "distance": len(self._path(h, h.start, frozenset()))}, ()

    # ----------------------------------------------------------------- episode
    def _reset(self, task: Task) -> str:
        check_split(task.split)
        self.house = build(task.seed, task.split, self._difficulty(task.difficulty))
        self.cell, self.opened, self.has_coin = self.house.start, frozenset(), False
        self.visited = frozenset({self.cell})
        return f"{self._room_text()} Your task is to: {GOAL}."

    def _step(self, action: str) -> tuple[str, float, bool, dict]:
        obs, valid = self._act(action.lower().strip().rstrip("."))
        won = self.has_coin
        score = 1.0 if won else 0.0
        return obs, score - self.score, won, {"valid": valid, "score": score, "won": won, "lost": False}

    def _act(self, action: str) -> tuple[str, bool]:
        if action == "look":
            return self._room_text(), True
        if action == "inventory":
            return "You are carrying: a coin." if self.has_coin else "You are not carrying anything.", True
        if action == "take coin":
            if self.cell != self.house.coin or self.has_coin:
                return f"Nothing happens: there is no coin here. {self._room_text()}", False
            self.has_coin = True
            return "You take the coin.", True
        m = re.fullmatch(r"(move|open door to) (north|east|south|west)", action)
        if not m:
            return (f"Nothing happens: {action!r} is not an action here. Actions look like: move DIRECTION, "
                    "open door to DIRECTION, take coin, look, inventory.", False)
        verb, d = m.groups()
        way = next((c for c in connections(self.house, self.cell, self.opened) if c[0] == d), None)
        if way is None:
            return f"Nothing happens: there is no way {d} from the {self._here()}. {self._exits()}", False
        _, there, door, shut = way
        if verb == "open door to":
            if not shut:
                return f"Nothing happens: there is no closed door to the {d}. {self._exits()}", False
            self.opened = self.opened | {frozenset((self.cell, there))}
            return f"You open the {door}, revealing the {self.house.names[there]}.", True
        if shut:
            return f"Nothing happens: the {door} to the {d} is closed. {self._exits()}", False
        self.cell = there
        self.visited = self.visited | {self.cell}
        return self._room_text(), True

    # ----------------------------------------------------------------- descriptions
    def _here(self) -> str:
        return self.house.names[self.cell]

    def _exits(self) -> str:
        out = []
        for d, b, door, shut in connections(self.house, self.cell, self.opened):
            there = self.house.names[b]
            if door is None:
                out.append(f"To the {d} you see the {there}.")
            elif not shut:
                out.append(f"To the {d} you see the {there} through an open {door}.")
            else:
                out.append(f"To the {d} you see a closed {door}.")
        return " ".join(out)

    def _room_text(self) -> str:
        coin = " You see a coin." if self.cell == self.house.coin and not self.has_coin else ""
        return f"You are in the {self._here()}.{coin} {self._exits()}"

    # ----------------------------------------------------------------- admissible actions and oracle
    def admissible_actions(self) -> list[str]:
        """Every legal action now: moves and door openings in compass order, then the rest."""
        if self.house is None or self.done:
            return []
        acts = [f"open door to {d}" if shut else f"move {d}"
                for d, _, _, shut in connections(self.house, self.cell, self.opened)]
        if self.cell == self.house.coin and not self.has_coin:
            acts.append("take coin")
        return acts + ["inventory", "look"]

    @staticmethod
    def _path(house: House, cell: tuple[int, int], opened: frozenset) -> list[str]:
        """The shortest action sequence from ``cell`` to taking the coin (breadth-first, compass order)."""
        paths = {cell: []}
        frontier = [cell]
        while frontier and house.coin not in paths:
            nxt = []
            for c in frontier:
                for d, b, _, shut in connections(house, c, opened):
                    if b not in paths:
                        paths[b] = paths[c] + ([f"open door to {d}"] if shut else []) + [f"move {d}"]
                        nxt.append(b)
            frontier = nxt
        return paths[house.coin] + ["take coin"]

    def oracle_action(self) -> str | None:
        """The expert's next action (``explore``: from what the agent has seen; ``shortest``: it knows
        which room holds the coin)."""
        if self.house is None or self.done or self.has_coin:
            return None
        if self.expert == "shortest":
            return self._path(self.house, self.cell, self.opened)[0]
        if self.cell == self.house.coin:
            return "take coin"
        # breadth-first over the rooms visited so far, compass order: the first step toward the nearest
        # room with a closed door or an open way into an unvisited room (the current room first)
        first = {self.cell: None}
        frontier = [self.cell]
        while frontier:
            nxt = []
            for c in frontier:
                for d, b, _, shut in connections(self.house, c, self.opened):
                    if shut or b not in self.visited:  # the frontier: act here, or head for c
                        return (f"open door to {d}" if shut else f"move {d}") if c == self.cell else first[c]
                    if b not in first:
                        first[b] = first[c] or f"move {d}"
                        nxt.append(b)
            frontier = nxt
        return None  # pragma: no cover - the coin's room is unvisited until taken, so a frontier exists
