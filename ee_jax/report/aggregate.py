"""Across-seed statistics of collected results: the numbers ``report.json`` holds.

Per method and split: the success rate over seeds x tasks with its 95% interval (a two-way bootstrap
over seeds and tasks, :mod:`ee_jax.report.stats`), the per-seed success rates with their mean and
sample standard deviation (ddof=1; 0 with one seed) and per-seed Wilson intervals; the difference to
``il`` paired by seed and task (mean, bootstrap 95% interval, ``significant`` only when the interval
excludes 0; plus the per-seed differences' mean and std); and the means of score, invalid rate, steps and
pass@k. Plus world-model metrics and training budgets per method (with a flag for a selected checkpoint
that is the final step), and the run's key settings, with every privileged one named.
"""

from __future__ import annotations

import statistics

from ee_jax.config import ModelConfig, RopeScalingConfig
from ee_jax.experience.reflect.generators import PRIVILEGED_GENERATORS
from ee_jax.models.accounting import param_count
from ee_jax.records.store import load_manifest
from ee_jax.report.stats import paired_difference, success_interval
from ee_jax.rundir import RunDir

BASELINE = "il"
WM_KEYS = ("token_accuracy", "exact_match", "loss")


def mean_std(values: list[float]) -> dict:
    """``{"mean", "std", "n"}``: sample std (ddof=1), 0 for a single value; None mean for no values."""
    vals = [float(v) for v in values]
    if not vals:
        return {"mean": None, "std": None, "n": 0}
    return {"mean": statistics.fmean(vals), "std": statistics.stdev(vals) if len(vals) > 1 else 0.0, "n": len(vals)}


def task_matrix(per_seed: dict[str, dict], seeds: list[str], tasks: list[str]) -> list[list[float]]:
    """``[seed][task]`` success from each seed's ``per_task`` (recomputed from the episode logs)."""
    return [[per_seed[s]["per_task"][t] for t in tasks] for s in seeds]


def common_tasks(*per_seeds: dict[str, dict], seeds: list[str]) -> list[str]:
    """The task ids every given seed of every given method evaluated, sorted."""
    sets = [set(p[s].get("per_task", {})) for p in per_seeds for s in seeds]
    return sorted(set.intersection(*sets)) if sets else []


def _split_cell(per_seed: dict[str, dict], baseline: dict[str, dict] | None, is_baseline: bool) -> dict:
    """Statistics of one method x split; ``per_seed`` maps seed -> recomputed split summary."""
    seeds = list(per_seed)
    success = {s: per_seed[s]["success"] for s in seeds}
    tasks = common_tasks(per_seed, seeds=seeds)
    pooled = success_interval(task_matrix(per_seed, seeds, tasks)) if tasks else None
    cis = {s: list(per_seed[s]["success_ci95"]) for s in seeds}
    cell = {
        "seeds": seeds,
        "success": {"per_seed": success, **mean_std(list(success.values())),
                    "pooled": pooled},
        "success_ci95": {"per_seed": cis,
                         "mean": [statistics.fmean(c[0] for c in cis.values()),
                                  statistics.fmean(c[1] for c in cis.values())],
                         "range": [min(c[0] for c in cis.values()), max(c[1] for c in cis.values())]},
        "episodes": {s: per_seed[s]["episodes"] for s in seeds},
    }
    for key in ("score", "reward", "invalid_rate", "steps"):
        cell[key] = {"per_seed": {s: per_seed[s][key] for s in seeds},
                     **mean_std([per_seed[s][key] for s in seeds])}
    ks = sorted({k for s in seeds for k in per_seed[s] if k.startswith("pass@")}, key=lambda k: int(k[5:]))
    cell["pass@k"] = {k: {"per_seed": {s: per_seed[s][k] for s in seeds if k in per_seed[s]},
                          **mean_std([per_seed[s][k] for s in seeds if k in per_seed[s]])} for k in ks}
    if is_baseline or baseline is None:
        cell["delta_vs_il"] = None
    else:
        common = [s for s in seeds if s in baseline]
        diffs = {s: success[s] - baseline[s]["success"] for s in common}
        paired_tasks = common_tasks(per_seed, baseline, seeds=common)
        paired = paired_difference(task_matrix(per_seed, common, paired_tasks),
                                   task_matrix(baseline, common, paired_tasks)) if paired_tasks else None
        cell["delta_vs_il"] = {"per_seed": diffs, **mean_std(list(diffs.values())), "paired": paired} \
            if diffs else None
    return cell


