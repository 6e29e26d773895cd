"""The scaling report's numbers: success against parameters and training FLOPs, and the
parameter-efficiency answer.

Inputs are the points' own reports (``RUN/f*/SIZE/report.json``, every number already checked against
the episode logs) and their resolved configs. Training FLOPs of a method = its optimizer updates x the
tokens one update processes (``batch_size x seq_len``, which ``grad_accum`` splits into micro-batches;
packed rows, padding included: what the device computed) x the closed-form FLOPs per token
(``models.accounting``).

The answer: for each early-experience method M, the smallest model at which M *matches or beats*
imitation at a larger size. Seeds pair up (a seed's data, task lists and evaluation are the same at
every size), so the comparison is the mean of per-seed differences ``success_M(small) - success_IL(large)``
with a t-based 95% interval over seeds. "Matches" means the mean difference is at least
``-match_margin``; the interval says whether that is established (its lower end also >= -margin).
"""

from __future__ import annotations

import math

from ee_jax.config import Config, trained_model
from ee_jax.models.accounting import param_count, train_flops_per_token
from ee_jax.pipeline.timings import worked_seconds


def tokens_per_update(cfg: Config) -> int:
    return cfg.train.batch_size * cfg.train.seq_len  # train.grad_accum splits these rows into micro-batches


def paired_difference(a: dict[str, float], b: dict[str, float]) -> dict | None:
    """Mean of per-seed ``a - b`` over the seeds both have, with a t-based 95% interval."""
    seeds = sorted(set(a) & set(b), key=str)
    if not seeds:
        return None
    d = [a[s] - b[s] for s in seeds]
    n = len(d)
    mean = sum(d) / n
    if n < 2:
        return {"mean": mean, "ci95": None, "n": n, "per_seed": dict(zip(seeds, d, strict=True))}
    from scipy.stats import t

    sd = math.sqrt(sum((x - mean) ** 2 for x in d) / (n - 1))
    half = float(t.ppf(0.975, n - 1)) * sd / math.sqrt(n)
    return {"mean": mean, "ci95": [mean - half, mean + half], "n": n, "per_seed": dict(zip(seeds, d, strict=True))}


def point_rows(point: dict, report: dict, cfg: Config, timings: list[dict] | None = None) -> list[dict]:
    """One row per method of one point: parameters, training FLOPs, success per split, and (from the
    point's time ledger, when it has one) train and eval wall clock per seed."""
    model = trained_model(cfg)
    per_update = tokens_per_update(cfg) * train_flops_per_token(model, cfg.train.seq_len)
    rows = []
    for method in report["methods"]:
        if method not in ("il", "iwm", "sr"):
            continue
        updates = report["training"].get(method, {}).get("updates", {}).get("per_seed", {})
        row = {"fraction": point["fraction"], "size": point["size"], "method": method,
               "params": param_count(model), "updates": updates,
               "train_flops": {s: u * per_update for s, u in updates.items()},
               "train_seconds": worked_seconds(timings or [], f"train_{method}"),
               "eval_seconds": worked_seconds(timings or [], f"eval_{method}")}
        for split, cell in report["results"][method].items():
            success = cell["success"]
            row[split] = {"per_seed": success["per_seed"], "mean": success["mean"], "std": success.get("std"),
                          "episodes": cell.get("episodes", {})}
        rows.append(row)
    return rows


def _mean(values: dict) -> float | None:
    return sum(values.values()) / len(values) if values else None


def efficiency(rows: list[dict], split: str, margin: float) -> dict:
    """Every (early-experience method at size a) vs (imitation at size b >= a) comparison, and per
    fraction and method the smallest size that matches or beats a larger imitation model."""
    comparisons, answers = [], []
    for fraction in sorted({r["fraction"] for r in rows}):
        frac = [r for r in rows if r["fraction"] == fraction and split in r]
        il = sorted((r for r in frac if r["method"] == "il"), key=lambda r: r["params"])
        for method in ("iwm", "sr"):
            mine = sorted((r for r in frac if r["method"] == method), key=lambda r: r["params"])
            best = None
            for r in mine:
                for base in il:
                    if base["params"] < r["params"]:
                        continue
                    diff = paired_difference(r[split]["per_seed"], base[split]["per_seed"])
                    if diff is None:
                        continue
                    matches = diff["mean"] >= -margin
                    established = bool(diff["ci95"]) and diff["ci95"][0] >= -margin
                    c = {"fraction": fraction, "method": method, "size": r["size"], "params": r["params"],
                         "il_size": base["size"], "il_params": base["params"], "difference": diff,
                         "matches": matches, "established": established}
                    comparisons.append(c)
                    larger = base["params"] > r["params"]
                    # The answer: the smallest size matching a *larger* IL model; at that size, the largest one.
                    if matches and larger and (best is None or r["params"] < best["params"] or
                                               (r["params"] == best["params"] and base["params"] > best["il_params"])):
                        best = c
            answers.append({"fraction": fraction, "method": method, "answer": best})
    return {"split": split, "margin": margin, "comparisons": comparisons, "answers": answers}


def summarize(rows: list[dict]) -> list[dict]:
    """Rows with the means a table or plot needs (success per split, training FLOPs)."""
    out = []
    for r in rows:
        out.append({**r, "train_flops_mean": _mean(r["train_flops"]), "updates_mean": _mean(r["updates"]),
                    "train_seconds_mean": _mean(r.get("train_seconds") or {}),
                    "eval_seconds_mean": _mean(r.get("eval_seconds") or {})})
    return out
