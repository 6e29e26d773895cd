"""ScienceWorld (``pip install scienceworld``; Java >= 8 on PATH): 30 science-experiment task types.

**Splits.** ``train``, ``valid`` and ``test`` use ScienceWorld's train, dev and test *variations* of
the in-distribution task types (option ``tasks``; default: the 20 types not in ``OOD_TASKS``).
SW's variation folds differ by objects, substances and locations, so ``test`` is unseen variations of
seen task types. ``ood`` holds out whole task types (option ``ood_tasks``; default ``OOD_TASKS``, one
per topic, each with a sibling in training: e.g. ``freeze`` while ``boil``/``melt`` train), on their
test variations. The two lists must be disjoint, so the other splits never generate an ``ood`` task.

**Difficulty** is a single level (1): task types differ in difficulty by nature.

**Tasks** ``TASKNAME-SPLIT-VARIATION`` (e.g. ``boil-train-3``; VARIATION is SW's variation number).
``make_tasks`` deals global indices round-robin over the task types (a type whose fold has run out
is skipped). The gold path is generated at load time and stored in ``task.gold``.

**Determinism.** ScienceWorld iterates hash sets of objects keyed by JVM identity hash codes, so a
replay in the same JVM can list objects in another order, number ambiguity choices differently
(making a replayed ``0`` pick another object) and even simulate differently (other temperatures, bee
counts): measured on 14 of 30 tasks. We start the JVM with ``-XX:hashCode=2`` (constant identity
hash; option ``deterministic``, default on): every replay, in any JVM, then gives the same
observations and the same gold path (checked on all 30 tasks, 3 replays each, 2 processes). It costs
about 1.2-2x in step time.

**Speed.** We drive the jar's ``PythonInterface`` directly: a step is ``step`` + ``getScore`` +
``getCompleted`` (3-15 ms). The package's wrapper ``env.step`` also fetches look, inventory, task and
the full valid-action list on every step (~130 ms); here the valid-action list (hundreds to thousands
of actions, 50-500 ms) is only fetched when ``admissible_actions()`` is called. SW's wrapper step limit
(default 100, which truncates long tasks: gold paths reach 194 steps) is bypassed; only our
``max_steps`` (default 300) applies.

**Admissible actions** are SW's valid action-object combinations, sorted, minus unsafe alternatives:
``reset task`` (wipes progress) is never admissible; a wrong ``focus on X`` ends the episode with
failure, so among ``focus on ...`` actions only the gold's (when it is the oracle's next action) is
kept (option ``focus_actions="all"`` keeps them all; note that "gold" leaks the answer to a policy
that reads the list, and gives no focus action off the gold path). The oracle action is always
listed while the episode follows the gold path. After an "Ambiguous request" the admissible actions
are the choice numbers (same focus rule). ``valid=False`` for "No known action matches that input" /
"Unknown action" replies (they change nothing). ``score`` = SW score/100; ``won`` = score 100;
``lost`` = a negative score (wrong focus) or completion below 100.
"""

from __future__ import annotations

import re
from typing import Any

from ee_jax.envs.adapters.java import JavaServer, keep_episode
from ee_jax.envs.base import Env, EnvError, Task, check_split

OOD_TASKS = ("freeze", "measure-melting-point-unknown-substance", "test-conductivity-of-unknown-substances",
             "find-plant", "grow-fruit", "chemistry-mix-paint-tertiary-color",
             "lifespan-longest-lived-then-shortest-lived", "identify-life-stages-2",
             "inclined-plane-friction-unnamed-surfaces", "mendelian-genetics-unknown-plant")
"""Task types held out for ``ood``: one per ScienceWorld topic, each with a sibling type in training."""

FOLDS = {"train": "train", "valid": "dev", "test": "test", "ood": "test"}
"""split -> ScienceWorld variation fold."""

_INVALID = ("No known action matches that input", "Unknown action")
_AMBIGUOUS = "Ambiguous request"
_CHOICE = re.compile(r"^(\d+):\s*(.*)$", re.M)
_TASK_ID = re.compile(r"([a-z0-9-]+)-(train|valid|test|ood)-(\d+)")
_ELECTRICAL = ("power-component", "conductivity")


