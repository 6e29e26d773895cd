"""``household``: an ALFWorld-like embodied text world (rooms, receptacles, objects, appliances).

Actions (closed space, ``admissible_actions()``): ``go to RECEPTACLE`` (in the current room),
``go to ROOM`` (through a door), ``open X``, ``close X``, ``take OBJ from RECEP``,
``put OBJ in/on RECEP``, ``clean OBJ with sinkbasin N``, ``heat OBJ with microwave N``,
``cool OBJ with fridge N``, ``use desklamp 1``, ``examine X``, ``look``, ``inventory``.
The agent carries one object at a time. Every action is reversible (nothing is consumed or broken),
so every state short of the step limit can still be won; the oracle plans from the current state.
The world itself (layouts, goals, held-out splits) is in ``ee_jax.envs.worlds.household.world``.
"""

from __future__ import annotations

import re

from ee_jax.envs.base import Env, EnvError, Task, check_split
from ee_jax.envs.worlds.household.world import (
    APPLIANCE,
    OBJECTS,
    OPENABLE,
    PROPERTY,
    Part,
    World,
    article,
    generate,
    kind,
    prep,
)

_VERBS = ("go to X, open X, close X, take OBJ from RECEP, put OBJ in/on RECEP, clean OBJ with sinkbasin N, "
          "heat OBJ with microwave N, cool OBJ with fridge N, use desklamp 1, examine X, look, inventory")


def _listing(items: list[str]) -> str:
    """``a mug 1, a plate 2, and an apple 1`` (ALFWorld style)."""
    items = [article(x) for x in items]
    if len(items) <= 2:
        return " and ".join(items) or "nothing"
    return ", ".join(items[:-1]) + ", and " + items[-1]


def _names(items: list[str]) -> str:
    """``a, b, or c``."""
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + ", or " + items[-1]


