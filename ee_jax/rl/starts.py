"""Where RL episodes start: the training tasks of each step, and the expert states branched for step groups.

Both are functions of ``(seed, step)`` only, so a resumed run replays exactly the rollouts it would have
made. Tasks are the ``experience.tasks.train`` training tasks the expert data came from, visited in a
seeded random order, epoch after epoch. Branch anchors are the expert states early experience explored
(``transition`` records of the train split): at each one, the expert action and the K alternatives that
were executed there become K+1 :class:`~ee_jax.rl.rollout.BranchStart` s of one group.
"""

from __future__ import annotations

import collections
import os

import numpy as np

from ee_jax.config import Config
from ee_jax.envs.base import Task
from ee_jax.records.store import iter_records
from ee_jax.rl.rollout import BranchStart
from ee_jax.seeds import unit_seed


def train_tasks(cfg: Config, env) -> list[Task]:
    """The training tasks RL acts on: the first ``rl.tasks`` (default ``experience.tasks.train``) of the
    train split."""
    n = int(cfg.rl.tasks or cfg.experience.tasks.get("train", 0))
    if n < 1:
        raise ValueError(f"rl.tasks={cfg.rl.tasks} and experience.tasks.train={cfg.experience.tasks.get('train')}: "
                         "RL needs at least one training task to act on")
    return env.make_tasks("train", n, difficulty=cfg.env.difficulty or None)


def step_tasks(tasks: list[Task], per_step: int, step: int, seed: int) -> list[Task]:
    """The ``per_step`` tasks of RL step ``step``: consecutive slices of seeded per-epoch permutations."""
    out = []
    start = step * per_step
    for i in range(start, start + per_step):
        epoch, pos = divmod(i, len(tasks))
        order = np.random.default_rng(unit_seed(seed, "rl-tasks", epoch)).permutation(len(tasks))
        out.append(tasks[int(order[pos])])
    return out


def branch_anchors(data_dir: str, max_prefix: int | None = None) -> list[dict]:
    """Every explored expert state of the train split: ``{group, task, prefix, actions}`` (expert first).

    ``max_prefix``: keep states reached by at most this many expert actions (a branch continues under the
    episode's own step limit, so a state at the limit leaves the policy no turn to act)."""
    if not os.path.isdir(data_dir):
        raise FileNotFoundError(f"rl.step_groups needs the run's explored transitions: {data_dir!r} does not exist "
                                "(run `ee-jax collect all` first)")
    tasks = {}
    for r in iter_records(data_dir, "expert_step"):
        if r.get("split") == "train":
            tasks.setdefault(r["traj_id"], r["task"])
    by_state: dict[tuple, dict] = collections.OrderedDict()
    for r in iter_records(data_dir, "transition"):
        if r.get("split") != "train" or r["traj_id"] not in tasks:
            continue
        key = (r["traj_id"], int(r["step"]))
        a = by_state.setdefault(key, {"group": f"branch:{key[0]}:{key[1]}", "task": tasks[r["traj_id"]],
                                      "prefix": tuple(h["action"] for h in r["state"]["history"]),
                                      "expert": None, "alternatives": []})
        if r["is_expert"]:
            a["expert"] = r["action"]
        elif r["action"] not in a["alternatives"]:
            a["alternatives"].append(r["action"])
    anchors = []
    for (_, step), a in sorted(by_state.items()):
        if a["expert"] is None or not a["alternatives"] or len(a["prefix"]) != step:
            continue  # a state needs the expert action and at least one alternative to compare with
        if max_prefix is not None and step > max_prefix:
            continue
        anchors.append({"group": a["group"], "task": a["task"], "prefix": a["prefix"],
                        "actions": [a["expert"], *a["alternatives"]]})
    if not anchors:
        raise ValueError(f"{data_dir}: no explored expert states with alternatives in the train split; "
                         "rl.step_groups needs `ee-jax collect explore` output")
    return anchors


def step_branches(anchors: list[dict], n_states: int, step: int, seed: int) -> list[BranchStart]:
    """The branch starts of RL step ``step``: ``n_states`` seeded anchors, all their actions each."""
    rng = np.random.default_rng(unit_seed(seed, "rl-branches", step))
    chosen = rng.choice(len(anchors), size=min(n_states, len(anchors)), replace=False)
    out = []
    for i in sorted(int(c) for c in chosen):
        a = anchors[i]
        task = Task.from_json(a["task"])
        out += [BranchStart(task, a["prefix"], action, a["group"], j) for j, action in enumerate(a["actions"])]
    return out