class ScienceWorldEnv(Env):
    """ScienceWorld behind the ``Env`` protocol (see the module docstring).

    Options: ``tasks`` / ``ood_tasks`` (task-type lists for train/valid/test and for ood),
    ``simplifications`` (SW's comma-separated string, e.g. ``"easy"``; ``noElectricalAction`` is
    dropped for the electrical tasks, which need it), ``java_heap_mb`` (default 768),
    ``deterministic`` (``-XX:hashCode=2``, default True), ``focus_actions`` (``"gold"`` or ``"all"``).
    """

    name = "scienceworld"
    description = "ScienceWorld: 30 science-experiment task types in a simulated house and lab"
    action_space = "closed"
    branching = "replay"
    oracle = "gold"
    difficulties = (1,)
    default_difficulty = 1
    default_max_steps = 300

    def __init__(self, max_steps: int | None = None, tasks: list[str] | tuple[str, ...] | str | None = None,
                 ood_tasks: list[str] | tuple[str, ...] | str | None = None, simplifications: str = "",
                 java_heap_mb: int = 768, deterministic: bool = True, focus_actions: str = "gold", **options: Any):
        super().__init__(max_steps=max_steps, **options)
        try:  # the package is optional: import on use
            from scienceworld.constants import ID2TASK, JAR_PATH
        except ImportError as e:
            raise EnvError(f"scienceworld needs the scienceworld package ({e}); pip install scienceworld") from e

        names = list(ID2TASK.values())
        ood = list(OOD_TASKS) if ood_tasks is None else [ood_tasks] if isinstance(ood_tasks, str) else list(ood_tasks)
        ind = ([t for t in names if t not in ood] if tasks is None
               else [tasks] if isinstance(tasks, str) else list(tasks))
        unknown = [t for t in ind + ood if t not in names]
        if unknown:
            raise EnvError(f"scienceworld: unknown task(s) {unknown}; expected names from {names}")
        overlap = [t for t in ind if t in ood]
        if overlap:
            raise EnvError(f"scienceworld: task(s) {overlap} are in both tasks and ood_tasks; ood must be held out")
        if not ind:
            raise EnvError("scienceworld: tasks is empty")
        if focus_actions not in ("gold", "all"):
            raise EnvError(f"scienceworld: focus_actions={focus_actions!r}; expected 'gold' or 'all'")
        self.tasks, self.ood_tasks = ind, ood
        self.simplifications = ",".join(s.strip() for s in str(simplifications or "").split(",") if s.strip())
        self.focus_actions = focus_actions
        opts = ("-XX:+UnlockExperimentalVMOptions", "-XX:hashCode=2") if deterministic else ()
        self.java = JavaServer(JAR_PATH, "scienceworld.runtime.pythonapi.PythonInterface", heap_mb=java_heap_mb,
                               java_opts=opts)
        self._variations: dict[tuple[str, str], list[int]] = {}
        self._loaded: tuple[str, int, str] | None = None  # (task, variation, simplifications) in the JVM
        self._admissible: list[str] | None = None  # cache for the current state
        self._choices: list[tuple[str, str]] | None = None  # choices of a pending "Ambiguous request"

    # ----------------------------------------------------------------- tasks
    def variations(self, task_name: str, split: str) -> list[int]:
        """SW's variation numbers of ``task_name`` in the fold used by ``split``."""
        key = (task_name, FOLDS[check_split(split)])
        if key not in self._variations:
            with keep_episode(self):
                self._load_variations(task_name)
        return self._variations[key]

    def _load_variations(self, task_name: str) -> None:
        srv = self.java.server
        srv.load(task_name, 0, "", False)
        self._loaded = None
        for fold, get in (("train", srv.getVariationsTrain), ("dev", srv.getVariationsDev),
                          ("test", srv.getVariationsTest)):
            self._variations[(task_name, fold)] = [int(v) for v in get()]

    def make_tasks(self, split: str, n: int, start: int = 0, difficulty: int | None = None) -> list[Task]:
        check_split(split)
        self._difficulty(difficulty)
        types = self.ood_tasks if split == "ood" else self.tasks
        if not types:
            raise EnvError(f"scienceworld: no task types for split {split!r} (ood_tasks is empty)")
        with keep_episode(self):
            return self._make_tasks(types, split, start, n)

    def _make_tasks(self, types: list[str], split: str, start: int, n: int) -> list[Task]:
        counts = [len(self.variations(t, split)) for t in types]
        picks, k = [], 0  # round-robin: (type, per-type index) in order of the global index
        while len(picks) < start + n:
            row = [(t, k) for t, c in zip(types, counts) if k < c]
            if not row:
                raise EnvError(f"scienceworld: split {split!r} has only {sum(counts)} tasks for {types}; "
                               f"asked for indices {start}..{start + n - 1}")
            picks.extend(row)
            k += 1
        return [self._make_task(t, split, self.variations(t, split)[i]) for t, i in picks[start:start + n]]

    def get_task(self, task_id: str) -> Task:
        """Parse ``TASKNAME-SPLIT-VARIATION`` (e.g. ``boil-train-3``) and make that task."""
        m = _TASK_ID.fullmatch(task_id)
        if not m:
            raise EnvError(f"scienceworld: task id {task_id!r} is not of the form TASKNAME-SPLIT-VARIATION, "
                           f"e.g. 'boil-train-3'")
        name, split, variation = m.group(1), m.group(2), int(m.group(3))
        types = self.ood_tasks if split == "ood" else self.tasks
        if name not in types:
            raise EnvError(f"scienceworld: task type {name!r} is not in split {split!r} (its types: {types})")
        with keep_episode(self):
            vs = self.variations(name, split)
            if variation not in vs:
                raise EnvError(f"scienceworld: variation {variation} of {name!r} is not in the SW {FOLDS[split]} "
                               f"fold ({vs[0]}..{vs[-1]})")
            return self._make_task(name, split, variation)

    def _simplifications_for(self, name: str) -> str:
        parts = [s for s in self.simplifications.split(",") if s]
        allowed = ["easy"] + [s.strip() for s in str(self.java.server.getPossibleSimplifications()).split(",")]
        bad = [s for s in parts if s not in allowed]
        if bad:
            raise EnvError(f"scienceworld: unknown simplification(s) {bad}; expected from {allowed}")
        if any(e in name for e in _ELECTRICAL):
            parts = [s for s in parts if s != "noElectricalAction"]  # these tasks need electrical actions
        return ",".join(parts)

    def _make_task(self, name: str, split: str, variation: int) -> Task:
        simpl = self._simplifications_for(name)
        srv = self.java.server
        srv.load(name, variation, simpl, True)
        self._loaded = None  # a gold-path load; reset() reloads without it
        gold = tuple(str(a) for a in srv.getGoldActionSequence())
        goal = str(srv.getTaskDescription()).strip()
        return Task(env=self.name, id=f"{name}-{split}-{variation}", split=split, seed=variation, goal=goal,
                    difficulty=1, gold=gold,
                    params=(("fold", FOLDS[split]), ("simplifications", simpl), ("task_name", name),
                            ("variation", variation)))

    # ----------------------------------------------------------------- episode
    def _reset(self, task: Task) -> str:
        key = (task.param("task_name"), int(task.param("variation", task.seed)), task.param("simplifications", ""))
        srv = self.java.server
        if self._loaded != key or not self.java.running:
            srv.load(key[0], key[1], key[2], False)
            self._loaded = key
        srv.reset()
        self._admissible, self._choices = None, None
        return str(srv.step("look around")).strip()  # as SW's own reset: the first observation is a look

    def _step(self, action: str) -> tuple[str, float, bool, dict]:
        srv = self.java.server
        obs = str(srv.step(action)).strip()
        raw = round(100 * float(srv.getScore())) / 100
        completed = bool(srv.getCompleted())
        self._admissible = None
        self._choices = _CHOICE.findall(obs) if obs.startswith(_AMBIGUOUS) else None
        valid = not obs.startswith(_INVALID)
        won = raw >= 1.0
        lost = raw < 0 or (completed and not won)
        score = min(1.0, max(0.0, raw))
        return obs, score - self.score, won or lost or completed, {"valid": valid, "score": score, "won": won,
                                                                   "lost": lost}

    def admissible_actions(self) -> list[str]:
        """Safe valid actions at the current state (see the module docstring); fetched on demand."""
        if self.done or self.task is None:
            return []
        if self._admissible is None:
            oracle = self.oracle_action()
            if self._choices is not None:
                options = list(self._choices)  # (number, the action it stands for)
            else:
                listed = {str(a) for a in self.java.server.getValidActionObjectCombinations()}
                options = [(a, a) for a in sorted(listed)]
            keep = [a for a, text in options if text != "reset task"
                    and (self.focus_actions == "all" or not text.startswith("focus on") or a == oracle)]
            if oracle is not None and oracle not in keep:
                keep.append(oracle)  # the gold's wording may differ from SW's listed referents
            self._admissible = keep
        return list(self._admissible)

    def close(self) -> None:
        """Stop the JVM (a later call starts a new one)."""
        self.java.close()
        self._loaded = None
