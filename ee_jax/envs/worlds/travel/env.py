"""``travel``: a TravelPlanner-like built-in. Plan a multi-day round trip (transport, accommodation,
meals) from a per-task catalogue under a budget and commonsense/hard constraints.

Actions (closed grammar; ``admissible_actions()`` lists the legal ones in a fixed order):

* ``view transport day D`` / ``view accommodations CITY`` / ``view restaurants CITY``: show a listing
  (at most 9 entries, no paging) and make its entries bookable;
* ``set day D transport|accommodation|lunch|dinner ID``: fill an empty slot with an entry of the
  listing on view (``accommodation`` on day D is the night of day D); meals are taken in the day's
  city (where one sleeps that night; on the last day, where one leaves from);
* ``clear day D SLOT``: empty a slot;
* ``submit plan``: end the episode and evaluate the plan. **Submitting is irreversible**; every other
  action can be undone, so deviations never ruin an episode before it.

After every set/clear a templated message says what changed, the money spent against the budget and
the slots still empty, plus a note for mistakes the booking system would notice (wrong destination,
too many guests, a repeated restaurant, a stay shorter than its minimum nights, over budget). Hard
constraints (transport mode, departure time, cuisine, rating, room type, house rule) are not flagged.

Reward: 0 until ``submit plan``, then the fraction of all constraints satisfied (``score``);
``won`` (= ``info["final_pass"]``) when all are. ``info`` on submit also holds ``commonsense_micro``,
``commonsense_macro``, ``hard_micro``, ``hard_macro`` and ``failed``.

Splits: ``ood`` tasks use held-out city names, include held-out cuisines in every city's listing and
always combine the ``no_mode`` and ``room_type`` constraints; train/valid/test never do any of these.
Difficulty 1/2/3: 3/5/7 days through 1/2/3 cities, 3/4/5 hard constraints (budget included), larger
listings, and a budget 30%/18%/8% above the cheapest compliant plan. The oracle (``oracle="state"``)
solves the cheapest compliant completion of the current plan exactly (``travel_catalog.analyze``):
while that is impossible it clears the slot whose removal helps most, otherwise it fills an empty slot
(viewing the listing first), and submits a complete feasible plan.
"""

from __future__ import annotations

import re

from ee_jax.envs.base import Env, Task
from ee_jax.envs.worlds.travel.catalog import COMMONSENSE, Slot, World, analyze, evaluate, generate

_HELP = ("Actions: view transport day D; view accommodations CITY; view restaurants CITY; "
         "set day D transport|accommodation|lunch|dinner ID; clear day D SLOT; submit plan.")


