"""The ``household`` world: vocabulary, room layouts, held-out compositions and the seeded generator.

A house is a few rooms joined by doors; each room holds numbered receptacles (``cabinet 1``,
``fridge 1``, ...) and the receptacles hold numbered objects (``mug 2``). A goal is one or two
*parts*, each an ALFWorld task type applied to an object kind and a target receptacle.

Out-of-distribution (split ``ood``) tasks differ from train/valid/test in two verifiable ways:

* every goal part is a held-out ``(task type, object kind, target kind)`` triple from ``HELDOUT``,
  and the other splits never generate one (each triple's type, object and target do occur there);
* the layout is unseen: every room uses an ``"ood*"`` furnishing (a receptacle multiset no other
  furnishing has at the same difficulty) and, at difficulty 3, a floor plan from ``OOD_PLANS``.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import itertools
import random

# kind -> (abilities, receptacle kinds it is found in / may be put in, rooms it belongs to)
OBJECTS: dict[str, tuple[str, str, str]] = {
    "apple": ("clean heat cool", "fridge countertop diningtable garbagecan shelf", "kitchen"),
    "potato": ("clean heat cool", "fridge countertop diningtable garbagecan cabinet", "kitchen"),
    "tomato": ("clean heat cool", "fridge countertop diningtable sinkbasin shelf", "kitchen"),
    "egg": ("heat cool", "fridge countertop diningtable garbagecan", "kitchen"),
    "bread": ("heat cool", "countertop diningtable fridge cabinet", "kitchen"),
    "lettuce": ("clean cool", "fridge countertop diningtable", "kitchen"),
    "mug": ("clean heat cool", "cabinet countertop coffeemachine shelf diningtable sinkbasin", "kitchen"),
    "cup": ("clean heat cool", "cabinet countertop shelf diningtable fridge microwave", "kitchen"),
    "plate": ("clean heat cool", "cabinet countertop diningtable shelf fridge", "kitchen"),
    "bowl": ("clean cool", "cabinet countertop diningtable shelf fridge", "kitchen"),
    "pan": ("clean cool", "stoveburner countertop cabinet", "kitchen"),
    "knife": ("clean", "drawer countertop diningtable", "kitchen"),
    "fork": ("clean", "drawer countertop diningtable", "kitchen"),
    "spoon": ("clean", "drawer countertop diningtable sinkbasin", "kitchen"),
    "book": ("light", "desk shelf sidetable bed sofa coffeetable dresser", "livingroom bedroom"),
    "cellphone": ("light", "bed desk sidetable sofa dresser drawer", "livingroom bedroom"),
    "keychain": ("light", "dresser sidetable coffeetable drawer shelf safe", "livingroom bedroom"),
    "pen": ("light", "desk drawer sidetable shelf", "livingroom bedroom"),
    "creditcard": ("light", "desk dresser sidetable drawer coffeetable", "livingroom bedroom"),
    "remotecontrol": ("", "sofa coffeetable tvstand armchair sidetable", "livingroom bedroom"),
    "pillow": ("", "bed sofa armchair", "livingroom bedroom"),
    "vase": ("", "shelf coffeetable sidetable tvstand cabinet", "livingroom bedroom"),
    "candle": ("light", "countertop toilet shelf cabinet sidetable", "bathroom livingroom"),
    "soapbar": ("clean", "sinkbasin countertop cabinet bathtubbasin toilet", "bathroom"),
    "cloth": ("clean", "countertop cabinet bathtubbasin drawer", "bathroom"),
    "towel": ("", "towelholder bathtubbasin countertop", "bathroom"),
    "spraybottle": ("", "cabinet toilet countertop garbagecan", "bathroom"),
    "toiletpaper": ("", "toilet cabinet countertop", "bathroom"),
}
MASS = ("bread", "lettuce", "toiletpaper")  # "put some bread ...", not "a bread"
PLURAL = {"potato": "potatoes", "tomato": "tomatoes", "knife": "knives", "bread": "loaves of bread"}

OPENABLE = ("cabinet", "drawer", "fridge", "microwave", "safe")
CONTAINERS = OPENABLE + ("sinkbasin", "garbagecan", "bathtubbasin")  # "put X in R"; the rest take "on"
APPLIANCE = {"clean": "sinkbasin", "heat": "microwave", "cool": "fridge"}
PROPERTY = {"clean": "clean", "heat": "hot", "cool": "cool"}
# receptacle kinds a transformed object is never asked to end up in
EXCLUDE_TARGET = {"pick": (), "pick_two": ("garbagecan",), "clean": ("sinkbasin", "garbagecan"),
                  "heat": ("fridge", "microwave", "garbagecan", "sinkbasin"),
                  "cool": ("fridge", "microwave", "stoveburner", "garbagecan", "sinkbasin")}
LAMP_HOSTS = ("desk", "sidetable", "dresser", "coffeetable")  # where the one desklamp stands, first found
CAPACITY = 4  # objects per receptacle at generation time, which keeps observations short

# Furnishings: "core | extras"; difficulty 1 uses the core, 2 adds the first three extras, 3 all.
# Furnishings named "ood*" are only used by the ood split.
ROOMS: dict[str, dict[str, str]] = {
    "kitchen": {
        "0": "fridge microwave sinkbasin countertop countertop cabinet cabinet cabinet"
             " | drawer diningtable stoveburner garbagecan cabinet shelf",
        "1": "fridge microwave sinkbasin countertop diningtable cabinet cabinet drawer"
             " | shelf drawer coffeemachine garbagecan cabinet countertop",
        "2": "fridge microwave sinkbasin countertop countertop cabinet drawer drawer"
             " | cabinet stoveburner shelf garbagecan diningtable coffeemachine",
        "ood": "fridge microwave sinkbasin countertop countertop countertop cabinet shelf shelf"
               " | drawer stoveburner cabinet garbagecan coffeemachine drawer",
        "ood2": "fridge microwave sinkbasin countertop cabinet cabinet cabinet cabinet drawer drawer drawer"
                " | coffeemachine shelf garbagecan diningtable stoveburner countertop",
    },
    "livingroom": {
        "0": "sofa coffeetable sidetable tvstand | armchair shelf drawer garbagecan cabinet",
        "1": "sofa armchair coffeetable shelf | sidetable tvstand drawer drawer garbagecan",
        "ood": "sofa sofa coffeetable tvstand shelf | sidetable armchair cabinet drawer garbagecan",
    },
    "bedroom": {
        "0": "bed desk drawer drawer sidetable | shelf dresser garbagecan safe drawer",
        "1": "bed dresser sidetable shelf drawer | desk drawer garbagecan cabinet safe",
        "ood": "bed desk shelf shelf dresser | drawer sidetable safe garbagecan drawer",
    },
    "bathroom": {
        "0": "toilet sinkbasin countertop cabinet | bathtubbasin towelholder cabinet garbagecan drawer",
        "1": "toilet sinkbasin bathtubbasin towelholder | countertop cabinet cabinet garbagecan",
        "ood": "toilet sinkbasin sinkbasin countertop drawer | towelholder cabinet bathtubbasin garbagecan cabinet",
    },
}
# Floor plans: (rooms, doors). The kitchen is always there (heating and cooling need it).
PLANS = {
    1: [(("kitchen",), ())],
    2: [(("kitchen", "livingroom"), (("kitchen", "livingroom"),)),
        (("kitchen", "bedroom"), (("kitchen", "bedroom"),)),
        (("kitchen", "bathroom"), (("kitchen", "bathroom"),))],
    3: [(("kitchen", "livingroom", "bedroom"), (("kitchen", "livingroom"), ("livingroom", "bedroom"))),
        (("kitchen", "livingroom", "bathroom"), (("kitchen", "livingroom"), ("livingroom", "bathroom"))),
        (("kitchen", "bedroom", "bathroom"), (("kitchen", "bedroom"), ("bedroom", "bathroom")))],
}
OOD_PLANS = {  # difficulty 3: the kitchen as a hub, never generated outside ood; 1-2 share the plans
    1: PLANS[1], 2: PLANS[2],
    3: [(("kitchen", "livingroom", "bedroom"), (("kitchen", "livingroom"), ("kitchen", "bedroom"))),
        (("kitchen", "bedroom", "bathroom"), (("kitchen", "bedroom"), ("kitchen", "bathroom")))],
}

# Held-out (task type, object kind, target kind) triples: only the ood split generates them.
HELDOUT = (
    ("pick", "mug", "shelf"), ("pick", "potato", "fridge"), ("pick", "spoon", "countertop"),
    ("pick", "book", "sidetable"), ("pick", "soapbar", "cabinet"),
    ("clean", "plate", "shelf"), ("clean", "apple", "countertop"), ("clean", "knife", "drawer"),
    ("clean", "cloth", "countertop"),
    ("heat", "mug", "cabinet"), ("heat", "egg", "countertop"), ("heat", "tomato", "shelf"),
    ("cool", "tomato", "countertop"), ("cool", "cup", "shelf"), ("cool", "pan", "cabinet"),
    ("pick_two", "apple", "fridge"), ("pick_two", "cellphone", "bed"), ("pick_two", "plate", "countertop"),
    ("examine", "keychain", "desklamp"), ("examine", "candle", "desklamp"),
)
BASE_TYPES = ("pick", "clean", "heat", "cool")
TYPES = {1: BASE_TYPES, 2: BASE_TYPES + ("pick_two", "examine"), 3: ("compound", "compound", "pick_two", "examine")}
DISTRACTORS = {1: (4, 5), 2: (7, 9), 3: (10, 12)}
EXTRAS = {1: 0, 2: 3, 3: 99}


def kind(name: str) -> str:
    """``"cabinet 2"`` -> ``"cabinet"``."""
    return name.rsplit(" ", 1)[0]


def article(word: str) -> str:
    return ("an " if word[0] in "aeiou" else "a ") + word


def prep(receptacle: str) -> str:
    """The preposition for putting something into/onto ``receptacle``."""
    return "in" if kind(receptacle) in CONTAINERS else "on"


def furnishing(room: str, variant: str, difficulty: int) -> list[str]:
    """The receptacle kinds of ``room`` in furnishing ``variant`` at ``difficulty``."""
    core, _, extras = ROOMS[room][variant].partition("|")
    return core.split() + extras.split()[:EXTRAS[difficulty]]


@dataclasses.dataclass(frozen=True)
class Part:
    """One goal part. ``target`` is a receptacle name (for ``examine``: the one the desklamp stands on)."""

    type: str  # pick | clean | heat | cool | pick_two | examine
    kind: str
    target: str

    @property
    def combo(self) -> tuple[str, str, str]:
        return (self.type, self.kind, "desklamp" if self.type == "examine" else kind(self.target))

    def text(self) -> str:
        if self.type == "examine":
            return f"look at the {self.kind} under the desklamp"
        if self.type == "pick_two":
            return f"put two {PLURAL.get(self.kind, self.kind + 's')} {prep(self.target)} {self.target}"
        obj = self.kind if self.type == "pick" else f"{PROPERTY[self.type]} {self.kind}"
        obj = f"some {obj}" if self.kind in MASS else article(obj)
        return f"put {obj} {prep(self.target)} {self.target}"


@dataclasses.dataclass(frozen=True, eq=False)
class World:
    """The static part of an episode (never changes while playing, so snapshots share it)."""

    rooms: tuple[str, ...]
    doors: dict[str, tuple[str, ...]]  # room -> neighbouring rooms
    room_of: dict[str, str]  # receptacle -> room, in listing order
    objects: tuple[str, ...]  # every object, in listing order
    start: dict[str, str]  # object -> receptacle at reset
    start_room: str
    lamp: str | None  # receptacle the desklamp 1 stands on
    parts: tuple[Part, ...]
    variants: tuple[str, ...]  # furnishing per room
    ood_plan: bool

    def __deepcopy__(self, memo):
        return self

    @property
    def goal(self) -> str:
        return " and ".join([self.parts[0].text()] + [p.text().removeprefix("put ") for p in self.parts[1:]])

    @property
    def layout(self) -> str:
        """A digest of the floor plan and every room's receptacles (unseen-layout checks)."""
        rooms = ";".join(f"{r}=" + ",".join(kind(x) for x in self.room_of if self.room_of[x] == r)
                         for r in self.rooms)
        doors = ";".join(f"{r}>" + ",".join(self.doors[r]) for r in self.rooms)
        return hashlib.sha256(f"{rooms}|{doors}".encode()).hexdigest()[:12]

    def params(self) -> dict:
        type_ = "+".join(p.type for p in self.parts)
        return {"type": type_ if len(self.parts) == 1 else f"compound:{type_}",
                "combos": ";".join("/".join(p.combo) for p in self.parts), "layout": self.layout,
                "variants": ",".join(f"{r}={v}" for r, v in zip(self.rooms, self.variants))}


