"""``report.md``: the paper-style tables of an aggregated report (see :mod:`ee_jax.report.aggregate`)."""

from __future__ import annotations

import os

from ee_jax.experience.reflect.generators import PRIVILEGED_GENERATORS
from ee_jax.report.aggregate import mean_std

NAMES = {"il": "IL", "il_matched": "IL (SR's updates)", "iwm": "IWM", "sr": "SR"}
DASH = "—"


def rl_start(method: str) -> str | None:
    """The start of an RL stage (``grpo_from_iwm`` -> ``iwm``); None for any other method."""
    algo, sep, start = method.partition("_from_")
    return start if sep and algo in ("grpo", "ppo") else None


def method_name(method: str) -> str:
    """Display name of a method (``il`` -> ``IL``, ``grpo_from_iwm`` -> ``IWM→GRPO``); others as they are."""
    start = rl_start(method)
    if start is not None:
        return f"{NAMES.get(start, start)}→{method.partition('_from_')[0].upper()}"
    return NAMES.get(method, method)


def pct(stats: dict | None, signed: bool = False) -> str:
    """``"42.0 ± 3.1"`` (percent) from ``{"mean", "std"}`` of fractions; a dash when missing."""
    if not stats or stats.get("mean") is None:
        return DASH
    sign = "+" if signed else ""
    mean = round(100 * stats["mean"], 1) + 0.0  # + 0.0 turns a rounded -0.0 into 0.0
    return f"{mean:{sign}.1f} ± {100 * stats['std']:.1f}"


def num(stats: dict | None, digits: int = 2) -> str:
    """``"mean ± std"`` with ``digits`` decimals; a dash when missing."""
    if not stats or stats.get("mean") is None:
        return DASH
    return f"{stats['mean']:.{digits}f} ± {stats['std']:.{digits}f}"


