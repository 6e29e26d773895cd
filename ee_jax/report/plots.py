"""The report's figures, rendered with matplotlib's Agg canvas (no display, no global pyplot state).

Each function returns PNG bytes (or None when there is nothing to draw); the caller writes them.
"""

from __future__ import annotations

import io

from ee_jax.report.markdown import method_name, rl_start

STAGE_ORDER = ("il", "il_matched", "iwm_wm", "iwm", "sr")
CURVES = (("train/loss", "train loss"), ("valid/loss", "valid loss"), ("valid/success", "valid success"))
RL_CURVES = (("rl/reward", "rollout reward"), ("rl/success", "rollout success"), ("rl/invalid_rate", "invalid rate"),
             ("rl/kl", "KL to the start"), ("valid/success", "valid success (greedy)"))


def new_figure(width: float, height: float):
    """A matplotlib figure drawn off-screen (Agg, no pyplot state), ``width`` x ``height`` inches."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=100)
    FigureCanvasAgg(fig)
    return fig


def png_bytes(fig) -> bytes:
    """The figure as PNG bytes (for an atomic write)."""
    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png")
    return buf.getvalue()


def palette(n: int) -> list:
    """``n`` distinct colours (tab10, repeating after 10)."""
    from matplotlib import colormaps

    cmap = colormaps["tab10"]
    return [cmap(i % 10) for i in range(n)]


def success_plot(report: dict) -> bytes | None:
    """Grouped bars: success (%) over seeds x tasks per method (groups) and split (bars), with the report's 95%
    interval as error bars, one dot per seed; the axis fitted to the data."""
    methods = [m for m in report["methods"] if report["results"].get(m)]
    splits = report["splits"]
    if not methods or not splits:
        return None
    fig = new_figure(max(4.0, 1.6 * len(methods) * max(1, len(splits)) / 2 + 2), 3.6)
    ax = fig.add_subplot(1, 1, 1)
    width = 0.8 / len(splits)
    top = 0.0
    for j, (split, color) in enumerate(zip(splits, palette(len(splits)))):
        for i, method in enumerate(methods):
            cell = report["results"][method].get(split)
            if cell is None:
                continue
            x = i - 0.4 + width * (j + 0.5)
            s = cell["success"]
            pooled = s.get("pooled")
            mean, (lo, hi) = (pooled["mean"], pooled["ci95"]) if pooled else (s["mean"], (s["mean"], s["mean"]))
            top = max(top, hi)
            ax.bar(x, 100 * mean, width * 0.9, yerr=[[100 * (mean - lo)], [100 * (hi - mean)]], capsize=3,
                   color=color, label=split if i == 0 else None, alpha=0.8)
            dots = [100 * v for v in s["per_seed"].values()]
            top = max(top, *(d / 100 for d in dots))
            ax.scatter([x] * len(dots), dots, color="black", s=10, zorder=3)
    ax.set_xticks(range(len(methods)), [method_name(m) for m in methods])
    ax.set_ylabel("success (%)")
    ax.set_ylim(0, min(100, max(10, 100 * top * 1.15)))
    ax.set_title(f"Success over {len(report['seeds'])} seed(s) x tasks, 95% intervals; dots: seeds")
    for k, text in enumerate((report.get("settings") or {}).get("privileged") or []):  # every figure names it
        fig.text(0.01, 0.01 + 0.04 * k, f"Privileged: {text}", fontsize=7, color="firebrick")
    ax.legend(title="split")
    return png_bytes(fig)


def learning_curves_plot(metrics: dict[str, dict[str, list]]) -> bytes | None:
    """Rows = training stages, columns = train loss / valid loss / valid success, one line per seed."""
    stages = sorted({k.split("/", 1)[0] for per in metrics.values() for k in per
                     if k.count("/") == 2 and k.split("/", 1)[1] in dict(CURVES) and not _is_rl(k.split("/")[0])},
                    key=lambda s: (STAGE_ORDER.index(s) if s in STAGE_ORDER else len(STAGE_ORDER), s))
    curves = [(key, label) for key, label in CURVES
              if any(f"{st}/{key}" in per for st in stages for per in metrics.values())]
    if not stages or not curves:
        return None
    fig = new_figure(4.0 * len(curves), 2.6 * len(stages))
    seeds = list(metrics)
    colors = palette(len(seeds))
    for r, stage in enumerate(stages):
        for c, (key, label) in enumerate(curves):
            ax = fig.add_subplot(len(stages), len(curves), r * len(curves) + c + 1)
            drawn = False
            for seed, color in zip(seeds, colors):
                points = metrics[seed].get(f"{stage}/{key}")
                if points:
                    ax.plot([p[0] for p in points], [p[1] for p in points], color=color, label=f"seed {seed}",
                            marker="o" if len(points) < 20 else None, markersize=3)
                    drawn = True
            ax.set_title(f"{stage}: {label}", fontsize=9)
            ax.set_xlabel("step", fontsize=8)
            if drawn and len(seeds) > 1 and r == 0 and c == 0:
                ax.legend(fontsize=7)
            if not drawn:
                ax.text(0.5, 0.5, "no data", ha="center", va="center", transform=ax.transAxes, color="grey")
    return png_bytes(fig)


def _is_rl(stage: str) -> bool:
    return rl_start(stage) is not None


def rl_curves_plot(metrics: dict[str, dict[str, list]]) -> bytes | None:
    """One panel per RL metric (rollout reward, success, invalid rate, KL, valid success) against the RL
    step, one line per start (IL→GRPO, ...): the mean over seeds, shaded between the lowest and highest seed."""
    import numpy as np

    starts = ("il", "iwm", "sr", "init")
    stages = sorted({k.split("/", 1)[0] for per in metrics.values() for k in per if _is_rl(k.split("/", 1)[0])},
                    key=lambda s: (starts.index(rl_start(s)) if rl_start(s) in starts else 9, s))
    if not stages:
        return None
    fig = new_figure(3.2 * len(RL_CURVES), 3.0)
    for c, (key, label) in enumerate(RL_CURVES):
        ax = fig.add_subplot(1, len(RL_CURVES), c + 1)
        for stage, color in zip(stages, palette(len(stages))):
            per_seed = [dict(map(tuple, per[f"{stage}/{key}"])) for per in metrics.values()
                        if per.get(f"{stage}/{key}")]
            steps = sorted(set.intersection(*(set(d) for d in per_seed))) if per_seed else []
            if not steps:
                continue
            values = np.asarray([[d[s] for s in steps] for d in per_seed])
            ax.plot(steps, values.mean(0), color=color, label=method_name(stage),
                    marker="o" if len(steps) < 20 else None, markersize=3)
            if len(per_seed) > 1:
                ax.fill_between(steps, values.min(0), values.max(0), color=color, alpha=0.15)
        ax.set_title(label, fontsize=9)
        ax.set_xlabel("RL step", fontsize=8)
        if c == 0:
            ax.legend(fontsize=7)
    return png_bytes(fig)


def world_model_plot(report: dict) -> bytes | None:
    """Token accuracy / exact match (%) and loss of next-state prediction per method, per-seed dots."""
    methods = [m for m in report["methods"] if report["world_model"].get(m)]
    if not methods:
        return None
    fig = new_figure(8.0, 3.2)
    panels = (("token_accuracy", "token accuracy (%)", 100.0), ("exact_match", "exact match (%)", 100.0),
              ("loss", "loss per target token", 1.0))
    colors = palette(len(methods))
    for c, (key, label, scale) in enumerate(panels):
        ax = fig.add_subplot(1, len(panels), c + 1)
        for i, method in enumerate(methods):
            wm = report["world_model"][method]
            if wm[key]["mean"] is None:
                continue
            ax.bar(i, scale * wm[key]["mean"], 0.7, yerr=scale * wm[key]["std"], capsize=3, color=colors[i], alpha=0.8)
            dots = [scale * v[key] for v in wm["per_seed"].values() if isinstance(v.get(key), int | float)]
            ax.scatter([i] * len(dots), dots, color="black", s=10, zorder=3)
        ax.set_xticks(range(len(methods)), [method_name(m) for m in methods])
        ax.set_title(label, fontsize=9)
    return png_bytes(fig)