def _world_model(evals: dict[str, dict]) -> dict | None:
    per_seed = {s: ev["world_model"] for s, ev in evals.items() if ev.get("world_model")}
    if not per_seed:
        return None
    out = {"per_seed": per_seed, "split": next(iter(per_seed.values())).get("split")}
    for key in (*WM_KEYS, "transitions"):
        vals = [wm[key] for wm in per_seed.values() if isinstance(wm.get(key), int | float)]
        out[key] = mean_std(vals)
    return out


def _training(per_seed: dict[str, dict]) -> dict:
    """Updates and per-stage steps / selected steps of one method, per seed and averaged."""
    stages: dict[str, dict] = {}
    for seed, tr in per_seed.items():
        for st in tr.get("stages") or []:
            entry = stages.setdefault(str(st.get("stage")), {"steps": {}, "selected_step": {}, "selection": {}})
            entry["steps"][seed] = st.get("steps")
            entry["selected_step"][seed] = st.get("selected_step")
            entry["selection"][seed] = st.get("selection")
    updates = {s: tr.get("updates") for s, tr in per_seed.items()}
    at_end, evaluations = [], {}
    for seed, tr in per_seed.items():
        final = (tr.get("stages") or [{}])[-1]  # the stage whose checkpoint is reported
        sel = final.get("selection") or {}
        evaluations[seed] = sum(1 for e in sel.get("evaluations") or [] if e.get("score") is not None)
        if sel.get("rule") == "best" and final.get("selected_step") is not None \
                and final.get("selected_step") == final.get("steps"):
            at_end.append(seed)
    return {"updates": {"per_seed": updates, **mean_std([u for u in updates.values() if isinstance(u, int | float)])},
            "stages": stages, "selection_evaluations": evaluations,
            # best-on-valid picked the final step: the method may still have been improving when its budget ended
            "selected_final_step": at_end}


def _get(cfg: dict, dotted: str, default=None):
    node = cfg
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return default
        node = node[part]
    return node


def _param_count(cfg: dict) -> int | None:
    model = _get(cfg, "model")
    if not isinstance(model, dict):
        return None
    fields = set(ModelConfig.__dataclass_fields__)
    kwargs = {k: v for k, v in model.items() if k in fields}
    vocab = _get(cfg, "tokenizer.vocab_size")
    if not _get(cfg, "tokenizer.path") and isinstance(vocab, int):
        kwargs["vocab_size"] = vocab  # a scratch tokenizer sets the trained model's vocabulary, not the preset
    if isinstance(kwargs.get("rope_scaling"), dict):
        kwargs["rope_scaling"] = RopeScalingConfig(**kwargs["rope_scaling"])
    try:
        return int(param_count(ModelConfig(**kwargs)))
    except (TypeError, ValueError, ZeroDivisionError):
        return None  # a config too old or odd to count; the report just leaves it out


def _expert_trajectories(run_dir: str, cfg: dict) -> dict:
    """Expert trajectories per split: the data manifest's counts when collected, else the config's."""
    section = load_manifest(RunDir(run_dir).data).get("expert_step", {})
    if section:
        return {"source": "data/manifest.json", "trajectories": section.get("units"),
                "steps_by_split": section.get("by_split", {})}
    return {"source": "config", "trajectories_by_split": _get(cfg, "experience.tasks", {})}


