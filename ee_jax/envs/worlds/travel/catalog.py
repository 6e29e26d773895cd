"""The travel-planning world: seeded catalogue generator, constraint checker and min-cost solver.

A task is a round trip from an origin through 1-3 destination cities (3, 5 or 7 days). Its *slots*
are the transport on every travel day, an accommodation for every night and the meals (dinner on day
1, lunch and dinner in between, lunch on the last day). A meal is taken in the day's city: the city
where one sleeps that night, or on the last day the city one leaves from.

Constraints, evaluated like TravelPlanner on the submitted plan:

* commonsense (always): ``complete`` (every slot filled), ``route`` (every transport goes from the
  current city to the next stop), ``diverse_restaurants`` (no restaurant twice), ``minimum_nights``
  (every consecutive stay in one accommodation lasts at least its minimum nights), ``occupancy``
  (every accommodation sleeps the whole group);
* hard: ``budget`` (always) plus 2-4 of ``no_mode``, ``depart_after``, ``cuisine``, ``min_rating``,
  ``room_type``, ``house_rule``.

A constraint about a kind of slot holds only when all slots of that kind are filled and comply, so an
empty plan satisfies nothing. The generator builds every catalogue around a hidden compliant plan and
sets the budget a difficulty-dependent margin above the cheapest compliant plan, so every task is
feasible. ``analyze`` computes the exact cheapest compliant completion of any partial plan
(independent cheapest transports, a dynamic programme over each city's nights, cheapest distinct
restaurants with the cuisine requirement placed where it costs least); the oracle is built on it.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import random

TRAIN_CITIES = ("Avalon", "Brisk", "Cairn", "Dunmore", "Elmstead", "Fairhaven", "Glenrock", "Harrow", "Ivybridge",
                "Juniper", "Kestrel", "Lindale", "Marlow", "Northgate", "Oakridge", "Pinecrest", "Queensbury",
                "Redwater", "Stonehill", "Thornbury")
OOD_CITIES = ("Ashcombe", "Blackmoor", "Coldwater", "Driftwood", "Everly", "Foxhollow", "Greywick", "Hollowmere",
              "Umberfield", "Valemont", "Westbrook", "Yarrow")
TRAIN_CUISINES = ("Italian", "Chinese", "Mexican", "Indian", "French", "Japanese", "Thai", "Greek")
OOD_CUISINES = ("Ethiopian", "Peruvian", "Korean", "Lebanese")
MODES = ("flight", "train", "bus")
MODE_PLURAL = {"flight": "flights", "train": "trains", "bus": "buses"}
ROOM_TYPES = ("entire home", "private room", "shared room")
RULES = ("pets", "parties", "smoking", "children", "visitors")
COMMONSENSE = ("complete", "route", "diverse_restaurants", "minimum_nights", "occupancy")
HARD_TYPES = ("no_mode", "depart_after", "cuisine", "min_rating", "room_type", "house_rule")
OOD_PAIR = ("no_mode", "room_type")
"""The constraint-type pair every ood task has and no train/valid/test task ever has."""
KINDS = ("transport", "accommodation", "lunch", "dinner")


@dataclasses.dataclass(frozen=True)
class Level:
    """What a difficulty sets: trip length, group size, constraints, catalogue size, budget margin."""

    days: int
    splits: tuple[tuple[int, ...], ...]  # ways to divide the nights between the destination cities
    people: tuple[int, int]
    n_hard: int  # hard constraints besides the budget
    transports: int  # options per travel day ...
    decoys: int  # ... of which go to a wrong city
    hotels: int  # accommodations per city
    extra_restaurants: int  # restaurants per city beyond its number of meals
    slack: float  # budget = cheapest compliant plan * (1 + slack)


LEVELS = {
    1: Level(3, ((2,),), (1, 2), 2, 4, 1, 4, 2, 0.30),
    2: Level(5, ((2, 2), (1, 3), (3, 1)), (1, 3), 3, 5, 1, 4, 2, 0.18),
    3: Level(7, ((2, 2, 2), (1, 2, 3), (3, 2, 1), (2, 3, 1), (1, 3, 2), (3, 1, 2), (2, 1, 3)), (2, 4), 4, 6, 2, 5, 2,
             0.08),
}


def hhmm(minutes: int) -> str:
    return f"{minutes // 60:02d}:{minutes % 60:02d}"


@dataclasses.dataclass(frozen=True)
class Transport:
    """A departure on one day; ``price`` is per person."""

    id: str
    day: int
    mode: str
    src: str
    dst: str
    depart: int  # minutes after midnight
    arrive: int
    price: int

    def line(self) -> str:
        return f"{self.id} {self.mode} to {self.dst} {hhmm(self.depart)}-{hhmm(self.arrive)} ${self.price}pp"


@dataclasses.dataclass(frozen=True)
class Stay:
    """An accommodation; ``price`` is per night for the whole booking (up to ``guests`` people)."""

    id: str
    city: str
    room_type: str
    price: int
    guests: int
    min_nights: int
    forbids: tuple[str, ...]

    def line(self) -> str:
        rules = ", ".join(f"no {r}" for r in self.forbids) or "no house rules"
        nights = "night" if self.min_nights == 1 else "nights"
        return (f"{self.id} {self.room_type} ${self.price}/night, sleeps {self.guests}, min {self.min_nights} "
                f"{nights}, {rules}")


@dataclasses.dataclass(frozen=True)
class Restaurant:
    """A restaurant; ``price`` is per person per meal."""

    id: str
    city: str
    cuisine: str
    price: int
    rating: float

    def line(self) -> str:
        return f"{self.id} {self.cuisine} ${self.price}pp rating {self.rating:.1f}"


Slot = tuple[int, str]  # (day, kind); the accommodation slot of day d is the night of day d


class World:
    """One task's itinerary, constraints and catalogue (immutable by convention: cached and shared)."""

    def __init__(self, split: str, difficulty: int, origin: str, cities: tuple[str, ...], nights: tuple[int, ...],
                 people: int, hard: tuple[tuple[str, object], ...], transports: tuple[Transport, ...],
                 stays: tuple[Stay, ...], restaurants: tuple[Restaurant, ...], budget: int = 0):
        self.split, self.difficulty, self.origin, self.cities = split, difficulty, origin, cities
        self.nights, self.people, self.hard, self.budget = nights, people, dict(hard), budget
        self.transports, self.stays, self.restaurants = transports, stays, restaurants
        self.days = sum(nights) + 1
        self.items = {x.id: x for x in (*transports, *stays, *restaurants)}
        self.blocks: dict[str, tuple[int, int]] = {}  # city -> (first night, last night)
        self.night_city: dict[int, str] = {}
        first = 1
        for city, k in zip(cities, nights):
            self.blocks[city] = (first, first + k - 1)
            for d in range(first, first + k):
                self.night_city[d] = city
            first += k
        self.day_city = {**self.night_city, self.days: cities[-1]}
        stops = (origin, *cities, origin)
        self.route = {1: (origin, cities[0])}  # travel day -> (from, to)
        for i, city in enumerate(cities[1:], 1):
            self.route[self.blocks[city][0]] = (stops[i], city)
        self.route[self.days] = (cities[-1], origin)
        self.transport_by_day = {d: tuple(t for t in transports if t.day == d) for d in self.route}
        self.stays_by_city = {c: tuple(s for s in stays if s.city == c) for c in cities}
        self.restaurants_by_city = {c: tuple(r for r in restaurants if r.city == c) for c in cities}
        # canonical slot order, grouped by the listing that fills them: per city its arrival transport,
        # its nights, its meals; the return transport last
        self.slots: list[Slot] = []
        for city in cities:
            a, b = self.blocks[city]
            self.slots.append((a, "transport"))
            self.slots += [(d, "accommodation") for d in range(a, b + 1)]
            for d in sorted(d for d, c in self.day_city.items() if c == city):
                self.slots += [(d, m) for m in self.meals(d)]
        self.slots.append((self.days, "transport"))
        self.slot_index = {s: i for i, s in enumerate(self.slots)}

    def meals(self, day: int) -> tuple[str, ...]:
        return ("dinner",) if day == 1 else ("lunch",) if day == self.days else ("lunch", "dinner")

    def slot_city(self, slot: Slot) -> str:
        """The city whose listing fills ``slot`` (for transport: the departure city)."""
        day, kind = slot
        return self.route[day][0] if kind == "transport" else self.day_city[day]

    def cost(self, slot: Slot, item_id: str) -> int:
        item = self.items[item_id]
        return item.price if slot[1] == "accommodation" else item.price * self.people

    def plan_cost(self, plan: dict[Slot, str]) -> int:
        return sum(self.cost(s, i) for s, i in plan.items())

    # ------------------------------------------------------------ per-item compliance
    def faults(self, slot: Slot, item_id: str) -> list[str]:
        """The constraints that this single choice breaks, whatever the rest of the plan."""
        item, hard, out = self.items[item_id], self.hard, []
        if slot[1] == "transport":
            if (item.src, item.dst) != self.route[slot[0]]:
                out.append("route")
            if hard.get("no_mode") == item.mode:
                out.append("no_mode")
            if "depart_after" in hard and item.depart < hard["depart_after"]:
                out.append("depart_after")
        elif slot[1] == "accommodation":
            if item.guests < self.people:
                out.append("occupancy")
            if "room_type" in hard and item.room_type != hard["room_type"]:
                out.append("room_type")
            if hard.get("house_rule") in item.forbids:
                out.append("house_rule")
        elif "min_rating" in hard and item.rating < hard["min_rating"]:
            out.append("min_rating")
        return out

    # ------------------------------------------------------------ text
    def constraint_texts(self) -> list[str]:
        h, out = self.hard, []
        if "no_mode" in h:
            out.append(f"no {MODE_PLURAL[h['no_mode']]}")
        if "depart_after" in h:
            out.append(f"no departures before {hhmm(h['depart_after'])}")
        if "cuisine" in h:
            out.append(f"at least one {h['cuisine']} meal")
        if "min_rating" in h:
            out.append(f"only restaurants rated {h['min_rating']:.1f}+")
        if "room_type" in h:
            out.append(f"room type {h['room_type']} only")
        if "house_rule" in h:
            out.append(f"accommodations must allow {h['house_rule']}")
        return out

    def goal(self) -> str:
        stops = ", ".join(f"{c} {_nights_text(*self.blocks[c])}" for c in self.cities)
        people = "1 person" if self.people == 1 else f"{self.people} people"
        return (f"Plan a {self.days}-day trip for {people} from {self.origin}: {stops}, return on day {self.days}. "
                f"Budget ${self.budget}. Hard constraints: {'; '.join(self.constraint_texts())}.")

    def remaining_text(self, plan: dict[Slot, str]) -> str:
        """The empty slots grouped by kind, e.g. ``transport 3,5; accommodation 2-4; lunch 2-5``."""
        parts = []
        for kind in KINDS:
            days = [d for d, k in self.slots if k == kind and (d, k) not in plan]
            if days:
                parts.append(f"{kind} {_ranges(sorted(days))}")
        return "; ".join(parts)


