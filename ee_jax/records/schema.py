"""Versioned record schemas of the experience store: expert steps, transitions, reflections.

Each record is one JSON object inside an ArrayRecord shard, tagged with its ``kind`` and schema
version ``v``. :func:`validate` checks every field's type on read and names the shard, the record
and the field on failure; a version this code does not know is refused rather than guessed at.

A :class:`State` is what the agent saw before acting: the goal, the steps so far, the current
observation and (closed action spaces) the admissible actions. The one state renderer
(:mod:`ee_jax.records.prompts`) turns it into the prompt every stage uses.
"""

from __future__ import annotations

import dataclasses
from typing import Any

KINDS = ("expert_step", "transition", "reflection")
SCHEMA_VERSIONS = {"expert_step": 1, "transition": 1, "reflection": 1}
SOURCES = ("expert", "uniform", "policy")
VERDICTS = ("kept", "dropped")


class RecordError(ValueError):
    """A record that does not match its schema; the message names shard, record index and field."""


@dataclasses.dataclass(frozen=True)
class Step:
    """One past step in a state's history."""

    action: str
    observation: str


@dataclasses.dataclass(frozen=True)
class State:
    """What the agent sees before acting. ``admissible`` is None for open action spaces."""

    goal: str
    history: tuple[Step, ...]
    observation: str
    admissible: tuple[str, ...] | None

    def to_json(self) -> dict:
        return {"goal": self.goal, "history": [dataclasses.asdict(s) for s in self.history],
                "observation": self.observation,
                "admissible": None if self.admissible is None else list(self.admissible)}

    @classmethod
    def from_json(cls, d: dict) -> State:
        adm = d["admissible"]
        return cls(d["goal"], tuple(Step(h["action"], h["observation"]) for h in d["history"]),
                   d["observation"], None if adm is None else tuple(adm))


@dataclasses.dataclass(frozen=True)
class Outcome:
    """What one action did at a state: the next observation and the environment's verdict."""

    action: str
    observation: str
    reward: float
    done: bool
    valid: bool
    won: bool = False
    score: float = 0.0

    def to_json(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, d: dict) -> Outcome:
        return cls(**d)


# ---------------------------------------------------------------------------------------- field specs
# type codes: str, int, float (int accepted), bool, dict, "state", "outcome", "outcomes", "strs",
# "strs?" (list of str or None). Every field is required: records are written by this code, so a
# missing field means a foreign or truncated record.
_COMMON = {"env": "str", "task_id": "str", "split": "str", "traj_id": "str", "step": "int"}
FIELDS: dict[str, dict[str, str]] = {
    "expert_step": {**_COMMON, "task": "dict", "state": "state", "action": "str", "next_observation": "str",
                    "reward": "float", "done": "bool", "valid": "bool", "won": "bool", "score": "float",
                    "source": "str"},
    "transition": {**_COMMON, "state": "state", "action": "str", "next_observation": "str", "reward": "float",
                   "done": "bool", "valid": "bool", "won": "bool", "score": "float", "is_expert": "bool",
                   "source": "str"},
    "reflection": {**_COMMON, "state": "state", "expert": "outcome", "alternatives": "outcomes", "text": "str",
                   "generator": "str", "verdict": "str", "reason": "str"},
}
_STATE_FIELDS = {"goal": "str", "history": "steps", "observation": "str", "admissible": "strs?"}
_OUTCOME_FIELDS = {"action": "str", "observation": "str", "reward": "float", "done": "bool", "valid": "bool",
                   "won": "bool", "score": "float"}


def _type_error(where: str, field: str, expected: str, value: Any) -> RecordError:
    shown = repr(value)
    shown = shown if len(shown) <= 60 else shown[:57] + "..."
    return RecordError(f"{where}: field {field!r}: expected {expected}, got {type(value).__name__} {shown}")


