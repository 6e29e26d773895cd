"""The reflection stage (``ee-jax collect reflect``): one reflection per explored expert state.

For every expert state with at least one executed alternative, up to ``reflect.alternatives`` of the
alternatives (chosen per state, seeded) are shown with the expert action and all their outcomes to a
generator (``template``, ``self`` or ``http``); the text goes through the filters and is written with
its verdict and reason, dropped ones included, so the manifest counts every reason and ablations can
train on them. Reflection shard ``i`` comes from transition shard ``i``.
"""

from __future__ import annotations

from collections import defaultdict

from ee_jax.agent.policy import run_policy
from ee_jax.config import Config, PromptConfig
from ee_jax.experience.explore import KIND as TRANSITION
from ee_jax.experience.reflect.filters import check_reflection, conclude
from ee_jax.experience.reflect.generators import make_generator
from ee_jax.experience.reflect.reflection import PROMPT_VERSION, ReflectionCase, choose_alternatives
from ee_jax.records.schema import Outcome, State, make_record
from ee_jax.records.store import read_shard, run_sharded_stage, shard_path, stage_input
from ee_jax.rundir import RunDir
from ee_jax.seeds import unit_seed

KIND = "reflection"


def _outcome(t: dict) -> Outcome:
    return Outcome(t["action"], t["next_observation"], float(t["reward"]), bool(t["done"]), bool(t["valid"]),
                   bool(t["won"]), float(t["score"]))


def state_groups(transitions: list[dict]) -> list[tuple[dict, list[dict]]]:
    """``[(expert transition, alternative transitions)]`` per expert state, in record order."""
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for t in transitions:
        groups[(t["traj_id"], t["step"])].append(t)
    out = []
    for group in groups.values():
        expert = [t for t in group if t["is_expert"]]
        if len(expert) != 1:
            where = f"{group[0]['traj_id']} step {group[0]['step']}"
            raise ValueError(f"transitions of {where}: expected exactly one expert transition, got {len(expert)}")
        out.append((expert[0], [t for t in group if not t["is_expert"]]))
    return out


def collect_reflect(cfg: Config, *, overwrite: bool = False, progress: bool = True, generator=None) -> dict:
    """Write reflections for the explored states of ``cfg.run_dir/data``; returns the manifest section."""
    r = cfg.experience.reflect
    data_dir = RunDir(cfg.run_dir).data
    trans, shards = stage_input(data_dir, TRANSITION, "ee-jax collect explore")
    if generator is None:
        generator = make_generator(cfg, lambda: run_policy(cfg, r.policy_stage))
    settings = {"generator": generator.name, "generator_settings": generator.settings(),
                "prompt_version": PROMPT_VERSION, "alternatives": r.alternatives, "min_words": r.min_words,
                "max_words": r.max_words, "seed": cfg.seed, "prompt": vars(cfg.prompt),
                "transitions_sha256": trans["content_sha256"]}

    def work(chunk: list[int], index: int) -> tuple[list[dict], dict]:
        groups = state_groups(read_shard(shard_path(data_dir, TRANSITION, index), TRANSITION))
        counters: dict = {"states": len(groups), "no_alternatives": 0, "verdict": {"kept": 0, "dropped": 0},
                          "dropped_reasons": {}, "kept_by_split": {}}
        cases, sources = [], []
        for exp, alts in groups:
            if not alts:
                counters["no_alternatives"] += 1
                continue
            seed = unit_seed(cfg.seed, "reflect", exp["traj_id"], exp["step"])
            chosen = choose_alternatives(_outcome(exp), [_outcome(a) for a in alts], r.alternatives, seed)
            cases.append(ReflectionCase(State.from_json(exp["state"]), _outcome(exp), chosen, exp["env"]))
            sources.append(exp)
        errors_before = getattr(generator, "errors", 0)
        texts = generator.generate(cases, unit_seed(cfg.seed, "reflect-shard", index)) if cases else []
        counters["generator_errors"] = getattr(generator, "errors", 0) - errors_before
        records = []
        for exp, case, text in zip(sources, cases, texts):
            if r.conclude:
                text = conclude(text, case)
            verdict, reason = check_reflection(text, case, r)
            counters["verdict"][verdict] += 1
            if verdict == "kept":
                counters["kept_by_split"][exp["split"]] = counters["kept_by_split"].get(exp["split"], 0) + 1
            else:
                counters["dropped_reasons"][reason] = counters["dropped_reasons"].get(reason, 0) + 1
            records.append(make_record(KIND, env=exp["env"], task_id=exp["task_id"], split=exp["split"],
                                       traj_id=exp["traj_id"], step=exp["step"], state=case.state,
                                       expert=case.expert, alternatives=list(case.alternatives), text=text,
                                       generator=generator.name, verdict=verdict, reason=reason))
        return records, counters

    chunks = [list(range(shards[i]["counters"]["states"])) for i in sorted(shards)]
    return run_sharded_stage(data_dir, KIND, chunks, settings, work, overwrite=overwrite, progress=progress,
                             desc=f"reflect ({generator.name})", unit_name="state",
                             barrier_timeout_s=cfg.distributed.barrier_timeout_s,
                             defaults={"prompt": vars(PromptConfig())})