def _nights_text(a: int, b: int) -> str:
    return f"night {a}" if a == b else f"nights {a}-{b}"


def _ranges(days: list[int]) -> str:
    out, i = [], 0
    while i < len(days):
        j = i
        while j + 1 < len(days) and days[j + 1] == days[j] + 1:
            j += 1
        out.append(str(days[i]) if j == i else f"{days[i]}-{days[j]}" if j > i + 1 else f"{days[i]},{days[j]}")
        i = j + 1
    return ",".join(out)


# ---------------------------------------------------------------- checker
def evaluate(world: World, plan: dict[Slot, str]) -> dict[str, bool]:
    """Every constraint of the task (commonsense first, then hard) -> satisfied by ``plan``."""
    by_kind = {k: [s for s in world.slots if s[1] == k] for k in KINDS}
    meals = by_kind["lunch"] + by_kind["dinner"]

    def all_ok(slots: list[Slot], fault: str) -> bool:
        return all(s in plan and fault not in world.faults(s, plan[s]) for s in slots)

    nights = by_kind["accommodation"]
    complete = all(s in plan for s in world.slots)
    ids = [plan[s] for s in meals if s in plan]
    res = {
        "complete": complete,
        "route": all_ok(by_kind["transport"], "route"),
        "diverse_restaurants": len(ids) == len(meals) and len(set(ids)) == len(ids),
        "minimum_nights": all(s in plan for s in nights) and _runs_ok(world, [plan[s] for s in nights]),
        "occupancy": all_ok(nights, "occupancy"),
        "budget": complete and world.plan_cost(plan) <= world.budget,
    }
    for t in HARD_TYPES:
        if t == "cuisine" and t in world.hard:
            res[t] = any(world.items[i].cuisine == world.hard[t] for i in ids)
        elif t in world.hard:
            res[t] = all_ok({"no_mode": by_kind["transport"], "depart_after": by_kind["transport"],
                             "min_rating": meals}.get(t, nights), t)
    return res


