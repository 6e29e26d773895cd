"""Procedural product catalogue and shopping goals of the ``shop`` environment (pure stdlib).

A *world* is one task's immutable catalogue plus its goal: ``build_world(seed, difficulty, split)``
returns the same ``World`` on every machine (``random.Random(seed)``, lists only, no string hashing).

Every world has exactly one product that fully matches the goal (the *target*) and a few close
*distractors*, each failing the goal in one or two ways: a missing required attribute, a missing
option value, a price over the budget, or the paper's decoy -- same product type and attributes,
a different colour only, and a price over the budget (the "$15 blue shirt vs $30 red shirt under a
$20 budget" situation). Fillers of the goal's department and of other categories pad the catalogue.

OOD: the categories in ``OOD_CATEGORIES`` and the (category, attribute) pairs in ``RESERVED_PAIRS``
never occur in a train/valid/test world -- neither in the goal nor in any product; every ood goal
uses one of them (``uses_ood``).
"""

from __future__ import annotations

import dataclasses
import functools
import random
import re

COLORS = ["black", "white", "blue", "red", "green", "grey", "navy", "pink", "beige", "brown"]
OPTION_VALUES = {
    "color": COLORS,
    "size": ["xs", "s", "m", "l", "xl", "xxl"],
    "shoe size": ["6", "7", "8", "9", "10", "11", "12"],
    "capacity": ["12 oz", "16 oz", "20 oz", "24 oz", "32 oz"],
    "pan size": ["8 inch", "10 inch", "12 inch"],
    "bed size": ["twin", "full", "queen", "king"],
    "pack": ["1 pack", "2 pack", "4 pack", "6 pack"],
    "model": ["basic", "plus", "pro"],
    "phone": ["iphone 14", "iphone 15", "galaxy s23", "pixel 8"],
    "volume": ["20 liter", "25 liter", "30 liter", "35 liter"],
    "light": ["warm", "cool", "daylight"],
    "layout": ["full size", "tenkeyless", "60 percent"],
}


@dataclasses.dataclass(frozen=True)
class Category:
    """A product type: its department, attribute pool, two option types and price range (dollars)."""

    name: str
    department: str
    attributes: tuple[str, ...]
    options: tuple[str, str]
    price: tuple[int, int]


def _cat(name, dept, attrs, opt, lo, hi):
    return Category(name, dept, tuple(attrs.split(", ")), ("color", opt), (lo, hi))


CATEGORIES = [
    _cat("shirt", "clothing", "cotton, linen, slim fit, long sleeve, button down, wrinkle free", "size", 12, 45),
    _cat("t-shirt", "clothing", "cotton, organic, crew neck, v neck, moisture wicking, graphic", "size", 8, 30),
    _cat("jeans", "clothing", "stretch, slim fit, high waist, relaxed fit, distressed, bootcut", "size", 20, 70),
    _cat("hoodie", "clothing", "fleece, cotton, zip up, oversized, pullover, lightweight", "size", 20, 60),
    _cat("dress", "clothing", "floral, midi, sleeveless, wrap, maxi, casual", "size", 20, 80),
    _cat("jacket", "clothing", "waterproof, insulated, lightweight, hooded, windproof, fleece lined", "size", 30, 120),
    _cat("raincoat", "clothing", "waterproof, hooded, lightweight, packable, breathable", "size", 25, 90),
    _cat("sneakers", "footwear", "running, slip on, breathable, leather, non slip, lightweight", "shoe size", 30, 110),
    _cat("boots", "footwear", "leather, waterproof, ankle, steel toe, insulated, lace up", "shoe size", 40, 150),
    _cat("sandals", "footwear", "leather, slip on, waterproof, cushioned, adjustable strap", "shoe size", 15, 60),
    _cat("mug", "kitchen", "ceramic, insulated, microwave safe, dishwasher safe, travel, glass", "capacity", 8, 30),
    _cat("water bottle", "kitchen", "stainless steel, insulated, bpa free, leak proof, wide mouth", "capacity", 10, 40),
    _cat("frying pan", "kitchen", "nonstick, cast iron, induction ready, oven safe, stainless steel", "pan size",
         15, 70),
    _cat("teapot", "kitchen", "ceramic, glass, cast iron, stovetop, infuser", "capacity", 15, 60),
    _cat("pillow", "home", "memory foam, hypoallergenic, cooling, down alternative, adjustable", "bed size", 15, 60),
    _cat("blanket", "home", "fleece, weighted, cotton, sherpa, lightweight", "bed size", 20, 90),
    _cat("towel", "home", "cotton, quick dry, bamboo, absorbent, turkish", "pack", 10, 45),
    _cat("desk lamp", "home", "led, dimmable, usb charging, adjustable, touch control", "light", 15, 60),
    _cat("headphones", "electronics", "wireless, noise cancelling, over ear, bluetooth, foldable", "model", 20, 150),
    _cat("phone case", "electronics", "shockproof, slim, magnetic, wallet, waterproof", "phone", 8, 35),
    _cat("charger", "electronics", "fast charging, usb c, wireless, foldable, compact", "pack", 10, 45),
    _cat("keyboard", "electronics", "wireless, mechanical, backlit, ergonomic, compact", "layout", 25, 120),
    _cat("backpack", "bags", "waterproof, laptop, anti theft, lightweight, hiking", "volume", 25, 90),
    _cat("duffel bag", "bags", "waterproof, canvas, leather, foldable, gym", "volume", 20, 80),
]
CATEGORY = {c.name: c for c in CATEGORIES}
OOD_CATEGORIES = ("raincoat", "sandals", "teapot", "desk lamp", "keyboard")
"""Product types that only the ood split generates (goals and products)."""
RESERVED_PAIRS = (("shirt", "linen"), ("jeans", "stretch"), ("hoodie", "fleece"), ("mug", "insulated"),
                  ("sneakers", "leather"), ("pillow", "cooling"), ("headphones", "noise cancelling"),
                  ("backpack", "waterproof"))
