"""The environment protocol: ``Task``, ``StepResult`` and the ``Env`` base class.

Every environment, built-in or adapter, is a text game driven by string actions:

* ``reset(task) -> observation``; ``step(action) -> StepResult(observation, reward, done, info)``;
* ``admissible_actions()`` lists the legal actions (``None`` for an open action space);
* ``oracle_action()`` is the expert's next action, planned from the *current* state where the
  environment can (``oracle = "state"``), otherwise read from the gold path stored in the task
  (``oracle = "gold"``; after a deviation from it the oracle returns ``None``);
* ``snapshot()/restore()`` when ``branching = "snapshot"``; ``branching = "replay"`` declares that
  branching must reset and replay the action prefix (see ``ee_jax.envs.branching``).

``info`` always carries ``valid`` (was the action legal), ``score`` (progress or match score in
[0, 1]), ``won``, ``lost``, ``truncated`` (step limit) and ``steps``.
"""

from __future__ import annotations

import abc
import copy
import dataclasses
import json
import re
from typing import Any, ClassVar, NamedTuple

SPLITS = ("train", "valid", "test", "ood")
"""``train``; ``valid`` and ``test``: same distribution as train, unseen seeds (``valid`` picks
checkpoints, ``test`` reports); ``ood``: held-out compositions, vocabulary, layouts or variants."""

INFO_KEYS = ("valid", "score", "won", "lost", "truncated", "steps")


class EnvError(ValueError):
    """Bad environment name, task id, split or option: the message says which and what was expected."""


@dataclasses.dataclass(frozen=True)
class Task:
    """One episode's specification. ``gold`` is the stored expert path (needed where the
    environment cannot plan from the current state, or where regenerating it is not reproducible);
    ``params`` holds environment-specific settings (JSON values)."""

    env: str
    id: str
    split: str
    seed: int
    goal: str
    difficulty: int = 1
    gold: tuple[str, ...] = ()
    params: tuple[tuple[str, Any], ...] = ()

    def param(self, key: str, default: Any = None) -> Any:
        return dict(self.params).get(key, default)

    def to_json(self) -> dict:
        d = dataclasses.asdict(self)
        d["gold"] = list(self.gold)
        d["params"] = dict(self.params)
        return d

    @classmethod
    def from_json(cls, d: dict) -> Task:
        fields = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - fields
        if unknown:
            raise EnvError(f"task record has unknown field(s) {sorted(unknown)}; expected {sorted(fields)}")
        missing = {"env", "id", "split", "seed", "goal"} - set(d)
        if missing:
            raise EnvError(f"task record is missing field(s) {sorted(missing)}")
        return cls(env=d["env"], id=d["id"], split=d["split"], seed=int(d["seed"]), goal=d["goal"],
                   difficulty=int(d.get("difficulty", 1)), gold=tuple(d.get("gold", ())),
                   params=tuple(sorted(dict(d.get("params", {})).items())))


class StepResult(NamedTuple):
    observation: str
    reward: float
    done: bool
    info: dict


def check_split(split: str) -> str:
    if split not in SPLITS:
        raise EnvError(f"unknown split {split!r}; expected one of {list(SPLITS)}")
    return split