def _runs_ok(world: World, stays: list[str]) -> bool:
    """Every maximal run of the same accommodation lasts at least its minimum nights."""
    i = 0
    while i < len(stays):
        j = i
        while j + 1 < len(stays) and stays[j + 1] == stays[i]:
            j += 1
        if j - i + 1 < world.items[stays[i]].min_nights:
            return False
        i = j + 1
    return True


# ---------------------------------------------------------------- solver
@dataclasses.dataclass
class Analysis:
    """``bad``: violations no completion can repair (faulty or repeated items, impossible stays or
    cuisine); ``cost``: the cheapest compliant completion's total, treating faulty items as empty;
    ``completion``: that completion (every slot); ``feasible``: ``bad == 0`` and within budget."""

    bad: int
    cost: int
    completion: dict[Slot, str]
    feasible: bool


def analyze(world: World, plan: dict[Slot, str]) -> Analysis:
    """The exact cheapest completion of ``plan`` that satisfies every constraint but the budget."""
    bad, cost, completion = 0, 0, {}
    fixed: dict[Slot, str] = {}
    used: set[str] = set()  # membership only: never iterated
    for s in world.slots:  # faulty or repeated choices count as violations and are treated as empty
        if s in plan:
            if world.faults(s, plan[s]) or (s[1] in ("lunch", "dinner") and plan[s] in used):
                bad += 1
            else:
                fixed[s] = plan[s]
                used.add(plan[s])
    completion.update(fixed)
    for d in world.route:  # transports are independent: the cheapest compliant one per free day
        if (d, "transport") in fixed:
            cost += world.cost((d, "transport"), fixed[(d, "transport")])
            continue
        ok = [t for t in world.transport_by_day[d] if not world.faults((d, "transport"), t.id)]
        if not ok:
            bad += 1
            continue
        best = min(ok, key=lambda t: t.price)
        completion[(d, "transport")] = best.id
        cost += best.price * world.people
    for city in world.cities:
        a, b = world.blocks[city]
        got = _stay_block(world, city, [fixed.get((d, "accommodation")) for d in range(a, b + 1)])
        if got is None:
            bad += 1
            continue
        cost += got[0]
        completion.update({(d, "accommodation"): h for d, h in zip(range(a, b + 1), got[1])})
    meal_bad, meal_cost, meals = _meals(world, fixed, used)
    completion.update(meals)
    bad, cost = bad + meal_bad, cost + meal_cost
    return Analysis(bad, cost, completion, bad == 0 and cost <= world.budget)