"""(category, attribute) compositions that only the ood split generates; each attribute also occurs
with other categories in train, so the words are known and only the combination is new."""
BRANDS = ["Northwind", "Acme", "Bluebird", "Cedar & Co", "Everpeak", "Lumio", "Maple", "Nimbus", "Orchid",
          "Pinecrest", "Quill", "Riverton", "Solace", "Tundra", "Vela", "Willow"]
OPENERS = ["i need", "i am looking for", "i want to buy", "find me", "i'd like"]

# difficulty -> (products, categories, required attributes, required options, distractors)
LEVELS = {1: (9, 3, (1, 1), 1, 2), 2: (18, 5, (2, 2), 2, 4), 3: (30, 7, (2, 3), 2, 7)}


@dataclasses.dataclass(frozen=True)
class Product:
    """One catalogue entry; ``options`` maps each option type to the values it is offered in."""

    pid: str
    category: str
    brand: str
    attributes: tuple[str, ...]
    options: tuple[tuple[str, tuple[str, ...]], ...]
    price: float
    kind: str  # target | attribute miss | option miss | over budget | decoy | filler (for tests/analysis)

    @property
    def title(self) -> str:
        return f"{self.brand} {' '.join(self.attributes)} {self.category}"

    @functools.cached_property
    def tokens(self) -> tuple[str, ...]:
        """Search index: the title's words (brand, attributes, type). Options are not indexed: they show
        only on the product page, so a decoy without the goal's colour looks like the target in results."""
        return tuple(dict.fromkeys(tokenize(self.title)))


@dataclasses.dataclass(frozen=True)
class Goal:
    """What to buy: a category, required attributes, required option values and a budget (price < budget)."""

    category: str
    attributes: tuple[str, ...]
    options: tuple[tuple[str, str], ...]
    budget: float
    target: str  # pid of the one fully matching product
    text: str

    @property
    def query(self) -> str:
        """The expert's search query: attributes, type and option values, as a shopper would type it
        (option values match no title; they keep it distinct from the search-page suggestions)."""
        return " ".join([*self.attributes, self.category, *(v for _, v in self.options)])


@dataclasses.dataclass(frozen=True)
class World:
    """One task's catalogue (search order tie-break = tuple order), goal and search suggestions."""

    products: tuple[Product, ...]
    goal: Goal
    suggestions: tuple[str, ...]

    def product(self, pid: str) -> Product:
        return next(p for p in self.products if p.pid == pid)


def tokenize(text: str) -> list[str]:
    return re.findall(r"[a-z0-9]+", text.lower())


def uses_ood(category: str, attributes) -> bool:
    """Whether a (category, attributes) composition is held out for the ood split."""
    return category in OOD_CATEGORIES or any((category, a) in RESERVED_PAIRS for a in attributes)


def allowed_attributes(category: str, ood: bool) -> list[str]:
    cat = CATEGORY[category]
    return list(cat.attributes) if ood else [a for a in cat.attributes if (category, a) not in RESERVED_PAIRS]


