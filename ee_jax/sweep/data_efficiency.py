"""The data-efficiency answer of a sweep over expert-data fractions: success against the share of expert
trajectories, per method, with intervals, and each method at each fraction against imitation at the same
fraction and at all of the data.

Inputs are every point's run directory, read with :func:`ee_jax.report.collect_results` (evaluations
recomputed from their episode logs). Seeds and evaluation tasks are the same at every fraction (task lists
are the first N tasks of each split; a seed names the same initialisation and data order), so differences
pair by (seed, task), also across fractions; intervals are the two-way bootstrap of
:mod:`ee_jax.report.stats`, "significant" only when the interval excludes 0.

The paper's claims this reads: SR with 1/8 of the expert data beats imitation with all of it (WebShop), and
IWM's value is largest when expert data are scarce.
"""

from __future__ import annotations

from ee_jax.report.aggregate import common_tasks, task_matrix
from ee_jax.report.markdown import interval, method_name
from ee_jax.report.plots import new_figure, palette, png_bytes
from ee_jax.report.results import collect_results
from ee_jax.report.stats import paired_difference, success_interval


def _cells(run_dir: str, split: str) -> dict[str, dict[str, dict]]:
    """``{method: {seed: split summary with per_task}}`` of one point (a malformed result is an error)."""
    res = collect_results(run_dir)
    return {m: {s: ev["splits"][split] for s, ev in per_seed.items() if split in ev["splits"]}
            for m, per_seed in res["evals"].items()}


def _paired(a: dict[str, dict], b: dict[str, dict]) -> dict | None:
    seeds = sorted(set(a) & set(b), key=int)
    tasks = common_tasks(a, b, seeds=seeds) if seeds else []
    if not tasks:
        return None
    return paired_difference(task_matrix(a, seeds, tasks), task_matrix(b, seeds, tasks))


def data_efficiency(points: list[tuple[float, str, str]], split: str) -> dict:
    """``points``: (fraction, size, run_dir). Returns ``{"split", "rows", "answers"}``: a row per (size,
    fraction, method) with success [95% CI] over seeds x tasks, the paired difference to IL at the same
    fraction and to IL at the largest fraction; an answer per size and early-experience method: the
    smallest fraction at which it beats IL with all the data (significant), or None."""
    rows, answers = [], []
    for size in sorted({p[1] for p in points}):
        mine = sorted((f, d) for f, s, d in points if s == size)
        cells = {f: _cells(d, split) for f, d in mine}
        full = max(cells)
        il_full = cells[full].get("il")
        for fraction, per_method in cells.items():
            for method, per_seed in per_method.items():
                seeds = sorted(per_seed, key=int)
                tasks = common_tasks(per_seed, seeds=seeds)
                if not tasks:
                    continue
                il_here = per_method.get("il")
                rows.append({
                    "size": size, "fraction": fraction, "method": method, "seeds": seeds, "tasks": len(tasks),
                    "success": success_interval(task_matrix(per_seed, seeds, tasks)),
                    "vs_il_same_fraction": None if method == "il" or not il_here else _paired(per_seed, il_here),
                    "vs_il_full_data": None if (method == "il" and fraction == full) or not il_full
                    else _paired(per_seed, il_full)})
        for method in ("iwm", "sr"):
            own = [r for r in rows if r["size"] == size and r["method"] == method]
            if not own:
                continue
            beats = [r for r in own if r["vs_il_full_data"] and r["vs_il_full_data"]["significant"]
                     and r["vs_il_full_data"]["mean"] > 0]
            best = min(beats, key=lambda r: r["fraction"]) if beats else None
            answers.append({"size": size, "method": method,
                            "smallest_fraction_beating_full_il": best["fraction"] if best else None,
                            "difference": best["vs_il_full_data"] if best else None})
    return {"split": split, "rows": rows, "answers": answers}


def _delta(d: dict | None) -> str:
    if not d:
        return "—"
    return interval(d["mean"], d["ci95"], signed=True) + (" significant" if d["significant"] else "")


def render_markdown(result: dict) -> list[str]:
    """The data-efficiency section of the sweep report."""
    split = result["split"]
    lines = ["## Data efficiency", "",
             f"{split} success (%) over seeds x tasks with its 95% interval (bootstrap over seeds and tasks); "
             "differences to imitation paired by seed and task, in points, \"significant\" only when the "
             "interval excludes 0.", "",
             "| size | expert data | method | seeds | success | Δ vs IL, same data | Δ vs IL with all the data |",
             "|---|---|---|---|---|---|---|"]
    for r in sorted(result["rows"], key=lambda r: (r["size"], r["fraction"], _order(r["method"]))):
        s = r["success"]
        lines.append(f"| {r['size']} | {r['fraction']:g} | {method_name(r['method'])} | {len(r['seeds'])} | "
                     f"{interval(s['mean'], s['ci95'])} | {_delta(r['vs_il_same_fraction'])} | "
                     f"{_delta(r['vs_il_full_data'])} |")
    lines += [""]
    for a in result["answers"]:
        name = method_name(a["method"])
        if a["smallest_fraction_beating_full_il"] is None:
            lines.append(f"- {a['size']}, {name}: at no fraction of the expert data does it beat imitation with "
                         "all of it (no significant positive difference).")
        else:
            lines.append(f"- {a['size']}, **{name} with {a['smallest_fraction_beating_full_il']:g} of the expert "
                         f"data beats imitation with all of it**: {_delta(a['difference'])} points.")
    return lines


def _order(method: str) -> int:
    order = ("il", "il_matched", "iwm", "sr")
    return order.index(method) if method in order else len(order)


def success_vs_fraction(result: dict) -> bytes | None:
    """Success (%) against the expert-data fraction (log2 axis), one line per method with its 95% interval."""
    rows = result["rows"]
    if not rows:
        return None
    fig = new_figure(5.6, 3.8)
    ax = fig.add_subplot(1, 1, 1)
    methods = sorted({r["method"] for r in rows}, key=_order)
    for method, color in zip(methods, palette(len(methods)), strict=False):
        pts = sorted((r for r in rows if r["method"] == method), key=lambda r: r["fraction"])
        x = [r["fraction"] for r in pts]
        y = [100 * r["success"]["mean"] for r in pts]
        err = [[100 * (r["success"]["mean"] - r["success"]["ci95"][0]) for r in pts],
               [100 * (r["success"]["ci95"][1] - r["success"]["mean"]) for r in pts]]
        ax.errorbar(x, y, yerr=err, color=color, marker="o", capsize=3, label=method_name(method),
                    linestyle="-" if len(pts) > 1 else "none")
    fractions = sorted({r["fraction"] for r in rows})
    ax.set_xscale("log", base=2)
    ax.set_xticks(fractions, [f"{f:g}" for f in fractions])
    ax.set_xlabel("share of the expert trajectories")
    ax.set_ylabel(f"{result['split']} success (%)")
    top = max(100 * r["success"]["ci95"][1] for r in rows)
    ax.set_ylim(0, min(100, max(10, top * 1.15)))
    ax.set_title(f"{result['split']} success vs expert data (95% intervals)")
    ax.legend(fontsize=8)
    return png_bytes(fig)