def _stay_block(world: World, city: str, fixed: list[str | None]) -> tuple[int, list[str]] | None:
    """Cheapest accommodations for one city's consecutive nights (``fixed[i]``: the night's set choice
    or None), respecting minimum nights: a DP over (accommodation, run length capped at its minimum)."""
    ok = [s for s in world.stays_by_city[city] if not world.faults((1, "accommodation"), s.id)]
    states: dict[tuple[str, int], tuple[int, list[str]]] = {}
    for k, f in enumerate(fixed):
        options = [world.items[f]] if f is not None else ok
        new: dict[tuple[str, int], tuple[int, list[str]]] = {}
        for h in options:
            prev = list(states.items()) if k else [(("", 0), (0, []))]
            for (pid, run), (c, path) in prev:
                if pid == h.id:
                    key = (h.id, min(run + 1, h.min_nights))
                elif pid == "" or run >= world.items[pid].min_nights:
                    key = (h.id, min(1, h.min_nights))
                else:
                    continue
                if key not in new or c + h.price < new[key][0]:
                    new[key] = (c + h.price, path + [h.id])
        states = new
    done = [v for (pid, run), v in states.items() if run >= world.items[pid].min_nights]
    return min(done, key=lambda v: v[0]) if done else None


def _meals(world: World, fixed: dict[Slot, str], used: set[str]) -> tuple[int, int, dict[Slot, str]]:
    """Cheapest distinct compliant restaurants for the free meal slots; if the cuisine constraint is
    not met by a set meal, one free slot gets the cuisine where that costs least."""
    want = world.hard.get("cuisine")
    have = any(world.items[i].cuisine == want for s, i in fixed.items() if s[1] in ("lunch", "dinner"))
    bad, picks, swap = 0, {}, None  # swap: (extra cost, city, restaurant)
    for city in world.cities:
        free = [s for s in world.slots if s[1] in ("lunch", "dinner") and world.day_city[s[0]] == city
                and s not in fixed]
        avail = sorted((r for r in world.restaurants_by_city[city]
                        if r.id not in used and not world.faults((1, "lunch"), r.id)), key=lambda r: r.price)
        if len(free) > len(avail):
            bad += 1
            continue
        chosen = avail[: len(free)]
        picks[city] = (free, chosen)
        if want and not have and free:
            if any(r.cuisine == want for r in chosen):
                have = True
            else:
                x = next((r for r in avail if r.cuisine == want), None)
                if x is not None and (swap is None or x.price - chosen[-1].price < swap[0]):
                    swap = (x.price - chosen[-1].price, city, x)
    if want and not have:
        if swap is None:
            bad += 1
        else:
            free, chosen = picks[swap[1]]
            picks[swap[1]] = (free, chosen[:-1] + [swap[2]])
    out = {}
    cost = sum(world.cost(s, i) for s, i in fixed.items() if s[1] in ("lunch", "dinner"))
    for free, chosen in picks.values():
        for s, r in zip(free, chosen):
            out[s] = r.id
            cost += r.price * world.people
    return bad, cost, out