class Env(abc.ABC):
    """Base class of every environment. Subclasses set the class attributes and implement
    ``make_tasks``, ``_reset``, ``_step``, ``admissible_actions`` and ``oracle_action``.

    The base class keeps the step counter, the step limit, the ``done`` latch and the ``info``
    keys consistent, so each environment only writes its own game logic.
    """

    name: ClassVar[str] = ""
    description: ClassVar[str] = ""
    action_space: ClassVar[str] = "closed"  # "closed" (admissible list) | "open"
    branching: ClassVar[str] = "snapshot"  # "snapshot" | "replay"
    oracle: ClassVar[str] = "state"  # "state" (plans from any state) | "gold" (stored path)
    difficulties: ClassVar[tuple[int, ...]] = (1, 2, 3)
    default_difficulty: ClassVar[int] = 1
    default_max_steps: ClassVar[int] = 30

    def __init__(self, max_steps: int | None = None, **options: Any):
        if options:
            raise EnvError(f"environment {self.name!r} got unknown option(s) {sorted(options)}")
        self.max_steps = int(max_steps or self.default_max_steps)
        self.task: Task | None = None
        self.steps = 0
        self.done = False
        self.score = 0.0
        self.actions: list[str] = []

    # ----------------------------------------------------------------- tasks
    def make_tasks(self, split: str, n: int, start: int = 0, difficulty: int | None = None) -> list[Task]:
        """The tasks ``start .. start+n-1`` of ``split``: deterministic, the same on every machine.

        Seeded generators implement ``_generate`` and get ids ``SPLIT-dD-I`` and seeds from
        ``task_seed``; environments with their own task lists (the adapters) override this instead."""
        check_split(split)
        d = self._difficulty(difficulty)
        tasks = []
        for i in range(start, start + n):
            seed = task_seed(self.name, split, d, i)
            goal, params, gold = self._generate(split, d, i, seed)
            tasks.append(Task(self.name, f"{split}-d{d}-{i}", split, seed, goal, d, gold=tuple(gold),
                              params=tuple(sorted(params.items()))))
        return tasks

    def _generate(self, split: str, difficulty: int, index: int, seed: int) -> tuple[str, dict, tuple[str, ...]]:
        """``(goal, params, gold)`` of one generated task."""
        raise NotImplementedError(f"{type(self).__name__} must implement _generate or override make_tasks")

    def get_task(self, task_id: str) -> Task:
        """Parse a task id made by ``make_tasks`` (``SPLIT-dD-I`` for the built-ins)."""
        m = re.fullmatch(r"(\w+)-d(\d+)-(\d+)", task_id)
        if not m:
            raise EnvError(f"{self.name}: task id {task_id!r} is not of the form SPLIT-dDIFFICULTY-INDEX, "
                           f"e.g. 'train-d1-0'")
        split, difficulty, index = m.group(1), int(m.group(2)), int(m.group(3))
        return self.make_tasks(split, 1, start=index, difficulty=difficulty)[0]

    def _difficulty(self, difficulty: int | None) -> int:
        d = self.default_difficulty if difficulty is None else int(difficulty)
        if d not in self.difficulties:
            raise EnvError(f"{self.name}: difficulty {d} not supported; expected one of {list(self.difficulties)}")
        return d

    # ----------------------------------------------------------------- episode
    def reset(self, task: Task) -> str:
        if task.env != self.name:
            raise EnvError(f"task {task.id!r} belongs to environment {task.env!r}, not {self.name!r}")
        self.task = task
        self.steps = 0
        self.done = False
        self.score = 0.0
        self.actions = []
        return self._reset(task)

    def step(self, action: str) -> StepResult:
        if self.task is None:
            raise EnvError(f"{self.name}: step() called before reset()")
        if self.done:
            return StepResult("The episode is over.", 0.0, True, self._info(False, won=False, lost=False))
        action = " ".join(str(action).split()) if self.action_space == "closed" else str(action).strip()
        self.steps += 1
        self.actions.append(action)
        obs, reward, done, info = self._step(action)
        info = {**info}
        info.setdefault("valid", True)
        info.setdefault("won", False)
        info.setdefault("lost", False)
        self.score = float(info.setdefault("score", self.score))
        truncated = not done and self.steps >= self.max_steps
        if truncated:
            obs = obs + f" [step limit of {self.max_steps} reached]"
        info["truncated"] = truncated
        info["steps"] = self.steps
        self.done = bool(done or truncated)
        return StepResult(obs, float(reward), self.done, info)

    def _info(self, valid: bool, won: bool, lost: bool) -> dict:
        return {"valid": valid, "score": self.score, "won": won, "lost": lost, "truncated": False,
                "steps": self.steps}

    @abc.abstractmethod
    def _reset(self, task: Task) -> str: ...

    @abc.abstractmethod
    def _step(self, action: str) -> tuple[str, float, bool, dict]: ...

    @abc.abstractmethod
    def admissible_actions(self) -> list[str] | None: ...

    def oracle_action(self) -> str | None:
        """Default for ``oracle = "gold"``: the next gold action while the episode follows the gold path."""
        if self.task is None or self.done:
            return None
        gold = self.task.gold
        n = len(self.actions)
        if n < len(gold) and list(gold[:n]) == self.actions:
            return gold[n]
        return None

    # ----------------------------------------------------------------- branching
    def snapshot(self) -> Any:
        """An opaque copy of the full episode state (``branching = "snapshot"`` only)."""
        if self.branching != "snapshot":
            raise NotImplementedError(f"{self.name} cannot snapshot; branching replays from reset")
        return copy.deepcopy(self._state_dict())

    def restore(self, snap: Any) -> None:
        if self.branching != "snapshot":
            raise NotImplementedError(f"{self.name} cannot restore; branching replays from reset")
        self._load_state_dict(copy.deepcopy(snap))

    def _state_dict(self) -> dict:
        """Built-ins keep their whole game state in attributes listed by ``_state_attrs``."""
        keys = ("task", "steps", "done", "score", "actions") + tuple(getattr(self, "_state_attrs", ()))
        return {k: getattr(self, k) for k in keys}

    def _load_state_dict(self, state: dict) -> None:
        for k, v in state.items():
            setattr(self, k, v)

    def close(self) -> None:  # noqa: B027 (optional hook, most environments hold nothing)
        """Release external resources (JVMs, subprocesses)."""

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    @classmethod
    def describe(cls) -> dict:
        return {"name": cls.name, "description": cls.description, "action_space": cls.action_space,
                "branching": cls.branching, "oracle": cls.oracle, "difficulties": list(cls.difficulties),
                "default_max_steps": cls.default_max_steps}


def task_seed(env: str, split: str, difficulty: int, index: int) -> int:
    """The seed of built-in task ``index`` of ``split``: stable across machines and Python versions
    (no ``hash()``), and different for every (env, split, difficulty, index)."""
    import hashlib

    digest = hashlib.sha256(f"{env}/{split}/{difficulty}/{index}".encode()).digest()
    return int.from_bytes(digest[:4], "little")


def observation_hash(observations) -> str:
    """A stable hash of a sequence of observations (determinism checks)."""
    import hashlib

    h = hashlib.sha256()
    for o in observations:
        h.update(json.dumps(o, sort_keys=True, default=str).encode())
    return h.hexdigest()[:16]