def _sources(room_of: dict[str, str], kind_: str, exclude: tuple[str, ...] = ()) -> list[str]:
    """The receptacles of the house where an object of ``kind_`` belongs, in listing order."""
    _, where, rooms = OBJECTS[kind_]
    return [r for r in room_of if kind(r) in where.split() and room_of[r] in rooms.split() and r not in exclude]


def candidates(room_of: dict[str, str], lamp: str | None, ood: bool, types=None) -> list[tuple[str, str, str]]:
    """Every feasible ``(type, object kind, target receptacle)`` of a house, in a fixed order; held-out
    triples only when ``ood``, never otherwise."""
    return list(_candidates(tuple(room_of.items()), lamp, ood, tuple(types or ())))


@functools.lru_cache(maxsize=512)  # houses repeat (a few plans x furnishings), so goals are cheap to draw
def _candidates(rooms: tuple[tuple[str, str], ...], lamp: str | None, ood: bool, types: tuple[str, ...]):
    room_of = dict(rooms)
    kinds = {kind(r) for r in room_of}
    heldout = set(HELDOUT)
    sources = _all_sources(rooms)
    out = []
    for type_ in types or BASE_TYPES + ("pick_two", "examine"):
        if type_ in APPLIANCE and APPLIANCE[type_] not in kinds:
            continue
        for k, (abilities, _, _) in OBJECTS.items():
            if type_ in APPLIANCE and type_ not in abilities:
                continue
            if type_ == "examine":
                targets = [lamp] if lamp and "light" in abilities else []
            else:
                targets = [r for r in sources[k] if kind(r) not in EXCLUDE_TARGET[type_]]
            for t in targets:
                if (Part(type_, k, t).combo in heldout) == ood and any(r != t for r in sources[k]):
                    out.append((type_, k, t))
    return tuple(out)