class HouseholdEnv(Env):
    """ALFWorld-like household: find objects, clean/heat/cool them, put them in place."""

    name = "household"
    description = ("ALFWorld-like household: walk between rooms and receptacles, open cabinets, take objects, "
                   "clean/heat/cool them at the sink, microwave or fridge and put them where the goal says; "
                   "difficulty adds rooms, receptacles, distractors and two-part goals; ood holds out "
                   "(task, object, receptacle) combinations and room layouts; option visible=true says where "
                   "every object lies (fully observable).")
    difficulties = (1, 2, 3)
    default_difficulty = 1
    default_max_steps = 50
    _state_attrs = ("world", "room", "at", "holding", "where", "status", "opened", "lamp_on")

    def __init__(self, max_steps: int | None = None, visible: bool = False, **options):
        super().__init__(max_steps, **options)
        if not isinstance(visible, bool):
            raise EnvError(f"household: option visible={visible!r}; expected true or false")
        # visible: every observation ends with where each object of the current room lies (closed
        # receptacles included) and what the agent carries, so the state is in the observation and
        # the expert's every move can be read off it, also after a wrong move. A fully observable world
        # for small budgets (the quickstart); the default keeps ALFWorld's partial observability.
        self.visible = visible
        self.world: World | None = None
        self.room = ""
        self.at: str | None = None  # receptacle the agent stands at (None: just entered the room)
        self.holding: str | None = None
        self.where: dict[str, str] = {}  # object -> receptacle (the held object is absent)
        self.status: dict[str, str] = {}  # object -> "clean hot" etc. (absent: nothing special)
        self.opened: dict[str, bool] = {}
        self.lamp_on = False

    # ----------------------------------------------------------------- tasks
    def _generate(self, split: str, difficulty: int, index: int, seed: int):
        w = generate(seed, split, difficulty)
        return w.goal, w.params(), ()

    # ----------------------------------------------------------------- episode
    def _reset(self, task: Task) -> str:
        check_split(task.split)
        self.world = w = generate(task.seed, task.split, self._difficulty(task.difficulty))
        if w.goal != task.goal:
            raise EnvError(f"household: task {task.id!r} has goal {task.goal!r} but its seed generates "
                           f"{w.goal!r} (made by a different version of the generator?)")
        self.room, self.at, self.holding = w.start_room, None, None
        self.where = dict(w.start)
        self.status = {}
        self.opened = {r: False for r in w.room_of if kind(r) in OPENABLE}
        self.lamp_on = False
        return f"{self._room_text()}{self._state_text()} Your task is to: {w.goal}."

    def _step(self, action: str) -> tuple[str, float, bool, dict]:
        old = self.score
        obs, valid = self._act(action.lower().strip().rstrip("."))
        obs += self._state_text()
        score, won = self._progress()
        return obs, score - old, won, {"valid": valid, "score": score, "won": won, "lost": False}

    _PATTERNS = (
        (r"look", "_look"), (r"inventory", "_inventory"), (r"go to (?:the )?(.+)", "_go"),
        (r"open (.+)", "_open"), (r"close (.+)", "_close"), (r"take (.+?) from (.+)", "_take"),
        (r"put (.+?) (?:in/on|in|on) (.+)", "_put"), (r"(clean|heat|cool) (.+?) with (.+)", "_transform"),
        (r"use (.+)", "_use"), (r"examine (.+)", "_examine"),
    )

    def _act(self, action: str) -> tuple[str, bool]:
        for pattern, method in self._PATTERNS:
            m = re.fullmatch(pattern, action)
            if m:
                return getattr(self, method)(*m.groups())
        return f"Nothing happens: {action!r} is not an action here. Actions look like: {_VERBS}.", False

    # ----------------------------------------------------------------- descriptions
    def _accessible(self, r: str) -> bool:
        return self.opened.get(r, True)

    def _contents(self, r: str) -> list[str]:
        return [o for o in self.world.objects if self.where.get(o) == r] + (["desklamp 1"] * (r == self.world.lamp))

    def _describe(self, r: str) -> str:
        if not self._accessible(r):
            return f"The {r} is closed."
        seen = _listing(self._contents(r))
        lamp = " The desklamp 1 is on." if r == self.world.lamp and self.lamp_on else ""
        if kind(r) in OPENABLE:
            return f"The {r} is open. In it, you see {seen}.{lamp}"
        return f"{prep(r).capitalize()} the {r}, you see {seen}.{lamp}"

    def _here(self) -> list[str]:
        return [r for r, room in self.world.room_of.items() if room == self.room]

    def _doors(self) -> str:
        doors = [f"the {d}" for d in self.world.doors[self.room]]
        if not doors:
            return ""
        return f" {'A door leads' if len(doors) == 1 else 'Doors lead'} to {' and '.join(doors)}."

    def _room_text(self) -> str:
        return (f"You are in the {self.room}. Looking quickly around you, you see {_listing(self._here())}."
                f"{self._doors()}")

    def _state_text(self) -> str:
        """With ``visible``: `` The mug 1 is in the cabinet 2. [...] You are not carrying anything.``:
        where every object of this room lies, and what the agent holds."""
        if not self.visible:
            return ""
        here = set(self._here())
        return "".join(f" The {o} is {prep(self.where[o])} the {self.where[o]}." for o in self.world.objects
                       if self.where.get(o) in here) + f" {self._carrying()}"

    def _carrying(self) -> str:
        if self.holding is None:
            return "You are not carrying anything."
        state = self.status.get(self.holding)
        return f"You are carrying: {article(self.holding)}{f' ({state})' if state else ''}."

    # ----------------------------------------------------------------- actions
    def _look(self) -> tuple[str, bool]:
        if not self.at:
            return f"{self._room_text()} {self._carrying()}", True
        return (f"You are in the {self.room}, at the {self.at}. {self._describe(self.at)} Looking quickly around "
                f"you, you see {_listing(self._here())}.{self._doors()} {self._carrying()}"), True

    def _inventory(self) -> tuple[str, bool]:
        return self._carrying(), True

    def _go(self, dest: str) -> tuple[str, bool]:
        w = self.world
        if dest in w.rooms:
            if dest == self.room:
                return f"You are already in the {dest}. {self._room_text()}", False
            if dest not in w.doors[self.room]:
                return f"Nothing happens: no door leads from the {self.room} to the {dest}.{self._doors()}", False
            self.room, self.at = dest, None
            return self._room_text().replace("You are in", "You enter", 1), True
        if dest not in w.room_of:
            places = [x for x in self._here() if x != self.at] + [f"the {d}" for d in w.doors[self.room]]
            return f"Nothing happens: there is no {dest!r} here. From here you can go to {_names(places)}.", False
        if w.room_of[dest] != self.room:
            return (f"Nothing happens: the {dest} is in the {w.room_of[dest]}, not in the {self.room}."
                    f"{self._doors()}"), False
        if dest == self.at:
            return f"You are already at the {dest}. {self._describe(dest)}", False
        self.at = dest
        return f"You arrive at {dest}. {self._describe(dest)}", True

    def _must_be_at(self, r: str) -> str | None:
        if r not in self.world.room_of:
            return f"Nothing happens: there is no {r!r} here."
        if r != self.at:
            return f"Nothing happens: you are not at the {r}. Go to the {r} first."
        return None

    def _open(self, r: str) -> tuple[str, bool]:
        err = self._must_be_at(r)
        if err or r not in self.opened:
            return err or f"Nothing happens: the {r} cannot be opened.", False
        if self.opened[r]:
            return f"The {r} is already open. {self._describe(r)}", False
        self.opened[r] = True
        return f"You open the {r}. {self._describe(r)}", True

    def _close(self, r: str) -> tuple[str, bool]:
        err = self._must_be_at(r)
        if err or r not in self.opened:
            return err or f"Nothing happens: the {r} cannot be closed.", False
        if not self.opened[r]:
            return f"The {r} is already closed.", False
        self.opened[r] = False
        return f"You close the {r}.", True

    def _take(self, o: str, r: str) -> tuple[str, bool]:
        err = self._must_be_at(r)
        if err:
            return err, False
        if not self._accessible(r):
            return f"Nothing happens: the {r} is closed; open it first.", False
        if o == "desklamp 1" and r == self.world.lamp:
            return "Nothing happens: the desklamp 1 is fixed in place, but you can use it.", False
        if self.where.get(o) != r:
            return f"Nothing happens: there is no {o} {prep(r)} the {r}. {self._describe(r)}", False
        if self.holding:
            return f"Nothing happens: you are already carrying the {self.holding}; put it somewhere first.", False
        del self.where[o]
        self.holding = o
        return f"You pick up the {o} from the {r}. {self._describe(r)}", True

    def _put(self, o: str, r: str) -> tuple[str, bool]:
        if self.holding != o:
            return f"Nothing happens: you are not carrying the {o}. {self._carrying()}", False
        err = self._must_be_at(r)
        if err:
            return err, False
        if not self._accessible(r):
            return f"Nothing happens: the {r} is closed; open it first.", False
        self.holding = None
        self.where[o] = r
        return f"You put the {o} {prep(r)} the {r}. {self._describe(r)}", True

    def _transform(self, verb: str, o: str, r: str) -> tuple[str, bool]:
        if self.holding != o:
            return f"Nothing happens: you are not carrying the {o}. {self._carrying()}", False
        err = self._must_be_at(r)
        if err:
            return err, False
        if kind(r) != APPLIANCE[verb]:
            return f"Nothing happens: you can only {verb} things with a {APPLIANCE[verb]}.", False
        if not self._can(o, verb):
            return f"Nothing happens: the {o} cannot be {'cleaned' if verb == 'clean' else verb + 'ed'}.", False
        props = [p for p in ("clean", "hot", "cool") if p in self.status.get(o, "").split()]
        new = PROPERTY[verb]
        props = [p for p in props if {"hot": "cool", "cool": "hot"}.get(new) != p]
        self.status[o] = " ".join(p for p in ("clean", "hot", "cool") if p in props or p == new)
        return f"You {verb} the {o} using the {r}. The {o} is now {new}.", True

    def _use(self, x: str) -> tuple[str, bool]:
        if x != "desklamp 1" or self.world.lamp is None:
            return f"Nothing happens: you cannot use the {x}; only a desklamp can be used.", False
        if self.at != self.world.lamp:
            return f"Nothing happens: the desklamp 1 is not here. {self._here_text()}", False
        self.lamp_on = not self.lamp_on
        state = "on" if self.lamp_on else "off"
        held = f" In its light you look at the {self.holding}." if self.lamp_on and self.holding else ""
        return f"You turn {state} the desklamp 1.{held}", True

    def _here_text(self) -> str:
        return f"You are at the {self.at}." if self.at else f"You are in the middle of the {self.room}."

    def _examine(self, x: str) -> tuple[str, bool]:
        if x == self.at:
            return f"You look closely at the {x}. {self._describe(x)}", True
        if x == self.holding or (self.at and self._accessible(self.at) and self.where.get(x) == self.at):
            state = self.status.get(x)
            return (f"The {x} is {state.replace(' ', ' and ')}." if state
                    else f"There's nothing special about the {x}."), True
        if x == "desklamp 1" and self.at == self.world.lamp:
            return f"The desklamp 1 is {'on' if self.lamp_on else 'off'}.", True
        return f"Nothing happens: you do not see a {x} here. {self._here_text()}", False

    def _can(self, o: str, verb: str) -> bool:
        return verb in OBJECTS[kind(o)][0].split()

    # ----------------------------------------------------------------- goal
    def _part_score(self, p: Part) -> float:
        objs = [o for o in self.world.objects if kind(o) == p.kind]
        held = self.holding in objs
        if p.type == "examine":
            near = held and self.at == p.target
            return (held + near + (near and self.lamp_on)) / 3
        in_target = [o for o in objs if self.where.get(o) == p.target]
        if p.type == "pick_two":
            return min(2.0, len(in_target) + 0.5 * held) / 2
        if p.type == "pick":
            return 1.0 if in_target else 0.5 * held
        prop = PROPERTY[p.type]
        best = 0.0
        for o in objs:
            has = prop in self.status.get(o, "").split()
            there = o in in_target
            best = max(best, ((o == self.holding or there) + has + (there and has)) / 3)
        return best

    def _progress(self) -> tuple[float, bool]:
        scores = [self._part_score(p) for p in self.world.parts]
        done = all(s >= 1.0 for s in scores)
        return (1.0 if done else sum(scores) / len(scores)), done

    # ----------------------------------------------------------------- admissible actions and oracle
    def admissible_actions(self) -> list[str]:
        """Every legal action now, in a fixed order: moves, then actions at the current receptacle."""
        if self.world is None or self.done:
            return []
        acts = [f"go to {r}" for r in self._here() if r != self.at]
        acts += [f"go to {d}" for d in self.world.doors[self.room]]
        r, o = self.at, self.holding
        if r:
            if r in self.opened:
                acts.append(f"{'close' if self.opened[r] else 'open'} {r}")
            if self._accessible(r):
                if o is None:
                    acts += [f"take {x} from {r}" for x in self._contents(r) if x != "desklamp 1"]
                else:
                    acts.append(f"put {o} {prep(r)} {r}")
            if o is not None:
                acts += [f"{v} {o} with {r}" for v, k in APPLIANCE.items() if kind(r) == k and self._can(o, v)]
            if r == self.world.lamp:
                acts.append("use desklamp 1")
            acts.append(f"examine {r}")
        if o is not None:
            acts.append(f"examine {o}")
        return acts + ["inventory", "look"]

    def _hops(self, room: str) -> list[str]:
        """Rooms to walk through from the current room to ``room`` (breadth-first, fixed order)."""
        paths = {self.room: []}
        frontier = [self.room]
        while frontier and room not in paths:
            nxt = []
            for r in frontier:
                for d in self.world.doors[r]:
                    if d not in paths:
                        paths[d] = paths[r] + [d]
                        nxt.append(d)
            frontier = nxt
        return paths[room]

    def _toward(self, r: str) -> str:
        hops = self._hops(self.world.room_of[r])
        return f"go to {hops[0]}" if hops else f"go to {r}"

    def _nearest(self, places: list[str]) -> str:
        return min(places, key=lambda r: (len(self._hops(self.world.room_of[r])), r != self.at))

    def _useful(self, o: str, p: Part) -> bool:
        return kind(o) == p.kind and (p.type != "pick_two" or self._part_score(p) < 1.0)

    def oracle_action(self) -> str | None:
        """The expert's next action from the current state (it knows where every object is)."""
        if self.world is None or self.done:
            return None
        todo = [p for p in self.world.parts if self._part_score(p) < 1.0]
        if not todo:
            return None
        o = self.holding
        part = next((p for p in todo if o and self._useful(o, p)), None)
        if o and part is None:  # carrying something useless: put it down at the nearest usable place
            if self.at and self._accessible(self.at):
                return f"put {o} {prep(self.at)} {self.at}"
            if self.at in self.opened:
                return f"open {self.at}"
            return f"go to {self._nearest([r for r in self._here() if r not in self.opened] or self._here())}"
        if o is None:
            part = todo[0]
            return self._fetch(part)
        if part.type in APPLIANCE and PROPERTY[part.type] not in self.status.get(o, "").split():
            place = self._nearest([r for r in self.world.room_of if kind(r) == APPLIANCE[part.type]])
            return f"{part.type} {o} with {place}" if self.at == place else self._toward(place)
        if self.at != part.target:
            return self._toward(part.target)
        if part.type == "examine":
            return "use desklamp 1"
        return f"put {o} {prep(part.target)} {part.target}" if self._accessible(part.target) else \
            f"open {part.target}"

    def _fetch(self, part: Part) -> str:
        """Walk to the best object for ``part`` (one that already has the property, then the nearest)."""
        prop = PROPERTY.get(part.type)
        objs = []
        for o in self.world.objects:
            r = self.where.get(o)
            if kind(o) != part.kind or r is None:
                continue
            if r == part.target and part.type != "examine":
                has = prop is None or prop in self.status.get(o, "").split()
                if part.type == "pick_two" or has:
                    continue  # already counts for the goal
            has = prop is not None and prop in self.status.get(o, "").split()
            objs.append((not has, len(self._hops(self.world.room_of[r])), r != self.at, o))
        o = min(objs)[3]
        r = self.where[o]
        if r != self.at:
            return self._toward(r)
        return f"take {o} from {r}" if self._accessible(r) else f"open {r}"
