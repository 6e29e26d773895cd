"""``shop``: a WebShop-like online store with a procedurally generated catalogue (pure Python).

Pages and actions (WebShop grammar):

* **search** page: ``search[free text]`` -- any query; products are ranked by how many distinct query
  words occur in their title (brand, attributes, type), ties broken by catalogue order (seeded);
  products with no overlap are not listed. Options (colour, size ...) are not indexed: they show only on
  product pages. ``admissible_actions()`` here lists a few suggested queries built from the
  catalogue vocabulary (each type, some "attribute type" pairs), never the expert's query; any other
  ``search[...]`` is accepted too.
* **results** pages (3 products each: id, title, price): ``click[ITEM_ID]``, ``click[next >]``,
  ``click[< prev]``, ``click[back to search]``.
* **product** page (title, price, options): ``click[OPTION VALUE]`` selects a value (e.g. ``click[blue]``,
  ``click[m]``), ``click[description]``, ``click[buy now]``, ``click[< prev]`` (back to the results
  page), ``click[back to search]``. The **description** page has ``click[< prev]`` and
  ``click[back to search]``.

Buying ends the episode and is the only irreversible action; every other action can be undone by
navigation. Invalid actions (unknown syntax, a button not on the page, an option the product does not
offer) leave the state unchanged and say what is possible.

Reward (WebShop-like), given once at ``buy now`` (before it, score 0, so rewards sum to the final score)::

    score = r_type * (|required attributes the product has| + |required options selected|
                      + [price < budget]) / (|required attributes| + |required options| + 1)

with ``r_type`` = 1 for the goal's product type, 0.5 for another type of the same department
(e.g. a t-shirt for a shirt), 0 otherwise. ``won`` iff the score is 1 (the one target product bought
with the right options). The instruction is repeated on every page, as in WebShop.

Difficulty (``shop_catalog.LEVELS``): 1: 9 products of 3 types, 1 required attribute and 1 option,
2 distractors; 2: 18 products of 5 types, 2 attributes, 2 options, 4 distractors; 3: 30 products of 7
types, 2-3 attributes, 2 options, 7 distractors (ties with the target push it to later result pages).
Splits: train/valid/test share the generator (different seeds); ood goals use product types or
(type, attribute) combinations that the other splits never generate (``shop_catalog.uses_ood``).
The oracle plans from any state with the catalogue: back to search if cheaper, search the goal's
attributes, type and option values, page to the target, select the options, buy.
"""

from __future__ import annotations

import re

from ee_jax.envs.base import Env, Task
from ee_jax.envs.worlds.shop.catalog import World, build_world, score_purchase, tokenize

PER_PAGE = 3
_ACTION = re.compile(r"(search|click)\[(.*)\]", re.IGNORECASE)


def _btn(names) -> str:
    return " ".join(f"[{n}]" for n in names)