@functools.lru_cache(maxsize=512)
def _all_sources(rooms: tuple[tuple[str, str], ...]) -> dict[str, list[str]]:
    room_of = dict(rooms)
    return {k: _sources(room_of, k) for k in OBJECTS}


def _pick(rng: random.Random, cands: list[tuple[str, str, str]], avoid_kinds=()) -> Part | None:
    """A type uniformly, then an object kind, then a target (so frequent combinations do not dominate)."""
    cands = [c for c in cands if c[1] not in avoid_kinds]
    if not cands:
        return None
    type_ = rng.choice(sorted({c[0] for c in cands}))
    k = rng.choice(sorted({c[1] for c in cands if c[0] == type_}))
    return Part(*rng.choice([c for c in cands if c[:2] == (type_, k)]))


def house(plan: tuple, variants: tuple[str, ...], difficulty: int) -> tuple[dict, dict, str | None]:
    """``(doors, room_of, lamp)`` of a floor plan ``(rooms, edges)`` furnished with ``variants``."""
    rooms, edges = plan
    doors = {r: tuple(b if a == r else a for a, b in edges if r in (a, b)) for r in rooms}
    room_of, counts = {}, {}
    for r, v in zip(rooms, variants):
        names = []
        for k in furnishing(r, v, difficulty):
            counts[k] = counts.get(k, 0) + 1
            names.append(f"{k} {counts[k]}")
        for n in sorted(names, key=lambda x: (kind(x), int(x.rsplit(" ", 1)[1]))):
            room_of[n] = r
    lamp = next((x for r in rooms if r in ("bedroom", "livingroom") for k in LAMP_HOSTS
                 for x in room_of if room_of[x] == r and kind(x) == k), None)
    return doors, room_of, lamp


