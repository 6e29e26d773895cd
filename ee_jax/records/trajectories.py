"""User expert trajectories in JSONL: one trajectory per line (docs/data.md has the format).

Each line is a JSON object::

    {"task": "train-d1-7", "actions": ["go to countertop 1", "take mug 1 from countertop 1", ...],
     "observations": ["You are in the middle of a room ...", "On the countertop 1, you see ...", ...]}

* ``task``: a task id the environment knows (``ee-jax envs show ENV TASK``) or a full task object
  (``Task.to_json()``: env, id, split, seed, goal, difficulty, gold, params);
* ``actions``: the expert's actions, at least one;
* ``observations`` (optional): the reset observation then one per action; when given, the replay in
  the environment must reproduce them;
* ``env`` (optional): must name the configured environment.

Lines are validated here (JSON, fields, types, known task); replay problems are found when the
trajectory is played. Either way a bad line is reported with its line number, and fails the
collection or is skipped (``experience.on_bad_line``). Identical (task, actions) pairs are kept once.
"""

from __future__ import annotations

import dataclasses
import json
import os

from ee_jax.envs.base import Env, EnvError, Task

FIELDS = {"task", "actions", "observations", "env"}


@dataclasses.dataclass
class UserTrajectory:
    line: int
    task: Task
    actions: list[str]
    observations: list[str] | None


class TrajectoryFileError(ValueError):
    """A bad line in a trajectory file; the message names the file and the line."""


def parse_line(text: str, env: Env) -> UserTrajectory:
    """One JSONL line -> a trajectory (line number filled by the caller); ValueError says what is wrong."""
    try:
        d = json.loads(text)
    except json.JSONDecodeError as e:
        raise ValueError(f"not valid JSON ({e.msg} at column {e.colno})") from None
    if not isinstance(d, dict):
        raise ValueError(f"expected a JSON object, got {type(d).__name__}")
    unknown = sorted(set(d) - FIELDS)
    if unknown:
        raise ValueError(f"unknown field(s) {unknown}; expected {sorted(FIELDS)}")
    for req in ("task", "actions"):
        if req not in d:
            raise ValueError(f"missing field {req!r}")
    if "env" in d and d["env"] != env.name:
        raise ValueError(f"field 'env' is {d['env']!r} but the configured environment is {env.name!r}")
    actions = d["actions"]
    if not isinstance(actions, list) or not actions or not all(isinstance(a, str) and a.strip() for a in actions):
        raise ValueError("field 'actions' must be a non-empty list of non-empty strings")
    obs = d.get("observations")
    if obs is not None:
        if not isinstance(obs, list) or not all(isinstance(o, str) for o in obs):
            raise ValueError("field 'observations' must be a list of strings")
        if len(obs) != len(actions) + 1:
            raise ValueError(f"field 'observations' has {len(obs)} entries; expected {len(actions) + 1} "
                             f"(the reset observation, then one per action)")
    t = d["task"]
    try:
        if isinstance(t, str):
            task = env.get_task(t)
        elif isinstance(t, dict):
            task = Task.from_json(t)
            if task.env != env.name:
                raise ValueError(f"field 'task.env' is {task.env!r} but the configured environment is {env.name!r}")
        else:
            raise ValueError(f"field 'task' must be a task id string or a task object, got {type(t).__name__}")
    except EnvError as e:
        raise ValueError(f"field 'task': {e}") from None
    return UserTrajectory(0, task, [a.strip() for a in actions], obs)


def read_trajectories(path: str, env: Env, *, on_bad_line: str = "fail") -> tuple[list[UserTrajectory], list[dict]]:
    """Parse ``path``; returns (trajectories, skipped) where ``skipped`` lists ``{line, error}``.

    With ``on_bad_line="fail"`` the first bad lines (up to 20) are reported together in one error.
    Duplicate (task, actions) lines are skipped and reported as such.
    """
    if not os.path.isfile(path):
        raise FileNotFoundError(f"experience.trajectories={path!r}: no such file")
    out: list[UserTrajectory] = []
    bad: list[dict] = []
    seen: dict[tuple, int] = {}
    with open(path, "rb") as f:  # decoded line by line: a non-UTF-8 line is a bad line with its number
        for n, raw in enumerate(f, start=1):
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                bad.append({"line": n, "error": f"not UTF-8 text (byte 0x{raw[e.start]:02x} at column {e.start + 1})"})
                continue
            if not text.strip():
                continue
            try:
                traj = parse_line(text, env)
            except (ValueError, UnicodeDecodeError) as e:
                bad.append({"line": n, "error": str(e)})
                continue
            traj.line = n
            key = (traj.task.id, tuple(traj.actions))
            if key in seen:
                bad.append({"line": n, "error": f"duplicate of line {seen[key]} (same task and actions)",
                            "duplicate": True})
                continue
            seen[key] = n
            out.append(traj)
    errors = [b for b in bad if not b.get("duplicate")]
    if errors and on_bad_line == "fail":
        listed = "; ".join(f"line {b['line']}: {b['error']}" for b in errors[:5])
        more = f"; ... and {len(errors) - 5} more" if len(errors) > 5 else ""
        raise TrajectoryFileError(f"{path}: {len(errors)} bad line(s): {listed}{more} "
                                  "(experience.on_bad_line=skip skips them)")
    if not out:
        raise TrajectoryFileError(f"{path}: no usable trajectories ({len(bad)} bad or duplicate lines)")
    return out, bad