# ---------------------------------------------------------------- generator
@functools.lru_cache(maxsize=512)
def generate(seed: int, split: str, difficulty: int) -> World:
    """The task world of ``seed``: deterministic, built around a hidden compliant plan."""
    rng = random.Random(seed)
    lv = LEVELS[difficulty]
    ood = split == "ood"
    pool = OOD_CITIES if ood else TRAIN_CITIES
    n_cities = len(lv.splits[0])
    names = rng.sample(pool, n_cities + 3)  # origin, destinations, two decoy destinations
    origin, cities, extra = names[0], tuple(names[1: n_cities + 1]), names[n_cities + 1:]
    nights = rng.choice(lv.splits)
    people = rng.randint(*lv.people)
    cuisines = OOD_CUISINES + TRAIN_CUISINES if ood else TRAIN_CUISINES
    others = [t for t in HARD_TYPES if t not in OOD_PAIR]
    if ood:  # the held-out pair plus random others
        types = list(OOD_PAIR) + rng.sample(others, lv.n_hard - 2)
    else:
        while True:
            types = rng.sample(HARD_TYPES, lv.n_hard)
            if not all(t in types for t in OOD_PAIR):
                break
    values = {"no_mode": rng.choice(MODES), "depart_after": rng.choice((8 * 60, 9 * 60, 10 * 60)),
              "cuisine": rng.choice(OOD_CUISINES if ood else TRAIN_CUISINES), "min_rating": rng.choice((3.5, 4.0)),
              "room_type": rng.choice(ROOM_TYPES[:2]), "house_rule": rng.choice(RULES)}
    hard = tuple((t, values[t]) for t in HARD_TYPES if t in types)
    h = dict(hard)
    skeleton = World(split, difficulty, origin, cities, nights, people, hard, (), (), ())
    transports = _gen_transports(rng, lv, skeleton, [*cities, origin, *extra], h)
    stays = _gen_stays(rng, lv, skeleton, h)
    restaurants = _gen_restaurants(rng, lv, skeleton, h, cuisines, ood)
    world = World(split, difficulty, origin, cities, nights, people, hard, transports, stays, restaurants)
    cheapest = analyze(world, {})
    if cheapest.bad:  # cannot happen: every listing holds the hidden plan's compliant choice
        raise RuntimeError(f"travel generator built an infeasible task (seed {seed}, {split}, d{difficulty})")
    world.budget = int(math.ceil(cheapest.cost * (1 + lv.slack) / 10) * 10)
    return world


