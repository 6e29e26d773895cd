"""Write the scaling report: ``RUN/scaling.json``, ``RUN/scaling.md`` and ``RUN/plots/*.png``."""

from __future__ import annotations

import json
import os
import time

from ee_jax.files import atomic_write_text as atomic_write
from ee_jax.report.markdown import human, method_name
from ee_jax.report.plots import new_figure, palette, png_bytes
from ee_jax.sweep.data_efficiency import render_markdown as data_efficiency_markdown
from ee_jax.sweep.data_efficiency import success_vs_fraction

STYLES = ("-", "--", ":", "-.")


def _pct(x: float | None) -> str:
    return "—" if x is None else f"{100 * x:.1f}"


def _cell(cell: dict | None) -> str:
    if not cell:
        return "—"
    std = cell.get("std")
    return f"{_pct(cell['mean'])} ± {_pct(std)}" if std is not None else _pct(cell["mean"])


def _diff(d: dict) -> str:
    ci = d["ci95"]
    return f"{100 * d['mean']:+.1f}" + (f" [{100 * ci[0]:+.1f}, {100 * ci[1]:+.1f}]" if ci else "") + f" (n={d['n']})"


def success_curves(rows: list[dict], split: str, x_key: str, x_label: str) -> bytes | None:
    """Success (%) against ``x_key`` (log scale): one color per method, one line style per data fraction."""
    rows = [r for r in rows if split in r and r.get(x_key)]
    if not rows:
        return None
    fig = new_figure(5.6, 3.8)
    ax = fig.add_subplot(1, 1, 1)
    methods = [m for m in ("il", "iwm", "sr") if any(r["method"] == m for r in rows)]
    fractions = sorted({r["fraction"] for r in rows}, reverse=True)
    for method, color in zip(methods, palette(len(methods)), strict=False):
        for fraction, style in zip(fractions, STYLES * 4, strict=False):
            pts = sorted((r for r in rows if r["method"] == method and r["fraction"] == fraction),
                         key=lambda r: r[x_key])
            if not pts:
                continue
            label = method_name(method) + (f", {fraction:g} of the data" if len(fractions) > 1 else "")
            ax.errorbar([r[x_key] for r in pts], [100 * r[split]["mean"] for r in pts],
                        yerr=[100 * (r[split]["std"] or 0) for r in pts], color=color, linestyle=style,
                        marker="o", capsize=3, label=label)
    ax.set_xscale("log")
    ax.set_xlabel(x_label)
    ax.set_ylabel(f"{split} success (%)")
    ax.set_title(f"{split} success, mean ± std over seeds")
    ax.legend(fontsize=8)
    return png_bytes(fig)


def _times(row: dict) -> str:
    train, ev = row.get("train_seconds_mean"), row.get("eval_seconds_mean")
    if train is None or ev is None:
        return "n/a"
    return f"{train / 60:.1f} + {ev / 60:.1f} min"