class TravelEnv(Env):
    """Plan a round trip from a catalogue under a budget and commonsense/hard constraints."""

    name = "travel"
    description = ("TravelPlanner-like trip planning: view catalogue listings, set transport, accommodation and "
                   "meals for each day under a budget and hard constraints, then submit; exact solver oracle")
    action_space = "closed"
    branching = "snapshot"
    oracle = "state"
    difficulties = (1, 2, 3)
    default_difficulty = 1
    default_max_steps = 60
    _state_attrs = ("plan", "view")

    def __init__(self, max_steps: int | None = None, **options):
        super().__init__(max_steps=max_steps, **options)
        self.world: World | None = None
        self.plan: dict[Slot, str] = {}
        self.view: tuple | None = None  # ("transport", day) | ("accommodations", city) | ("restaurants", city)

    # ----------------------------------------------------------------- tasks
    def _generate(self, split: str, difficulty: int, index: int, seed: int):
        """Params summarise the itinerary and constraints."""
        w = generate(seed, split, difficulty)
        # comma-joined strings, not lists: the Task stays hashable and JSON round-trips to itself
        params = {"origin": w.origin, "cities": ",".join(w.cities), "nights": ",".join(map(str, w.nights)),
                  "people": w.people, "budget": w.budget, "constraints": ",".join(sorted(w.hard)),
                  "cuisines": ",".join(sorted({r.cuisine for r in w.restaurants}))}
        return w.goal(), params, ()

    # ----------------------------------------------------------------- episode
    def _reset(self, task: Task) -> str:
        self.world = generate(task.seed, task.split, task.difficulty)
        self.plan, self.view = {}, None
        return (f"{self.world.goal()} Each restaurant at most once; respect minimum nights and guest limits. "
                f"To fill: {self.world.remaining_text({})}. View listings, set slots, then submit plan.")

    def _load_state_dict(self, state: dict) -> None:
        super()._load_state_dict(state)
        if self.task is not None:  # the world is derived from the task (cached), not snapshotted
            self.world = generate(self.task.seed, self.task.split, self.task.difficulty)

    def _step(self, action: str) -> tuple[str, float, bool, dict]:
        w, a = self.world, action.lower()
        if a in ("submit plan", "submit"):
            return self._submit()
        m = re.fullmatch(r"view (transport day (\d+)|accommodations? (.+)|restaurants? (.+))", a)
        if m:
            return self._view(m)
        m = re.fullmatch(r"(set|clear) day (\d+) (transport|accommodation|lunch|dinner)(?: (\w+))?", a)
        if not m:
            return self._invalid(f"Unknown action '{action}'. {_HELP}")
        verb, day, kind, item = m.group(1), int(m.group(2)), m.group(3), (m.group(4) or "").upper()
        slot = (day, kind)
        if slot not in w.slot_index:
            return self._invalid(f"There is no {kind} slot on day {day}. Slots: {w.remaining_text({})}.")
        if verb == "clear":
            if item:
                return self._invalid(f"Use 'clear day {day} {kind}' (no ID).")
            if slot not in self.plan:
                return self._invalid(f"Day {day} {kind} is already empty. Empty: {w.remaining_text(self.plan)}.")
            old = self.plan.pop(slot)
            return self._progress(f"Cleared day {day} {kind} (was {old}).")
        if not item:
            return self._invalid(f"Say which entry: 'set day {day} {kind} ID'.")
        if slot in self.plan:
            return self._invalid(f"Day {day} {kind} is already {self.plan[slot]}; clear day {day} {kind} first.")
        if item not in self._listing_ids(slot):
            return self._invalid(f"{item} is not bookable for day {day} {kind} now; "
                                 f"{self._view_action(slot)} first and pick an ID from it.")
        self.plan[slot] = item
        return self._progress(self._set_message(slot, item))

    def _invalid(self, text: str) -> tuple[str, float, bool, dict]:
        return text, 0.0, False, {"valid": False}

    def _view(self, m: re.Match) -> tuple[str, float, bool, dict]:
        w = self.world
        if m.group(2) is not None:
            day = int(m.group(2))
            if day not in w.route:
                return self._invalid(f"No travel on day {day}; travel days: {', '.join(map(str, w.route))}.")
            self.view = ("transport", day)
            src, dst = w.route[day]
            lines = [t.line() for t in w.transport_by_day[day]]
            return f"Day {day} departures from {src} (next stop {dst}):\n" + "\n".join(lines), 0.0, False, {}
        kind = "accommodations" if m.group(3) is not None else "restaurants"
        city = next((c for c in w.cities if c.lower() == (m.group(3) or m.group(4))), None)
        if city is None:
            return self._invalid(f"No {kind} listed there; cities on this trip: {', '.join(w.cities)}.")
        self.view = (kind, city)
        if kind == "accommodations":
            a, b = w.blocks[city]
            head = f"Accommodations in {city} (nights {a}-{b}):" if b > a else f"Accommodations in {city} (night {a}):"
            lines = [s.line() for s in w.stays_by_city[city]]
        else:
            days = sorted(d for d, c in w.day_city.items() if c == city)
            when = f"day {days[0]}" if len(days) == 1 else f"days {days[0]}-{days[-1]}"
            head = f"Restaurants in {city} (meals on {when}):"
            lines = [r.line() for r in w.restaurants_by_city[city]]
        return head + "\n" + "\n".join(lines), 0.0, False, {}

    def _progress(self, text: str) -> tuple[str, float, bool, dict]:
        w = self.world
        spent = w.plan_cost(self.plan)
        money = f"You have spent ${spent} of your ${w.budget} budget"
        money += f" (over by ${spent - w.budget})." if spent > w.budget else "."
        left = w.remaining_text(self.plan)
        tail = f" Empty: {left}." if left else " All slots are filled; submit plan when ready."
        return f"{text} {money}{tail}", 0.0, False, {}

    def _set_message(self, slot: Slot, item_id: str) -> str:
        w, (day, kind) = self.world, slot
        x = w.items[item_id]
        cost = w.cost(slot, item_id)
        who = "" if kind == "accommodation" or w.people == 1 else f" for {w.people}"
        if kind == "transport":
            what = f"{x.mode} {x.src}->{x.dst}"
        elif kind == "accommodation":
            what = f"{x.room_type} in {x.city}, night {day}"
        else:
            what = f"{x.cuisine} in {x.city}"
        notes = []
        faults = w.faults(slot, item_id)
        if "route" in faults:
            notes.append(f"it goes to {x.dst}, but your next stop is {w.route[day][1]}")
        if "occupancy" in faults:
            notes.append(f"{item_id} sleeps {x.guests}, you are {w.people}")
        if kind == "accommodation":
            run = self._run_length(day, item_id)
            if run < x.min_nights:
                notes.append(f"{item_id} needs {x.min_nights} consecutive nights, {run} booked")
        if kind in ("lunch", "dinner"):
            other = [s for s in w.slots if s != slot and self.plan.get(s) == item_id and s[1] in ("lunch", "dinner")]
            if other:
                notes.append(f"{item_id} is already booked for day {other[0][0]} {other[0][1]}")
        note = f" Note: {'; '.join(notes)}." if notes else ""
        return f"Set day {day} {kind}: {item_id} {what}, ${cost}{who}.{note}"

    def _run_length(self, day: int, item_id: str) -> int:
        a = b = day
        while self.plan.get((a - 1, "accommodation")) == item_id:
            a -= 1
        while self.plan.get((b + 1, "accommodation")) == item_id:
            b += 1
        return b - a + 1

    def _submit(self) -> tuple[str, float, bool, dict]:
        w = self.world
        res = evaluate(w, self.plan)
        common = [res[c] for c in COMMONSENSE]
        hard = [v for k, v in res.items() if k not in COMMONSENSE]
        score = sum(res.values()) / len(res)
        won = all(res.values())
        failed = [k for k, v in res.items() if not v]
        text = (f"Plan submitted: ${w.plan_cost(self.plan)} of ${w.budget}. Commonsense {sum(common)}/{len(common)}, "
                f"hard {sum(hard)}/{len(hard)} satisfied. ")
        text += "All constraints satisfied!" if won else f"Failed: {', '.join(failed)}. Score {score:.2f}."
        info = {"score": score, "won": won, "lost": not won, "final_pass": won,
                "commonsense_micro": sum(common) / len(common), "commonsense_macro": float(all(common)),
                "hard_micro": sum(hard) / len(hard), "hard_macro": float(all(hard)), "failed": failed}
        return text, score - self.score, True, info

    # ----------------------------------------------------------------- actions
    def _listing_ids(self, slot: Slot) -> list[str]:
        """The entries bookable for ``slot`` under the current view (empty if the view does not fit)."""
        w, (day, kind) = self.world, slot
        if kind == "transport":
            return [t.id for t in w.transport_by_day[day]] if self.view == ("transport", day) else []
        if kind == "accommodation":
            city = w.night_city[day]
            return [s.id for s in w.stays_by_city[city]] if self.view == ("accommodations", city) else []
        city = w.day_city[day]
        return [r.id for r in w.restaurants_by_city[city]] if self.view == ("restaurants", city) else []

    def _view_action(self, slot: Slot) -> str:
        day, kind = slot
        if kind == "transport":
            return f"view transport day {day}"
        city = self.world.slot_city(slot)
        return f"view accommodations {city}" if kind == "accommodation" else f"view restaurants {city}"

    def admissible_actions(self) -> list[str]:
        """Set-actions for the listing on view (empty slots x its entries), clears of filled slots,
        the other views, and ``submit plan``."""
        if self.world is None or self.done:
            return []
        w = self.world
        acts = [f"set day {d} {k} {i}" for d, k in w.slots if (d, k) not in self.plan
                for i in self._listing_ids((d, k))]
        acts += [f"clear day {d} {k}" for d, k in w.slots if (d, k) in self.plan]
        views = [f"view transport day {d}" for d in w.route]
        views += [f"view {k} {c}" for c in w.cities for k in ("accommodations", "restaurants")]
        current = self._current_view_action()
        acts += [v for v in views if v != current]
        return acts + ["submit plan"]

    def _current_view_action(self) -> str | None:
        if self.view is None:
            return None
        kind, where = self.view
        return f"view transport day {where}" if kind == "transport" else f"view {kind} {where}"

    def oracle_action(self) -> str | None:
        """Clear while the plan cannot be completed within the constraints; else fill an empty slot from
        the cheapest compliant completion (one bookable now if any, else view the next slot's listing);
        submit when complete."""
        if self.world is None or self.done:
            return None
        w = self.world
        an = analyze(w, self.plan)
        if not an.feasible:
            def damage(slot: Slot) -> tuple:
                rest = analyze(w, {s: i for s, i in self.plan.items() if s != slot})
                return rest.bad, rest.cost, w.slot_index[slot]

            day, kind = min(self.plan, key=damage)
            return f"clear day {day} {kind}"
        empty = [s for s in w.slots if s not in self.plan]
        if not empty:
            return "submit plan"
        for s in empty:
            if an.completion[s] in self._listing_ids(s):
                return f"set day {s[0]} {s[1]} {an.completion[s]}"
        return self._view_action(empty[0])