def matches(product: Product, goal: Goal) -> bool:
    """Full match: right type, every required attribute, every required option value offered, under budget."""
    offered = dict(product.options)
    return (product.category == goal.category and set(goal.attributes) <= set(product.attributes)
            and all(v in offered.get(t, ()) for t, v in goal.options) and product.price < goal.budget)


def score_purchase(product: Product, selected: dict, goal: Goal) -> tuple[float, dict]:
    """WebShop-like match score of buying ``product`` with ``selected`` options (see the shop ``env`` module)."""
    cat, want = CATEGORY[product.category], CATEGORY[goal.category]
    r_type = 1.0 if cat.name == want.name else 0.5 if cat.department == want.department else 0.0
    attrs = sum(a in product.attributes for a in goal.attributes)
    opts = sum(selected.get(t) == v for t, v in goal.options)
    price = product.price < goal.budget
    total = len(goal.attributes) + len(goal.options) + 1
    parts = {"type": r_type, "attributes": attrs, "options": opts, "price": price}
    won = r_type == 1.0 and attrs + opts + price == total
    return (1.0 if won else round(r_type * (attrs + opts + price) / total, 4)), parts


# ----------------------------------------------------------------------------- generation
def _pid(rng: random.Random, used: set) -> str:
    while True:
        pid = "B0" + "".join(rng.choice("ABCDEFGHJKLMNPQRSTUVWXYZ0123456789") for _ in range(8))
        if pid not in used:
            used.add(pid)
            return pid


def _price(rng: random.Random, lo: float, hi: float) -> float:
    """A shop-like price (x.99 / x.49 / x.00) in [lo, hi]."""
    dollars = rng.randint(int(lo), max(int(lo), int(hi) - 1))
    return min(hi, max(lo, dollars + rng.choice([0.99, 0.49, 0.0])))


def _order(category: str, attrs) -> tuple[str, ...]:
    """Attributes in the category's canonical order (titles read the same for equal sets)."""
    return tuple(a for a in CATEGORY[category].attributes if a in attrs)


def _values(rng: random.Random, opt: str, include=(), exclude=()) -> tuple[str, ...]:
    pool = [v for v in OPTION_VALUES[opt] if v not in exclude and v not in include]
    k = rng.randint(max(0, 2 - len(include)), min(len(pool), 4 - len(include)))
    chosen = set(rng.sample(pool, k)) | set(include)
    return tuple(v for v in OPTION_VALUES[opt] if v in chosen)


def _product(rng, used, category, attrs, price, kind, brand=None, include=None, exclude=None) -> Product:
    include, exclude = include or {}, exclude or {}
    opts = tuple((o, _values(rng, o, include.get(o, ()), exclude.get(o, ()))) for o in CATEGORY[category].options)
    return Product(_pid(rng, used), category, brand or rng.choice(BRANDS), _order(category, attrs), opts,
                   round(price, 2), kind)


def _goal(rng: random.Random, difficulty: int, ood: bool) -> tuple[str, tuple[str, ...], tuple]:
    _, _, (amin, amax), n_opts, _ = LEVELS[difficulty]
    n_attrs = rng.randint(amin, amax)
    if not ood:
        category = rng.choice([c.name for c in CATEGORIES if c.name not in OOD_CATEGORIES])
        attrs = rng.sample(allowed_attributes(category, False), n_attrs)
    elif rng.random() < 0.5:  # an unseen product type
        category = rng.choice(list(OOD_CATEGORIES))
        attrs = rng.sample(list(CATEGORY[category].attributes), n_attrs)
    else:  # a seen type with an unseen attribute
        category, reserved = rng.choice(list(RESERVED_PAIRS))
        attrs = [reserved] + rng.sample(allowed_attributes(category, False), n_attrs - 1)
    opt_types = list(CATEGORY[category].options)
    opt_types = opt_types if n_opts == 2 else [rng.choice(opt_types)]
    options = tuple((t, rng.choice(OPTION_VALUES[t])) for t in opt_types)
    return category, _order(category, attrs), options


def _goal_text(rng: random.Random, category, attrs, options, budget) -> str:
    desc = " ".join([*attrs, category])
    article = "an" if desc[0] in "aeiou" else "a"
    noun = f"{article} {desc}" if not category.endswith("s") else desc
    opts = ", and ".join(f"{t}: {v}" for t, v in options)
    return f"{rng.choice(OPENERS)} {noun} with {opts}, and price lower than {budget:.2f} dollars"


