"""Interval estimates for success rates and paired differences over seeds x tasks.

An evaluation gives one success value per (seed, task): the share of that task's episodes won (one episode
per task with greedy decoding). Two sources of variation matter: which tasks were drawn (the task list is
a sample of the environment's tasks) and which training seed was drawn (a method's result varies from seed
to seed). Both are resampled by :func:`bootstrap_ci`, a two-way (seeds x tasks) percentile bootstrap: each
resample draws seeds with replacement and tasks with replacement and takes the mean of the resulting
sub-matrix. With one seed it is the ordinary bootstrap over tasks.

* a method's success: the mean of its ``[seeds, tasks]`` matrix, with the wider of the bootstrap interval
  and the Wilson interval of the pooled count;
* a difference to the baseline: the matrix of *paired* differences (same seed, same task, both methods),
  its mean and the wider of the bootstrap interval and Newcombe's interval for paired proportions
  (:func:`newcombe_paired`, when every outcome is 0 or 1); "significant" only when it excludes 0.

Why the wider of two: a percentile bootstrap has no width where the data have no variation (a method that
won no episode, two methods that agree on every task): "0.0 [0.0, 0.0]" would claim certainty that 32
episodes cannot give. Wilson's and Newcombe's intervals keep the binomial width there; the bootstrap adds
the seed-to-seed variation they ignore.

For one seed's Wilson interval (binomial, episodes independent) the evaluation uses
:func:`ee_jax.eval.metrics.wilson_interval`; :func:`wilson` here is the same interval from scipy, used
for the pooled (seeds x tasks) count.
"""

from __future__ import annotations

import numpy as np
from scipy import stats

LEVEL = 0.95
RESAMPLES = 10_000
SEED = 0  # the bootstrap's own generator: a report is a deterministic function of its results


def wilson(successes: int, n: int, level: float = LEVEL) -> tuple[float, float]:
    """The Wilson score interval of ``successes`` out of ``n`` (scipy's ``binomtest``); (0, 1) for n = 0."""
    if n == 0:
        return 0.0, 1.0
    ci = stats.binomtest(int(successes), int(n)).proportion_ci(confidence_level=level, method="wilson")
    return float(ci.low), float(ci.high)


def bootstrap_ci(matrix, level: float = LEVEL, resamples: int = RESAMPLES, seed: int = SEED) -> tuple[float, float]:
    """Percentile interval of the mean of ``matrix[seeds, tasks]`` under resampling seeds and tasks with
    replacement (independently). A constant matrix gives a zero-width interval at its value."""
    x = np.asarray(matrix, dtype=np.float64)
    if x.ndim != 2 or 0 in x.shape:
        raise ValueError(f"bootstrap_ci needs a non-empty [seeds, tasks] matrix, got shape {x.shape}")
    rng = np.random.default_rng(seed)
    s, t = x.shape
    rows = rng.integers(0, s, size=(resamples, s))
    cols = rng.integers(0, t, size=(resamples, t))
    # mean over the resampled sub-matrix = mean over drawn rows of (each row's sum over the drawn columns) / t
    sums = x[:, cols].sum(axis=2).T  # [resamples, s]
    means = np.take_along_axis(sums, rows, axis=1).mean(axis=1) / t
    tail = (1 - level) / 2
    lo, hi = np.quantile(means, [tail, 1 - tail])
    return float(lo), float(hi)


def _binary(x: np.ndarray) -> bool:
    return bool(np.all((x == 0) | (x == 1)))


def _wider(a: tuple[float, float], b: tuple[float, float]) -> list[float]:
    return [min(a[0], b[0]), max(a[1], b[1])]


def newcombe_paired(a, b, level: float = LEVEL) -> tuple[float, float]:
    """Newcombe's (1998, method 10) interval for ``mean(a) - mean(b)`` of paired 0/1 outcomes: Wilson
    intervals of both proportions combined with the pairs' correlation. Pairs are taken as independent."""
    a, b = np.asarray(a, dtype=np.float64).ravel(), np.asarray(b, dtype=np.float64).ravel()
    n = a.size
    both, only_a = float(np.sum(a * b)), float(np.sum(a * (1 - b)))
    only_b, neither = float(np.sum((1 - a) * b)), float(np.sum((1 - a) * (1 - b)))
    p1, p2 = (both + only_a) / n, (both + only_b) / n
    l1, u1 = wilson(int(both + only_a), n, level)
    l2, u2 = wilson(int(both + only_b), n, level)
    margins = (both + only_a) * (only_b + neither) * (both + only_b) * (only_a + neither)
    phi = (both * neither - only_a * only_b) / np.sqrt(margins) if margins > 0 else 0.0
    d = p1 - p2
    lower = np.sqrt(max((p1 - l1) ** 2 - 2 * phi * (p1 - l1) * (u2 - p2) + (u2 - p2) ** 2, 0.0))
    upper = np.sqrt(max((u1 - p1) ** 2 - 2 * phi * (u1 - p1) * (p2 - l2) + (p2 - l2) ** 2, 0.0))
    return float(d - lower), float(d + upper)


def success_interval(matrix, level: float = LEVEL) -> dict:
    """``{"mean", "ci95", "seeds", "tasks"}`` of a ``[seeds, tasks]`` success matrix (see the module
    docstring for the interval)."""
    x = np.asarray(matrix, dtype=np.float64)
    ci = bootstrap_ci(x, level)
    if _binary(x):
        ci = _wider(ci, wilson(int(x.sum()), x.size, level))
    return {"mean": float(x.mean()), "ci95": list(ci), "seeds": x.shape[0], "tasks": x.shape[1]}


def paired_difference(a, b, level: float = LEVEL) -> dict:
    """``a - b`` paired by (seed, task): ``{"mean", "ci95", "significant", "seeds", "tasks"}`` (the interval:
    see the module docstring). ``significant`` is True only when the interval excludes 0."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.shape != b.shape:
        raise ValueError(f"paired_difference needs matrices of one shape, got {a.shape} and {b.shape}")
    d = a - b
    lo, hi = bootstrap_ci(d, level)
    if _binary(a) and _binary(b):
        lo, hi = _wider((lo, hi), newcombe_paired(a, b, level))
    return {"mean": float(d.mean()), "ci95": [lo, hi], "significant": bool(lo > 0 or hi < 0),
            "seeds": d.shape[0], "tasks": d.shape[1]}