def privileged_settings(cfg: dict) -> list[str]:
    """Settings that give a method information the others (and the paper's setting) do not have, each as
    the label every table that uses it must carry; [] when there are none."""
    out = []
    methods = _get(cfg, "recipe.methods") or []
    generator = _get(cfg, "experience.reflect.generator")
    if "sr" in methods or "il_matched" in methods:
        if generator in PRIVILEGED_GENERATORS:
            out.append(f"SR reflections by {generator} ({PRIVILEGED_GENERATORS[generator]})")
        elif generator in ("self", "http") and _get(cfg, "experience.reflect.show_reward", True):
            # a run recorded before the setting existed (no key) had the reward notes in every prompt
            out.append(f"SR reflections by {generator} with the environment's reward in the prompt "
                       "(privileged: experience.reflect.show_reward)")
        if generator == "http":
            out.append(f"SR reflections from an endpoint serving {_get(cfg, 'experience.reflect.model')!r}: "
                       "teacher-assisted unless it serves the policy itself")
    return out


def key_settings(results: dict) -> dict:
    """The settings a reader needs next to the numbers (from the run's config, data and evaluations)."""
    cfg = results["config"]
    first = next((ev for per in results["evals"].values() for ev in per.values()), {})
    return {
        "env": first.get("env") or _get(cfg, "env.name"),
        "difficulty": first.get("difficulty", _get(cfg, "env.difficulty")),
        "model": {"preset": _get(cfg, "model.name"), "params": _param_count(cfg),
                  "d_model": _get(cfg, "model.d_model"), "num_layers": _get(cfg, "model.num_layers")},
        "tokenizer_template": _get(cfg, "tokenizer.template"),
        "expert": _expert_trajectories(results["run_dir"], cfg),
        "explore_k": _get(cfg, "experience.explore.k"),
        "explore_strategy": _get(cfg, "experience.explore.strategy"),
        "reflection_generator": _get(cfg, "experience.reflect.generator"),
        "privileged": privileged_settings(cfg),
        "epochs": _get(cfg, "recipe.epochs"), "wm_epochs": _get(cfg, "recipe.wm_epochs"),
        "train_steps": _get(cfg, "train.steps"), "batch_size": _get(cfg, "train.batch_size"),
        "seq_len": _get(cfg, "train.seq_len"), "lr": _get(cfg, "optimizer.lr"),
        "select": _get(cfg, "recipe.select"), "select_metric": _get(cfg, "recipe.select_metric"),
        "seeds": results["seeds"], "configured_seeds": _get(cfg, "recipe.seeds"),
        "eval": first.get("settings") or _get(cfg, "eval"),
        "rl": _get(cfg, "rl") if "rl" in (_get(cfg, "recipe.methods") or []) else None,
    }


def aggregate(results: dict) -> dict:
    """The report's numbers from :func:`~ee_jax.report.results.collect_results` output.

    Returns ``{"seeds", "methods", "splits", "results": {method: {split: cell}},
    "world_model": {method: stats | None}, "training": {method: stats}, "settings"}``; a cell is
    described in the module docstring (success fractions in [0, 1], not percent).
    """
    evals = results["evals"]
    base = evals.get(BASELINE)
    table: dict[str, dict] = {}
    for method, per_seed in evals.items():
        table[method] = {}
        for split in results["splits"]:
            got = {s: ev["splits"][split] for s, ev in per_seed.items() if split in ev["splits"]}
            if not got:
                continue
            baseline = {s: ev["splits"][split] for s, ev in base.items() if split in ev["splits"]} if base else None
            table[method][split] = _split_cell(got, baseline or None, method == BASELINE)
    return {
        "seeds": results["seeds"], "methods": results["methods"], "splits": results["splits"],
        "results": table,
        "world_model": {m: _world_model(per_seed) for m, per_seed in evals.items()},
        "training": {m: _training(per_seed) for m, per_seed in results["training"].items()},
        "settings": key_settings(results),
    }