def houses(difficulty: int, ood: bool):
    """Every ``(plan, variants)`` a split can generate at ``difficulty`` (train/valid/test or ood)."""
    for plan in (OOD_PLANS if ood else PLANS)[difficulty]:
        yield from ((plan, v) for v in itertools.product(
            *[[v for v in ROOMS[r] if v.startswith("ood") == ood] for r in plan[0]]))


def generate(seed: int, split: str, difficulty: int) -> World:
    """The world of task ``seed``: a pure function of its arguments."""
    rng = random.Random(seed)
    ood = split == "ood"
    for _ in range(100):
        plan = rng.choice((OOD_PLANS if ood else PLANS)[difficulty])
        rooms, variants = plan[0], tuple(rng.choice([v for v in ROOMS[r] if v.startswith("ood") == ood])
                                         for r in plan[0])
        doors, room_of, lamp = house(plan, variants, difficulty)
        type_ = rng.choice(TYPES[difficulty])
        if type_ == "compound":
            cands = candidates(room_of, lamp, ood, BASE_TYPES)
            first = _pick(rng, cands)
            second = first and _pick(rng, cands, (first.kind,))
            parts = (first, second) if second else None
        else:
            part = _pick(rng, candidates(room_of, lamp, ood, (type_,)))
            parts = (part,) if part else None
        if parts:
            break
    else:  # pragma: no cover - every plan has feasible goals; this guards table edits
        raise RuntimeError(f"household: no feasible goal for seed {seed} ({split}, difficulty {difficulty})")

    # goal objects (never already at their target), then distractors of other kinds
    kinds = []
    for p in parts:
        copies = {"pick_two": 2 + rng.randint(0, 1)}.get(p.type, 1 + (difficulty > 1 and rng.random() < 0.4))
        kinds += [(p.kind, (p.target,))] * copies
    goal_kinds = [p.kind for p in parts]
    sources = _all_sources(tuple(room_of.items()))
    others = [k for k in OBJECTS if k not in goal_kinds and sources[k]]
    kinds += [(rng.choice(others), ()) for _ in range(rng.randint(*DISTRACTORS[difficulty]))]
    load: dict[str, int] = {}
    placed = []
    for k, exclude in kinds:
        options = [r for r in sources[k] if r not in exclude]
        roomy = [r for r in options if load.get(r, 0) + (r == lamp) < CAPACITY]
        r = rng.choice(roomy or options)
        load[r] = load.get(r, 0) + 1
        placed.append((k, r))
    numbers: dict[str, list[int]] = {}
    for k, _ in placed:
        numbers.setdefault(k, [])
    for k in numbers:  # numbers in shuffled order, so "mug 1" is not always the goal's mug
        n = sum(1 for x, _ in placed if x == k)
        numbers[k] = rng.sample(range(1, n + 1), n)
    start = {}
    for k, r in placed:
        start[f"{k} {numbers[k].pop()}"] = r
    objects = tuple(sorted(start, key=lambda o: (kind(o), int(o.rsplit(" ", 1)[1]))))
    return World(rooms=rooms, doors=doors, room_of=room_of, objects=objects, start=start,
                 start_room=rng.choice(rooms), lamp=lamp, parts=parts, variants=variants,
                 ood_plan=plan not in PLANS[difficulty])