def _gen_transports(rng: random.Random, lv: Level, w: World, places: list[str], h: dict) -> tuple[Transport, ...]:
    allowed = [m for m in MODES if m != h.get("no_mode")]
    earliest = h.get("depart_after", 6 * 60)
    dist: dict[tuple[str, str], float] = {}
    out: list[Transport] = []
    for day, (src, dst) in sorted(w.route.items()):
        specs = [(rng.choice(allowed), dst, rng.randrange(earliest, 18 * 60 + 1, 15))]  # the compliant one
        if "no_mode" in h:  # a tempting option of the excluded mode
            specs.append((h["no_mode"], dst, rng.randrange(6 * 60, 18 * 60 + 1, 15)))
        while len(specs) < lv.transports - lv.decoys:
            specs.append((rng.choice(MODES), dst, rng.randrange(6 * 60, 18 * 60 + 1, 15)))
        wrong = [p for p in places if p not in (src, dst)]
        specs += [(rng.choice(MODES), rng.choice(wrong), rng.randrange(6 * 60, 18 * 60 + 1, 15))
                  for _ in range(lv.decoys)]
        day_opts = []
        for mode, to, dep in specs:
            f = dist.setdefault((src, to), rng.uniform(0.8, 2.0))
            lo, hi, d_lo, d_hi = {"flight": (90, 160, 60, 150), "train": (45, 90, 120, 270),
                                  "bus": (20, 45, 180, 360)}[mode]
            dur = rng.randrange(d_lo, d_hi + 1, 5)
            day_opts.append((dep, mode, to, dep + dur, round(f * rng.uniform(lo, hi))))
        for dep, mode, to, arr, price in sorted(day_opts):
            out.append(Transport(f"{mode[0].upper()}{len(out) + 1}", day, mode, src, to, dep, arr, price))
    return tuple(out)


def _gen_stays(rng: random.Random, lv: Level, w: World, h: dict) -> tuple[Stay, ...]:
    def make(room_type: str, guests: int, min_nights: int, forbids: tuple[str, ...]) -> tuple:
        lo, hi = {"entire home": (110, 280), "private room": (55, 140), "shared room": (25, 70)}[room_type]
        return room_type, rng.randrange(lo, hi + 1, 5), guests, min_nights, forbids

    def guests_for(room_type: str) -> int:
        return rng.randint(*{"entire home": (2, 6), "private room": (1, 3), "shared room": (1, 2)}[room_type])

    out: list[Stay] = []
    for city in w.cities:
        a, b = w.blocks[city]
        rt = h.get("room_type") or rng.choice(ROOM_TYPES)
        rules = [r for r in RULES if r != h.get("house_rule")]
        specs = [make(rt, rng.randint(w.people, max(w.people, 4)), rng.randint(1, min(2, b - a + 1)),
                      tuple(sorted(rng.sample(rules, rng.randint(0, 1)), key=RULES.index)))]
        while len(specs) < lv.hotels:
            t = rng.choice(ROOM_TYPES)
            specs.append(make(t, guests_for(t), rng.choice((1, 1, 2, 3)),
                              tuple(sorted(rng.sample(RULES, rng.randint(0, 2)), key=RULES.index))))
        rng.shuffle(specs)
        out += [Stay(f"H{len(out) + k}", city, *spec) for k, spec in enumerate(specs, 1)]
    return tuple(out)


def _gen_restaurants(rng: random.Random, lv: Level, w: World, h: dict, cuisines: tuple[str, ...],
                     ood: bool) -> tuple[Restaurant, ...]:
    want_city = rng.choice(w.cities)
    out: list[Restaurant] = []
    for city in w.cities:
        n_meals = sum(len(w.meals(d)) for d, c in w.day_city.items() if c == city)
        specs = [[rng.choice(cuisines), rng.randint(8, 55), round(rng.uniform(2.8, 5.0), 1)]
                 for _ in range(n_meals + lv.extra_restaurants)]
        q = h.get("min_rating")
        if q is not None:  # enough compliant restaurants for every meal in the city
            for spec in specs[:n_meals]:
                spec[2] = max(spec[2], round(rng.uniform(q, 5.0), 1))
        if ood:  # held-out cuisines appear in every ood city
            specs[-1][0] = rng.choice(OOD_CUISINES)
        if "cuisine" in h and city == want_city:
            specs[0][0] = h["cuisine"]
        rng.shuffle(specs)
        out += [Restaurant(f"R{len(out) + k}", city, c, p, r) for k, (c, p, r) in enumerate(specs, 1)]
    return tuple(out)
