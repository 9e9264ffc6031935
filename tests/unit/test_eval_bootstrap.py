"""The paired bootstrap against hand computations and the closed form of the mean's standard error."""

from __future__ import annotations

import math

import numpy as np
import pytest

from router.eval.stats import mean_ci, paired_bootstrap, percentile


def test_constant_difference_gives_a_zero_width_interval_whatever_the_items() -> None:
    # Items differ wildly in difficulty, but B is always exactly 0.25 better than A: pairing removes
    # the item variance entirely, so the interval is the point itself.
    a = [0.0, 0.75, 0.1, 0.5, 0.3, 0.6]
    b = [x + 0.25 for x in a]
    ci = paired_bootstrap(b, a, resamples=2000, seed=1)
    assert ci is not None
    assert (ci.n, ci.mean, ci.low, ci.high) == (6, pytest.approx(0.25), pytest.approx(0.25), pytest.approx(0.25))


def test_two_items_hand_computation() -> None:
    # Differences {0, 1}: a resample of 2 items has mean 0 (p=1/4), 0.5 (p=1/2) or 1 (p=1/4), so the
    # 2.5th percentile is 0 and the 97.5th is 1.
    ci = paired_bootstrap([1, 1], [1, 0], resamples=20_000, seed=3)
    assert ci is not None and ci.mean == 0.5 and ci.low == 0.0 and ci.high == 1.0


def test_three_items_exact_bootstrap_distribution() -> None:
    # Differences {0, 0, 1}: the resampled mean is k/3 with k ~ Binomial(3, 1/3):
    # P = 8/27, 12/27, 6/27, 1/27. The CDF reaches 0.963 at 2/3, so the 97.5th percentile is 1,
    # and the 2.5th is 0. The median sits at 1/3 (CDF 0.296 -> 0.741).
    diffs = np.array([0.0, 0.0, 1.0])
    rng = np.random.default_rng(0)
    ci = paired_bootstrap(diffs, np.zeros(3), resamples=40_000, seed=0)
    assert ci is not None and (ci.low, ci.high) == (0.0, 1.0)
    assert ci.mean == pytest.approx(1 / 3)
    # the sampled distribution matches the binomial one
    means = diffs[rng.integers(0, 3, size=(40_000, 3))].mean(axis=1)
    for k, p in enumerate([8 / 27, 12 / 27, 6 / 27, 1 / 27]):
        assert np.mean(np.isclose(means, k / 3)) == pytest.approx(p, abs=0.01)


def test_interval_matches_the_closed_form_standard_error() -> None:
    # For a large sample the percentile interval approaches mean +- 1.96 * sd/sqrt(n) where sd is the
    # plug-in (divide by n) standard deviation: the bootstrap's own variance of the mean.
    rng = np.random.default_rng(42)
    a = rng.integers(0, 2, size=400).astype(float)
    b = np.clip(a + rng.choice([-1.0, 0.0, 0.0, 1.0], size=400), 0, 1)
    d = b - a
    se = d.std(ddof=0) / math.sqrt(len(d))
    ci = paired_bootstrap(b, a, resamples=40_000, seed=7)
    assert ci is not None
    assert ci.low == pytest.approx(d.mean() - 1.96 * se, abs=0.15 * se + 0.003)
    assert ci.high == pytest.approx(d.mean() + 1.96 * se, abs=0.15 * se + 0.003)


def test_seeded_and_deterministic() -> None:
    rng = np.random.default_rng(1)
    a, b = rng.random(30), rng.random(30)
    assert paired_bootstrap(a, b, seed=5) == paired_bootstrap(a, b, seed=5)
    assert paired_bootstrap(a, b, seed=5) != paired_bootstrap(a, b, seed=6)


def test_pairs_must_line_up_and_empty_samples_have_no_interval() -> None:
    with pytest.raises(ValueError, match="pairs must line up"):
        paired_bootstrap([1, 0], [1])
    assert mean_ci([]) is None
    assert paired_bootstrap([], []) is None


def test_latency_percentiles() -> None:
    assert percentile([1, 2, 3, 4, 5], 50) == 3
    assert percentile(list(range(1, 101)), 95) == pytest.approx(95.05)
    assert percentile([], 50) is None
