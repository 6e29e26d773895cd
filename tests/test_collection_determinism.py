"""Deterministic by seed: collecting twice with the same settings gives the same records, on every
environment (a fresh environment instance each time: for the Java ones a fresh JVM, for TextWorld
freshly generated games). TextWorldExpress's cookingworld is the one exception (its expert is TWX's
own gold, a random walk with an unseeded generator; docs/environments.md)."""

import json

import pytest

from ee_jax.config import load_config
from ee_jax.experience.expert import collect_expert
from ee_jax.experience.explore import collect_explore
from ee_jax.records.store import iter_records
from tests.conftest import require

# env name -> (package it needs or None, extra overrides, tasks per split)
ENVIRONMENTS = {
    "coin": (None, [], 4),
    "household": (None, [], 4),
    "shop": (None, [], 4),
    "travel": (None, [], 4),
    "tools": (None, ["experience.explore.strategy=policy", "experience.explore.max_new_tokens=8"], 3),  # open actions
    "twx": ("textworld_express", ["env.options.games=[coin,mapreader,twc,arithmetic,sorting,simonsays,peckingorder]"],
            7),
    "scienceworld": ("scienceworld", ["env.options.tasks=[find-animal]", "env.max_steps=40"], 1),
    "textworld": ("textworld", [], 2),
}


def _collect(root, name, overrides, n):
    extra = [f"env.options.game_dir={root / 'games'}"] if name == "textworld" else []
    cfg = load_config(None, [f"run_dir={root}", f"env.name={name}", f"experience.tasks.train={n}",
                             "experience.tasks.valid=1", "experience.explore.k=2", "seed=3", *overrides, *extra])
    collect_expert(cfg, progress=False)
    collect_explore(cfg, progress=False)
    return {kind: [json.dumps(r, sort_keys=True) for r in iter_records(str(root / "data"), kind)]
            for kind in ("expert_step", "transition")}


@pytest.mark.envs
@pytest.mark.parametrize("name", list(ENVIRONMENTS))
def test_same_seed_same_records(name, tmp_path):
    package, overrides, n = ENVIRONMENTS[name]
    if package:
        require(package)
    first = _collect(tmp_path / "a", name, overrides, n)
    second = _collect(tmp_path / "b", name, overrides, n)
    assert len(first["expert_step"]) >= n and len(first["transition"]) > len(first["expert_step"])
    for kind in first:
        differ = [i for i, (x, y) in enumerate(zip(first[kind], second[kind])) if x != y]
        assert len(first[kind]) == len(second[kind]) and not differ, (kind, differ[:3])