class ShopEnv(Env):
    """WebShop-like shopping: search, browse result pages, pick options, buy the product matching the
    instruction's type, attributes, options and budget."""

    name = "shop"
    description = ("WebShop-like online store: search[query] the catalogue, click[ITEM_ID] a result, click[OPTION] "
                   "values, click[buy now]; reward = match of type, attributes, options and budget.")
    action_space = "closed"
    branching = "snapshot"
    oracle = "state"
    difficulties = (1, 2, 3)
    default_difficulty = 1
    default_max_steps = 15
    _state_attrs = ("_page", "_query", "_results", "_page_no", "_item", "_selected")

    def __init__(self, max_steps: int | None = None, **options):
        super().__init__(max_steps=max_steps, **options)
        self._world: World | None = None
        self._key = None
        self._reset_state()

    def _reset_state(self) -> None:
        self._page = "search"  # search | results | item | description | done
        self._query = ""
        self._results: tuple[str, ...] = ()
        self._page_no = 0
        self._item: str | None = None
        self._selected: tuple[tuple[str, str], ...] = ()

    # ----------------------------------------------------------------- tasks
    def _generate(self, split: str, difficulty: int, index: int, seed: int):
        world = build_world(seed, difficulty, split)
        g = world.goal
        params = {"category": g.category, "attributes": list(g.attributes), "options": dict(g.options),
                  "budget": g.budget, "target": g.target}
        return g.text, params, _gold_path(world)

    def world(self) -> World:
        """The current task's catalogue and goal (privileged; for the oracle, tests and analysis)."""
        return self._world

    def _sync_world(self) -> None:
        key = (self.task.seed, self.task.difficulty, self.task.split)
        if key != self._key:
            self._world, self._key = build_world(*key), key

    def _load_state_dict(self, state: dict) -> None:
        super()._load_state_dict(state)
        if self.task is not None:  # a snapshot of another task brings its own catalogue
            self._sync_world()

    # ----------------------------------------------------------------- episode
    def _reset(self, task: Task) -> str:
        self._sync_world()
        self._reset_state()
        return self._render()

    def _step(self, action: str) -> tuple[str, float, bool, dict]:
        m = _ACTION.fullmatch(action)
        if not m:
            return self._invalid(f"Unknown action {action!r}: actions are search[keywords] or click[button].")
        verb, arg = m.group(1).lower(), m.group(2).strip()
        if verb == "search":
            if self._page != "search":
                return self._invalid("You can only search on the search page; click[back to search] first.")
            if not tokenize(arg):
                return self._invalid("Empty query: type keywords, e.g. search[cotton shirt].")
            self._query, self._results, self._page_no = arg, self._search(arg), 0
            self._page = "results"
            return self._ok()
        return self._click(arg)

    def _click(self, arg: str) -> tuple[str, float, bool, dict]:
        low, page = arg.lower(), self._page
        if page == "search":
            return self._invalid(f"Nothing to click on the search page: type search[keywords]. ({arg!r})")
        if low == "back to search":
            self._reset_state()
            return self._ok()
        if page == "results":
            shown = self._shown()
            if low == "next >" and self._has_next():
                self._page_no += 1
            elif low == "< prev" and self._page_no > 0:
                self._page_no -= 1
            elif arg.upper() in shown:
                self._item, self._selected, self._page = arg.upper(), (), "item"
            else:
                return self._invalid(f"No button [{arg}] on this results page.")
            return self._ok()
        if page == "description":
            if low != "< prev":
                return self._invalid(f"No button [{arg}] on the description page.")
            self._page = "item"
            return self._ok()
        product = self._world.product(self._item)
        if low == "< prev":
            self._page, self._item, self._selected = "results", None, ()
        elif low == "description":
            self._page = "description"
        elif low == "buy now":
            return self._buy(product)
        else:
            for t, values in product.options:
                if low in values:
                    self._selected = tuple(sorted({**dict(self._selected), t: low}.items()))
                    return self._ok()
            return self._invalid(f"No option or button [{arg}] on this product page.")
        return self._ok()

    def _buy(self, product) -> tuple[str, float, bool, dict]:
        goal = self._world.goal
        score, parts = score_purchase(product, dict(self._selected), goal)
        won = score == 1.0
        chosen = ", ".join(f"{t}: {v}" for t, v in self._selected) or "no options selected"
        self._page = "done"
        obs = (f"You bought [{product.pid}] {product.title} ({chosen}) for ${product.price:.2f}. "
               f"Match score {score:.2f}: type {'ok' if parts['type'] == 1 else 'wrong'}, attributes "
               f"{parts['attributes']}/{len(goal.attributes)}, options {parts['options']}/{len(goal.options)}, "
               f"price {'within' if parts['price'] else 'over'} the ${goal.budget:.2f} budget. The episode is over.")
        return obs, score, True, {"valid": True, "score": score, "won": won, "lost": not won}

    def _ok(self) -> tuple[str, float, bool, dict]:
        return self._render(), 0.0, False, {"valid": True, "score": 0.0}

    def _invalid(self, why: str) -> tuple[str, float, bool, dict]:
        options = self.admissible_actions()
        listed = ", ".join(options[:8]) + (", ..." if len(options) > 8 else "")
        hint = "Any search[keywords] works here, e.g. " if self._page == "search" else "Possible: "
        return f"Invalid action. {why} {hint}{listed}", 0.0, False, {"valid": False, "score": 0.0}

    # ----------------------------------------------------------------- pages
    def _search(self, query: str) -> tuple[str, ...]:
        return rank(self._world, query)

    def _shown(self) -> list[str]:
        return list(self._results[self._page_no * PER_PAGE:(self._page_no + 1) * PER_PAGE])

    def _has_next(self) -> bool:
        return (self._page_no + 1) * PER_PAGE < len(self._results)

    def _nav(self) -> list[str]:
        nav = ["back to search"]
        if self._page_no > 0:
            nav.append("< prev")
        if self._has_next():
            nav.append("next >")
        return nav

    def _render(self) -> str:
        head = f"Instruction: {self._world.goal.text}."
        if self._page == "search":
            return f"{head} [Search page] Type search[keywords] to find products."
        if self._page == "results":
            n = len(self._results)
            if not n:
                return f"{head} No products match '{self._query}'. {_btn(['back to search'])}"
            pages = (n + PER_PAGE - 1) // PER_PAGE
            rows = " ".join(f"[{p.pid}] {p.title} ${p.price:.2f};" for p in map(self._world.product, self._shown()))
            return (f"{head} Results for '{self._query}' (page {self._page_no + 1} of {pages}, {n} products): "
                    f"{rows} {_btn(self._nav())}")
        p = self._world.product(self._item)
        if self._page == "description":
            attrs = ", ".join(p.attributes)
            colours = dict(p.options).get("color", ())
            return (f"{head} Description of [{p.pid}]: a {p.category} by {p.brand}; features: {attrs}; "
                    f"comes in {len(colours)} colours. {_btn(['< prev', 'back to search'])}")
        opts = " ".join(f"{t}: {_btn(v)};" for t, v in p.options)
        sel = ", ".join(f"{t}={v}" for t, v in self._selected) or "none"
        return (f"{head} [{p.pid}] {p.title}. Price: ${p.price:.2f}. {opts} Selected: {sel}. "
                f"{_btn(['description', 'buy now', '< prev', 'back to search'])}")

    def admissible_actions(self) -> list[str]:
        if self.done or self._page == "done":
            return []
        if self._page == "search":
            return list(self._world.suggestions)
        if self._page == "results":
            return [f"click[{pid}]" for pid in self._shown()] + [f"click[{n}]" for n in self._nav()]
        if self._page == "description":
            return ["click[< prev]", "click[back to search]"]
        p = self._world.product(self._item)
        values = [f"click[{v}]" for _, vs in p.options for v in vs]
        return values + ["click[description]", "click[buy now]", "click[< prev]", "click[back to search]"]

    # ----------------------------------------------------------------- oracle
    def oracle_action(self) -> str | None:
        """Plan from the current state: the cheapest way to the target's page, then its options, then buy."""
        if self.task is None or self.done or self._page == "done":
            return None
        goal = self._world.goal
        gold_page = self._search(goal.query).index(goal.target) // PER_PAGE
        restart = 2 + gold_page  # back to search, search, pages
        if self._page == "search":
            return f"search[{goal.query}]"
        if self._page == "description":
            return "click[< prev]"
        if self._page == "item" and self._item == goal.target:
            selected = dict(self._selected)
            for t, v in goal.options:
                if selected.get(t) != v:
                    return f"click[{v}]"
            return "click[buy now]"
        stay = abs(self._results.index(goal.target) // PER_PAGE - self._page_no) \
            if goal.target in self._results else restart + 1
        if self._page == "item":  # wrong product: back to its results page unless restarting is cheaper
            return "click[< prev]" if 1 + min(stay, restart) <= restart else "click[back to search]"
        if stay > restart:
            return "click[back to search]"
        target_page = self._results.index(goal.target) // PER_PAGE
        if target_page > self._page_no:
            return "click[next >]"
        if target_page < self._page_no:
            return "click[< prev]"
        return f"click[{goal.target}]"


def rank(world: World, query: str) -> tuple[str, ...]:
    """Search: product ids by number of distinct query words in the title, ties in catalogue order."""
    words = list(dict.fromkeys(tokenize(query)))
    scored = [(-sum(w in p.tokens for w in words), i, p.pid) for i, p in enumerate(world.products)]
    return tuple(pid for s, _, pid in sorted(scored) if s < 0)


def _gold_path(world: World) -> tuple[str, ...]:
    """The expert's path from reset (what the oracle plays without deviations)."""
    goal = world.goal
    page = rank(world, goal.query).index(goal.target) // PER_PAGE
    return (f"search[{goal.query}]", *["click[next >]"] * page, f"click[{goal.target}]",
            *(f"click[{v}]" for _, v in goal.options), "click[buy now]")