def render_markdown(report: dict) -> str:
    s, eff = report["sweep"], report["efficiency"]
    lines = [f"# Scaling: {report['title']}", "",
             f"Base config `{s['base']}`; sizes {', '.join(s['sizes'])}; methods {', '.join(s['methods'])}; "
             f"seeds {s['seeds']}; data fractions {s['data_fractions']}. Created {report['created']}.", "",
             *[f"**Privileged:** {p}." for p in report.get("privileged") or []],
             *([""] if report.get("privileged") else []),
             "## Success by size and method", "",
             "| data | size | params | method | updates | training FLOPs | train + eval time / seed | test | ood |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in report["rows"]:
        lines.append(f"| {r['fraction']:g} | {r['size']} | {human(r['params'])} | {method_name(r['method'])} | "
                     f"{r['updates_mean']:.0f} | {human(r['train_flops_mean'], 'FLOP')} | {_times(r)} | "
                     f"{_cell(r.get('test'))} | {_cell(r.get('ood'))} |")
    lines += ["", "Success in %, mean ± std over seeds. Training FLOPs: updates x tokens per update x "
              "closed-form FLOPs per token (forward + backward), mean over seeds. Time: wall clock of the "
              "method's training and evaluation stages, summed over resumed invocations (the point's "
              "`timings.jsonl`), mean over seeds; n/a for points run before the ledger existed.", "",
              f"## Parameter efficiency ({eff['split']} split, margin {100 * eff['margin']:g} points)", ""]
    for a in eff["answers"]:
        c = a["answer"]
        name = method_name(a["method"])
        if c is None:
            lines.append(f"- data {a['fraction']:g}, {name}: at no size does it match imitation at a larger size.")
        else:
            lines.append(f"- data {a['fraction']:g}, **{name} at {c['size']} ({human(c['params'])} params) "
                         f"{'beats' if c['difference']['mean'] > 0 else 'matches'} IL at {c['il_size']} "
                         f"({human(c['il_params'])})**: difference {_diff(c['difference'])} points, "
                         + ("established by the 95% interval." if c["established"] else
                            "not established: the 95% interval reaches below the margin."))
    lines += ["", "Every comparison (early-experience method at a size vs IL at the same or a larger size; "
              "per-seed differences, t-based 95% interval):", "",
              "| data | method @ size | IL @ size | difference (points) | matches | established |",
              "|---|---|---|---|---|---|"]
    for c in eff["comparisons"]:
        lines.append(f"| {c['fraction']:g} | {method_name(c['method'])} @ {c['size']} | IL @ {c['il_size']} | "
                     f"{_diff(c['difference'])} | {'yes' if c['matches'] else 'no'} | "
                     f"{'yes' if c['established'] else 'no'} |")
    plan = report.get("planning") or {}
    if plan:
        lines += ["", "## Planning figures per size (the run's train step on this machine)", "",
                  "| size | params | FLOPs/token | compile (s) | peak memory / device | step (s) | tokens/s | MFU "
                  "| devices |",
                  "|---|---|---|---|---|---|---|---|---|"]
        for size, p in plan.items():
            peak = human(p.get("peak_bytes"), "B") if p.get("peak_bytes") is not None else "n/a"
            lines.append(f"| {size} | {human(p['params'])} | {human(p['flops_per_token'])} | {p['compile_s']:.1f} | "
                         f"{peak} | {p['step_s']:.3f} | {p['tokens_per_s']:.0f} | {100 * p['mfu']:.1f}% | "
                         f"{p['devices']} x {p['device_kind']} |")
        first = next(iter(plan.values()))
        lines += ["", f"MFU against {first['peak_source']}. Peak memory is the compiled step's arguments + outputs + "
                  "temporaries - donated buffers (XLA memory analysis)."]
    if report.get("data_efficiency"):
        lines += ["", *data_efficiency_markdown(report["data_efficiency"])]
    if report["plots"]:
        lines += ["", "## Plots", ""] + [f"![{p}](plots/{p})" for p in report["plots"]]
    return "\n".join(lines) + "\n"


def write_scaling_report(run_dir: str, report: dict) -> dict:
    """Render the plots and markdown of ``report`` (rows, efficiency, planning, sweep) into ``run_dir``."""
    report = {"created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), **report}
    figures = {"success_vs_params.png": success_curves(report["rows"], report["efficiency"]["split"], "params",
                                                       "parameters"),
               "success_vs_flops.png": success_curves(report["rows"], report["efficiency"]["split"],
                                                      "train_flops_mean", "training FLOPs"),
               "success_vs_data.png": success_vs_fraction(report["data_efficiency"])
               if report.get("data_efficiency") else None}
    report["plots"] = []
    for name, png in figures.items():
        if png is not None:
            atomic_write(os.path.join(run_dir, "plots", name), png)
            report["plots"].append(name)
    atomic_write(os.path.join(run_dir, "scaling.json"), json.dumps(report, indent=1) + "\n")
    atomic_write(os.path.join(run_dir, "scaling.md"), render_markdown(report))
    return report