def _check(where: str, field: str, code: str, value: Any) -> None:
    simple = {"str": str, "int": int, "bool": bool, "dict": dict}
    if code in simple:
        ok = isinstance(value, simple[code]) and not (code == "int" and isinstance(value, bool))
        if not ok:
            raise _type_error(where, field, code, value)
    elif code == "float":
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise _type_error(where, field, "number", value)
    elif code in ("state", "outcome"):
        spec = _STATE_FIELDS if code == "state" else _OUTCOME_FIELDS
        _check_object(where, field, spec, value)
    elif code == "outcomes":
        if not isinstance(value, list):
            raise _type_error(where, field, "list of outcomes", value)
        for i, v in enumerate(value):
            _check_object(where, f"{field}[{i}]", _OUTCOME_FIELDS, v)
    elif code == "steps":
        if not isinstance(value, list):
            raise _type_error(where, field, "list of {action, observation}", value)
        for i, v in enumerate(value):
            _check_object(where, f"{field}[{i}]", {"action": "str", "observation": "str"}, v)
    elif code == "strs?":
        if value is None:
            return
        if not isinstance(value, list) or not all(isinstance(x, str) for x in value):
            raise _type_error(where, field, "list of str or null", value)
    else:  # pragma: no cover - a typo in FIELDS
        raise AssertionError(code)


def _check_object(where: str, prefix: str, spec: dict[str, str], value: Any) -> None:
    if not isinstance(value, dict):
        raise _type_error(where, prefix, "object", value)
    missing = [k for k in spec if k not in value]
    if missing:
        raise RecordError(f"{where}: field {prefix!r} is missing {missing}")
    extra = sorted(set(value) - set(spec))
    if extra:
        raise RecordError(f"{where}: field {prefix!r} has unknown key(s) {extra}")
    for k, code in spec.items():
        _check(where, f"{prefix}.{k}", code, value[k])


def validate(record: Any, where: str = "record", kind: str | None = None) -> dict:
    """Check ``record`` against its schema and return it; ``where`` (e.g. ``"data/x.arrayrecord record 7"``)
    prefixes every error. ``kind`` (optional) is the kind the caller expects."""
    if not isinstance(record, dict):
        raise RecordError(f"{where}: expected a JSON object, got {type(record).__name__}")
    k, v = record.get("kind"), record.get("v")
    if k not in SCHEMA_VERSIONS:
        raise RecordError(f"{where}: field 'kind': unknown record kind {k!r}; expected one of {list(KINDS)}")
    if kind is not None and k != kind:
        raise RecordError(f"{where}: field 'kind': expected a {kind!r} record, got {k!r}")
    if v != SCHEMA_VERSIONS[k]:
        raise RecordError(f"{where}: field 'v': {k!r} schema version {v!r} is not supported by this ee_jax "
                          f"(it reads version {SCHEMA_VERSIONS[k]}); use the ee_jax version that wrote it")
    spec = FIELDS[k]
    missing = [f for f in spec if f not in record]
    if missing:
        raise RecordError(f"{where}: {k!r} record is missing field(s) {missing}")
    extra = sorted(set(record) - set(spec) - {"kind", "v"})
    if extra:
        raise RecordError(f"{where}: {k!r} record has unknown field(s) {extra}")
    for f, code in spec.items():
        _check(where, f, code, record[f])
    if k == "transition" and record["source"] not in SOURCES:
        raise RecordError(f"{where}: field 'source': {record['source']!r} is not one of {list(SOURCES)}")
    if k == "reflection" and record["verdict"] not in VERDICTS:
        raise RecordError(f"{where}: field 'verdict': {record['verdict']!r} is not one of {list(VERDICTS)}")
    return record


def make_record(kind: str, **fields: Any) -> dict:
    """A record of ``kind`` at the current schema version; States/Outcomes are converted to JSON."""
    rec: dict[str, Any] = {"kind": kind, "v": SCHEMA_VERSIONS[kind]}
    for key, value in fields.items():
        if isinstance(value, State | Outcome):
            value = value.to_json()
        elif isinstance(value, list | tuple) and value and isinstance(value[0], Outcome):
            value = [o.to_json() for o in value]
        rec[key] = value
    return validate(rec, f"new {kind} record", kind)


def record_state(record: dict) -> State:
    return State.from_json(record["state"])
