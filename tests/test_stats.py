"""Report statistics against hand-computed values: Wilson intervals, the two-way (seeds x tasks) bootstrap,
paired differences and their significance, and how the report pairs methods by seed and task."""

from __future__ import annotations

import math

import numpy as np
import pytest

from ee_jax.eval.metrics import wilson_interval
from ee_jax.report.stats import bootstrap_ci, newcombe_paired, paired_difference, success_interval, wilson

Z = 1.959963984540054


def test_wilson_matches_the_formula_and_the_evaluation():
    # 3 of 10 at z = 1.959964: centre (k + z^2/2) / (n + z^2), half-width z sqrt(k(n-k)/n + z^2/4) / (n + z^2)
    z, k, n = 1.959963984540054, 3, 10
    centre = (k + z * z / 2) / (n + z * z)
    half = z * math.sqrt(k * (n - k) / n + z * z / 4) / (n + z * z)
    assert wilson(k, n) == pytest.approx((centre - half, centre + half), abs=1e-9)
    assert wilson(k, n) == pytest.approx(wilson_interval(k, n), abs=1e-3)  # the evaluation's own (z = 1.96)
    assert wilson(0, 0) == (0.0, 1.0)


def test_bootstrap_by_hand():
    # one seed, two tasks (0, 1): a resample's mean is 0, 0.5 or 1 with chances 1/4, 1/2, 1/4, so the
    # 2.5% and 97.5% quantiles of 10,000 resamples are 0 and 1
    assert bootstrap_ci([[0.0, 1.0]]) == (0.0, 1.0)
    # a constant matrix has nothing to resample: a zero-width interval at its value
    assert bootstrap_ci(np.full((3, 5), 0.4)) == pytest.approx((0.4, 0.4))
    # seeds are resampled too: tasks agree within each seed, seeds differ -> the interval spans the seeds
    lo, hi = bootstrap_ci([[0.0] * 20, [1.0] * 20])
    assert (lo, hi) == (0.0, 1.0)
    # rows and columns are resampled independently: two seeds x 40 tasks, every task won half the time
    lo, hi = bootstrap_ci(np.tile([0.0, 1.0], (2, 20)))
    assert 0.3 < lo < 0.5 < hi < 0.7
    assert bootstrap_ci([[0.0, 1.0, 1.0]], seed=3) == bootstrap_ci([[0.0, 1.0, 1.0]], seed=3)  # deterministic
    with pytest.raises(ValueError, match="seeds, tasks"):
        bootstrap_ci([1.0, 0.0])


def test_paired_difference_and_significance():
    a = [[1, 1, 1, 1, 1, 1, 1, 1, 0, 0]] * 2
    b = [[0, 0, 0, 0, 0, 0, 0, 0, 0, 0]] * 2
    d = paired_difference(a, b)
    assert d["mean"] == pytest.approx(0.8) and d["seeds"] == 2 and d["tasks"] == 10
    assert d["ci95"][0] > 0 and d["significant"]
    # the same tasks won and lost by both methods: every paired difference is 0, but 20 pairs cannot show
    # the difference is exactly 0: Newcombe's interval keeps its width where the bootstrap has none
    same = paired_difference(a, a)
    assert same["mean"] == 0.0 and same["ci95"][0] < -0.05 and same["ci95"][1] > 0.05 and not same["significant"]
    assert bootstrap_ci(np.subtract(a, a)) == (0.0, 0.0)
    # a gain on one task of ten is not significant
    one = paired_difference([[1] + [0] * 9], [[0] * 10])
    assert one["mean"] == pytest.approx(0.1) and one["ci95"][0] < 0 and not one["significant"]
    # a loss everywhere is significant, with a negative interval
    assert paired_difference(b, a)["ci95"][1] < 0 and paired_difference(b, a)["significant"]
    with pytest.raises(ValueError, match="one shape"):
        paired_difference([[1, 0]], [[1, 0, 1]])


def test_success_interval_fields_and_a_method_that_never_wins():
    got = success_interval([[1, 0, 1, 1], [0, 0, 1, 1]])
    assert got["mean"] == pytest.approx(0.625) and got["seeds"] == 2 and got["tasks"] == 4
    assert got["ci95"][0] <= 0.625 <= got["ci95"][1]
    # 0 of 32: not [0, 0] (the bootstrap's) but Wilson's [0, z^2 / (n + z^2)]
    none = success_interval([[0.0] * 32])
    assert none["ci95"] == pytest.approx([0.0, Z * Z / (32 + Z * Z)])
    # fractions (several samples per task): the bootstrap alone
    assert success_interval([[0.5, 0.5]])["ci95"] == [0.5, 0.5]


def test_newcombe_paired_by_hand():
    # no discordant pair and no success: phi = 0, the interval is +- the Wilson upper end of 0/n
    w = Z * Z / (32 + Z * Z)
    assert newcombe_paired([0] * 32, [0] * 32) == pytest.approx((-w, w))
    # 10 pairs: both won 2, only a 3, only b 1, neither 4 -> p1 = 0.5, p2 = 0.3
    a = [1, 1, 1, 1, 1, 0, 0, 0, 0, 0]
    b = [1, 1, 0, 0, 0, 1, 0, 0, 0, 0]
    l1, u1 = wilson(5, 10)
    l2, u2 = wilson(3, 10)
    phi = (2 * 4 - 3 * 1) / math.sqrt(5 * 5 * 3 * 7)
    lo = 0.2 - math.sqrt((0.5 - l1) ** 2 - 2 * phi * (0.5 - l1) * (u2 - 0.3) + (u2 - 0.3) ** 2)
    hi = 0.2 + math.sqrt((u1 - 0.5) ** 2 - 2 * phi * (u1 - 0.5) * (0.3 - l2) + (0.3 - l2) ** 2)
    assert newcombe_paired(a, b) == pytest.approx((lo, hi))
    assert lo < 0 < hi  # 3 against 1 discordant pairs: not significant
    # the same data reversed: the interval mirrors
    assert newcombe_paired(b, a) == pytest.approx((-hi, -lo))