def human(n: float | None, unit: str = "", missing: str = "—") -> str:
    """``n`` with an SI prefix and three significant digits (``1.23 GFLOP``); ``missing`` for None."""
    if n is None:
        return missing
    for div, suffix in ((1e15, "P"), (1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(n) >= div:
            return f"{n / div:.3g} {suffix}{unit}"
    return f"{n:.3g} {unit}".strip()


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    return ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|",
            *("| " + " | ".join(r) + " |" for r in rows)]


def interval(mean: float, ci: list[float], signed: bool = False) -> str:
    """``"42.0 [31.2, 53.1]"`` in percent (``+``-signed for differences)."""
    f = "+.1f" if signed else ".1f"
    return f"{100 * mean + 0.0:{f}} [{100 * ci[0] + 0.0:{f}}, {100 * ci[1] + 0.0:{f}}]"


def success_table(report: dict) -> list[str]:
    """Rows = methods, per split: success % over seeds x tasks [95% CI], and the paired Δ vs IL [95% CI]
    (marked "significant" when the interval excludes 0)."""
    header = ["Method"]
    for split in report["splits"]:
        header += [split, f"Δ vs IL ({split})"]
    rows = []
    for method in report["methods"]:
        row = [method_name(method)]
        for split in report["splits"]:
            cell = report["results"].get(method, {}).get(split)
            if cell is None:
                row += [DASH, DASH]
                continue
            pooled = cell["success"].get("pooled")
            row.append(interval(pooled["mean"], pooled["ci95"]) if pooled else pct(cell["success"]))
            paired = (cell.get("delta_vs_il") or {}).get("paired")
            row.append(DASH if not paired else interval(paired["mean"], paired["ci95"], signed=True)
                       + (" significant" if paired["significant"] else ""))
        rows.append(row)
    return _table(header, rows)


def per_seed_table(report: dict) -> list[str]:
    """Rows = methods, per split: success % mean ± std over seeds, and the per-seed differences to IL."""
    header = ["Method"]
    for split in report["splits"]:
        header += [f"{split} (per seed)", f"Δ vs IL ({split}, per seed)"]
    rows = []
    for method in report["methods"]:
        row = [method_name(method)]
        for split in report["splits"]:
            cell = report["results"].get(method, {}).get(split)
            row += [DASH, DASH] if cell is None else [pct(cell["success"]), pct(cell["delta_vs_il"], signed=True)]
        rows.append(row)
    return _table(header, rows)


def flags(report: dict) -> list[str]:
    """Warnings a reader must see next to the numbers: privileged settings, checkpoints selected at the
    final step."""
    out = [f"- **Privileged:** {p}." for p in report["settings"].get("privileged") or []]
    for method in report["methods"]:
        at_end = (report["training"].get(method) or {}).get("selected_final_step") or []
        if at_end:
            out.append(f"- **{method_name(method)}: still improving at the end of its budget**: the best valid "
                       f"checkpoint is its final step (seed{'s' if len(at_end) > 1 else ''} {', '.join(at_end)}).")
    return out


def detail_table(report: dict) -> list[str]:
    """Per method and split: episodes per seed, score, invalid-action rate, steps and pass@k."""
    ks = sorted({k for per in report["results"].values() for cell in per.values() for k in cell["pass@k"]},
                key=lambda k: int(k[5:]))
    header = ["Method", "Split", "Episodes / seed", "Score", "Invalid rate (%)", "Steps", *ks]
    rows = []
    for method in report["methods"]:
        for split, cell in report["results"].get(method, {}).items():
            episodes = sorted(set(cell["episodes"].values()))
            rows.append([method_name(method), split, "/".join(str(e) for e in episodes), num(cell["score"]),
                         pct(cell["invalid_rate"]), num(cell["steps"], 1),
                         *(pct(cell["pass@k"].get(k)) for k in ks)])
    return _table(header, rows)


def world_model_table(report: dict) -> list[str]:
    """Token accuracy and exact match (%) and loss of next-state prediction, per method; [] if none."""
    rows = []
    for method in report["methods"]:
        wm = report["world_model"].get(method)
        if wm:
            rows.append([method_name(method), pct(wm["token_accuracy"]), pct(wm["exact_match"]), num(wm["loss"], 3),
                         str(int(wm["transitions"]["mean"])) if wm["transitions"]["mean"] is not None else DASH])
    return _table(["Method", "Token accuracy (%)", "Exact match (%)", "Loss", "Transitions"], rows) if rows else []


def rl_table(report: dict) -> list[str]:
    """RL rows against their own start: success before and after, and the paired per-seed gain; [] if none."""
    rows = []
    for method in report["methods"]:
        start = rl_start(method)
        if start is None:
            continue
        row = [method_name(method)]
        for split in report["splits"]:
            after = report["results"].get(method, {}).get(split)
            before = report["results"].get(start, {}).get(split)
            if after is None or before is None:
                row += [DASH, pct(after["success"]) if after else DASH, DASH]
                continue
            a, b = after["success"]["per_seed"], before["success"]["per_seed"]
            gain = mean_std([a[s] - b[s] for s in a if s in b])
            row += [pct(before["success"]), pct(after["success"]), pct(gain, signed=True)]
        rows.append(row)
    header = ["RL row"] + [h for split in report["splits"]
                           for h in (f"start ({split})", f"after RL ({split})", f"gain ({split})")]
    return _table(header, rows) if rows else []


def training_table(report: dict) -> list[str]:
    """Optimizer updates per method and, per stage, its steps and the selected checkpoint per seed."""
    rows = []
    for method in report["methods"]:
        tr = report["training"].get(method)
        if not tr:
            continue
        stages = "; ".join(
            f"{name}: {_seed_values(st['steps'])} steps, selected {_seed_values(st['selected_step'])}"
            for name, st in tr["stages"].items())
        evals = _seed_values(tr.get("selection_evaluations") or {}) if tr.get("selection_evaluations") else DASH
        rows.append([method_name(method), num(tr["updates"], 0), evals, stages or DASH])
    return _table(["Method", "Updates", "Selection evaluations", "Stages (steps, selected step; per seed)"],
                  rows) if rows else []


def _seed_values(per_seed: dict) -> str:
    values = list(per_seed.values())
    return str(values[0]) if len(set(map(str, values))) == 1 else "/".join(str(v) for v in values)


def settings_lines(settings: dict) -> list[str]:
    """A bullet list of the run's key settings."""
    model = settings.get("model") or {}
    params = model.get("params")
    size = f", {params / 1e6:.2f}M parameters" if params else ""
    expert = settings.get("expert") or {}
    if expert.get("source") == "data/manifest.json":
        steps = ", ".join(f"{k}: {v}" for k, v in sorted((expert.get("steps_by_split") or {}).items()))
        expert_text = f"{expert.get('trajectories')} trajectories ({steps} expert steps)"
    else:
        by_split = expert.get("trajectories_by_split") or {}
        expert_text = ", ".join(f"{k}: {v}" for k, v in sorted(by_split.items())) + " tasks (configured)"
    ev = settings.get("eval") or {}
    temp = ev.get("temperature")
    decoding = "greedy" if not temp else f"temperature {temp}"
    epochs = settings.get("epochs")
    budget = (f"{epochs} epochs over the expert steps" if epochs else
              f"{settings.get('train_steps')} updates per method (train.steps)")
    lines = [
        f"- Environment: {settings.get('env')} (difficulty {settings.get('difficulty')})",
        f"- Model: {model.get('preset')}{size} (d_model {model.get('d_model')}, {model.get('num_layers')} layers)",
        f"- Expert data: {expert_text}",
        f"- Exploration: K = {settings.get('explore_k')} alternatives per state ({settings.get('explore_strategy')}); "
        f"reflections: {settings.get('reflection_generator')}"
        + (f" ({PRIVILEGED_GENERATORS[settings.get('reflection_generator')]})"
           if settings.get("reflection_generator") in PRIVILEGED_GENERATORS else ""),
        f"- Training: {budget}, world model {settings.get('wm_epochs')} epochs (iwm); batch "
        f"{settings.get('batch_size')} x {settings.get('seq_len')} tokens, lr {settings.get('lr')}",
        f"- Checkpoint selection: {settings.get('select')} by valid {settings.get('select_metric')}",
        f"- Evaluation: {ev.get('tasks')} tasks per split, {decoding}, {ev.get('samples')} sample(s) per task, "
        f"at most {ev.get('max_invalid')} invalid actions per episode",
        f"- Seeds: {', '.join(str(s) for s in settings.get('seeds') or [])}",
    ]
    rl = settings.get("rl")
    if rl:
        score = f" + {rl['score_reward']:g} x score" if rl.get("score_reward") else ""
        lines.insert(-1, f"- RL ({rl['algorithm'].upper()}, the same settings from every start): {rl['steps']} steps"
                     f" x {rl['tasks_per_step']} tasks x {rl['group_size']} rollouts at temperature "
                     f"{rl['temperature']:g}, "
                     f"lr {rl['lr']:g}, KL {rl['kl_coef']:g} ({rl['kl_kind']}), clip {rl['clip_low']:g}/"
                     f"{rl['clip_high']:g}; reward {rl['success_reward']:g} x success{score} - "
                     f"{rl['invalid_penalty']:g} per invalid action; an episode ends after "
                     f"{rl['max_invalid'] or ev.get('max_invalid')} invalid actions or "
                     + (f"{rl['max_turns']} turns" if rl["max_turns"] else "the environment's step limit"))
    return lines


def shown_path(path: str) -> str:
    """``path`` relative to the working directory when it lies below it (a report committed from a checkout
    names no machine's absolute path), else as it is."""
    rel = os.path.relpath(path)
    return path if rel.startswith("..") else rel


def render_markdown(report: dict, plots: list[str]) -> str:
    """The whole ``report.md``; ``plots`` are file names under ``plots/`` to link."""
    n = len(report["seeds"])
    out = [f"# {report['title']}", "",
           f"Run `{shown_path(report['run_dir'])}`, {n} seed{'s' if n != 1 else ''} "
           f"({', '.join(map(str, report['seeds']))}), "
           f"written {report['created']}.", "",
           "## Success rate (%)", "",
           "Success over every seed x task, with its 95% interval (the wider of a bootstrap over seeds and "
           "tasks and the pooled Wilson interval). Δ vs IL: the paired difference (same seeds, same tasks), in "
           "points, with its 95% interval (the wider of the same bootstrap and Newcombe's paired interval); "
           "\"significant\" only when the interval excludes 0.", "",
           *success_table(report), "", *([*flags(report), ""] if flags(report) else []),
           "Per seed: mean ± sample std over seeds of each seed's success, and of the per-seed differences.", "",
           *per_seed_table(report), "", "## Details", "", *detail_table(report), ""]
    rl = rl_table(report)
    if rl:
        out += ["## RL continuation: each start before and after", "",
                "Success (%) of the start's reported checkpoint and of the RL stage's, and the paired per-seed "
                "gain (points).", "", *rl, ""]
    wm = world_model_table(report)
    if wm:
        out += ["## World model (next-state prediction)", "", *wm, ""]
    tr = training_table(report)
    if tr:
        out += ["## Training budget", "", *tr, ""]
    out += ["## Settings", "", *settings_lines(report["settings"]), ""]
    if plots:
        out += ["## Plots", ""] + [f"![{p[:-4]}](plots/{p})" for p in plots] + [""]
    return "\n".join(out)