def _distractor(rng, used, kind, category, attrs, options, budget) -> Product:
    cat, want = CATEGORY[category], dict(options)
    over = _price(rng, budget + 1, budget * 2 + 5)
    under = _price(rng, cat.price[0] * 0.6, budget - 1)
    pool = allowed_attributes(category, False)
    attrs = list(attrs)
    if kind == "attribute miss":
        others = [a for a in pool if a not in attrs]
        attrs[rng.randrange(len(attrs))] = rng.choice(others)
        return _product(rng, used, category, attrs, under, kind, include={t: (v,) for t, v in options})
    if kind == "option miss":
        t = rng.choice(sorted(want))
        inc = {o: (v,) for o, v in options if o != t}
        return _product(rng, used, category, attrs, under, kind, include=inc, exclude={t: (want[t],)})
    if kind == "over budget":
        return _product(rng, used, category, attrs, over, kind, include={t: (v,) for t, v in options})
    # decoy: same type and attributes, only other colours (or other values of the goal's option), over budget
    t = "color" if "color" in want else options[0][0]
    inc = {o: (v,) for o, v in options if o != t}
    return _product(rng, used, category, attrs, over, kind, include=inc, exclude={t: (want[t],)})


def _filler(rng, used, category, ood) -> Product:
    cat = CATEGORY[category]
    attrs = rng.sample(allowed_attributes(category, ood), rng.randint(1, 3))
    return _product(rng, used, category, attrs, _price(rng, *cat.price), "filler")


@functools.lru_cache(maxsize=512)
def build_world(seed: int, difficulty: int, split: str) -> World:
    """The catalogue and goal of one task (deterministic in ``seed``, ``difficulty`` and ``split``)."""
    rng = random.Random(seed)
    ood = split == "ood"
    n_products, n_cats, _, _, n_distractors = LEVELS[difficulty]
    category, attrs, options = _goal(rng, difficulty, ood)
    cat = CATEGORY[category]
    used: set[str] = set()
    # target price in the lower part of the range; budget = next multiple of 10 above it
    price = _price(rng, cat.price[0], cat.price[0] + 0.6 * (cat.price[1] - cat.price[0]))
    budget = float((int(price) // 10 + 1) * 10)
    target = _product(rng, used, category, list(attrs) + rng.sample(
        [a for a in allowed_attributes(category, ood) if a not in attrs], rng.randint(0, 1)), price, "target",
        include={t: (v,) for t, v in options})
    # the paper's decoy first whenever the goal names a colour, then the other close distractors
    kinds = ["decoy" if "color" in dict(options) else "over budget"]
    rest = ["attribute miss", "option miss", "over budget", "decoy"]
    while len(kinds) < n_distractors:
        kinds.append(rest[(len(kinds) - 1) % 4] if len(kinds) <= 4 else rng.choice(rest))
    products = [target] + [_distractor(rng, used, k, category, attrs, options, budget) for k in kinds]
    # other categories: the goal's department first (near misses), then any allowed type
    pool = [c.name for c in CATEGORIES if c.name != category and (ood or c.name not in OOD_CATEGORIES)]
    near = [c for c in pool if CATEGORY[c].department == cat.department]
    far = [c for c in pool if c not in near]
    rng.shuffle(near)
    rng.shuffle(far)
    cats = [category] + (near[:1] + far + near[1:])[: n_cats - 1]
    i = 0
    while len(products) < n_products:
        p = _filler(rng, used, cats[i % len(cats)], ood)
        i += 1
        if not matches_goal(p, category, attrs, options, budget):
            products.append(p)
    rng.shuffle(products)
    text = _goal_text(rng, category, attrs, options, budget)
    goal = Goal(category, attrs, options, budget, target.pid, text)
    return World(tuple(products), goal, _suggestions(rng, products, goal))


def matches_goal(p: Product, category, attrs, options, budget) -> bool:
    return matches(p, Goal(category, tuple(attrs), tuple(options), budget, "", ""))


def _suggestions(rng: random.Random, products, goal: Goal) -> tuple[str, ...]:
    """Search-page suggestions from the catalogue vocabulary: every type, and some (attribute, type)
    pairs; never the expert's full query (which also names the option values)."""
    cats = sorted({p.category for p in products})
    pairs = sorted({f"{a} {p.category}" for p in products for a in p.attributes})
    picked = sorted(rng.sample(pairs, min(len(pairs), 12 - len(cats))))
    return tuple(f"search[{q}]" for q in cats + picked if q != goal.query)
