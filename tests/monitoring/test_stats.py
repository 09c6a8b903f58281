"""Every drift statistic against scipy (or its textbook formula) on the same data."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats
from scipy.spatial import distance

from shipyard.monitoring._stats import (
    benjamini_hochberg,
    categorical_stats,
    missing_rate_test,
    numeric_stats,
    psi,
)

RNG = np.random.default_rng(20261126)


@pytest.mark.parametrize(
    ("n_ref", "n_cur", "shift"),
    [(300, 200, 0.0), (5000, 8000, 0.1), (20_000, 50_000, 0.05), (200_000, 150_000, 0.0)],
)
def test_ks_statistic_and_p_value_equal_scipy(n_ref: int, n_cur: int, shift: float) -> None:
    ref = RNG.normal(0, 1, n_ref)
    cur = RNG.normal(shift, 1, n_cur)
    ours = numeric_stats(ref, cur)
    theirs = stats.ks_2samp(ref, cur)
    assert ours.ks_statistic == pytest.approx(theirs.statistic, abs=1e-12)
    _same_p(ours.ks_p_value, float(theirs.pvalue))


def _same_p(ours: float, scipys: float) -> None:
    """scipy's exact value, except below 1e-12 where the limit distribution stands in for it."""
    if scipys < 1e-12:
        assert ours == pytest.approx(scipys, abs=1e-12)
    else:
        assert ours == pytest.approx(scipys, rel=1e-9)


def test_ks_handles_ties_like_scipy() -> None:
    ref = RNG.integers(0, 5, 20_000).astype(float)
    cur = RNG.integers(0, 6, 30_000).astype(float)
    ours = numeric_stats(ref, cur)
    theirs = stats.ks_2samp(ref, cur)
    assert ours.ks_statistic == pytest.approx(theirs.statistic, abs=1e-12)
    _same_p(ours.ks_p_value, float(theirs.pvalue))


@pytest.mark.parametrize("n", [50, 10_000, 120_000])
def test_wasserstein_equals_scipy(n: int) -> None:
    ref = RNG.lognormal(0, 1, n)
    cur = RNG.lognormal(0.2, 1.1, n + 7)
    ours = numeric_stats(ref, cur)
    assert ours.wasserstein == pytest.approx(stats.wasserstein_distance(ref, cur), rel=1e-9)
    assert ours.wasserstein_norm == pytest.approx(ours.wasserstein / np.std(ref), rel=1e-12)


def test_missing_values_are_counted_apart_not_tested() -> None:
    ref = RNG.normal(0, 1, 10_000)
    cur = RNG.normal(0, 1, 10_000)
    ref[:100] = np.nan
    cur[:500] = np.nan
    ours = numeric_stats(ref, cur)
    assert (ours.missing_ref, ours.missing_cur) == (100, 500)
    theirs = stats.ks_2samp(ref[100:], cur[500:])
    assert ours.ks_statistic == pytest.approx(theirs.statistic, abs=1e-12)


def test_psi_on_reference_deciles_matches_the_formula() -> None:
    ref = RNG.normal(0, 1, 50_000)
    cur = RNG.normal(0.5, 1, 40_000)
    edges = np.quantile(ref, np.linspace(0.1, 0.9, 9))
    r = np.bincount(np.searchsorted(edges, ref, side="right"), minlength=10) / len(ref)
    c = np.bincount(np.searchsorted(edges, cur, side="right"), minlength=10) / len(cur)
    expected = float(np.sum((c - r) * np.log(c / r)))
    assert numeric_stats(ref, cur).psi == pytest.approx(expected, rel=1e-12)
    assert psi([0.5, 0.5], [0.5, 0.5]) == 0.0
    assert psi([1, 0], [0, 1]) == pytest.approx((1e-4 - 1) * math.log(1e-4) * 2, rel=1e-12)


def test_sturges_psi_uses_evidentlys_bins_and_zero_filling() -> None:
    ref = RNG.normal(0, 1, 20_000)
    cur = RNG.normal(2, 1, 20_000)  # far apart: many empty bins on each side
    edges = np.histogram_bin_edges(np.concatenate([ref, cur]), bins="sturges")

    def fill(p: np.ndarray) -> np.ndarray:
        nz = p[p != 0]
        value = nz.min() / 10**6 if nz.min() <= 0.0001 else 0.0001
        return np.where(p == 0, value, p)

    r = fill(np.histogram(ref, edges)[0] / len(ref))
    c = fill(np.histogram(cur, edges)[0] / len(cur))
    assert numeric_stats(ref, cur).psi_sturges == pytest.approx(
        float(np.sum((r - c) * np.log(r / c))), rel=1e-12
    )


def test_categorical_tests_equal_scipy() -> None:
    ref = {"a": 4000, "b": 3000, "c": 1500, "d": 1000, "e": 500}
    cur = {"a": 2800, "b": 3000, "c": 1500, "d": 1200, "e": 1000, "f": 500}
    ours = categorical_stats(ref, cur)
    keys = sorted(set(ref) | set(cur))
    r = np.array([ref.get(k, 0) for k in keys], dtype=float)
    c = np.array([cur.get(k, 0) for k in keys], dtype=float)
    contingency = stats.chi2_contingency(np.vstack([r, c]), correction=False)
    assert ours.chi2_statistic == pytest.approx(contingency.statistic, rel=1e-12)
    assert ours.chi2_p_value == pytest.approx(contingency.pvalue, rel=1e-9, abs=1e-300)
    assert ours.chi2_dof == contingency.dof
    assert ours.jensen_shannon == pytest.approx(
        distance.jensenshannon(r / r.sum(), c / c.sum()), rel=1e-12
    )
    assert ours.unseen == {"f": 500}
    assert ours.unseen_share == pytest.approx(500 / 10_000)
    # goodness of fit against the reference taken as exact: infinite for a new category
    assert math.isinf(ours.chi2_gof_statistic)
    same = categorical_stats(ref, {k: v * 2 for k, v in ref.items()})
    gof = stats.chisquare(
        [v * 2 for v in ref.values()], [v / 10_000 * 20_000 for v in ref.values()]
    )
    assert same.chi2_gof_statistic == pytest.approx(gof.statistic, abs=1e-9)
    assert same.chi2_p_value == pytest.approx(1.0)


def test_missing_rate_z_test_and_cohens_h() -> None:
    p, h = missing_rate_test(1_000, 100_000, 5_000, 100_000)
    p1, p2 = 0.01, 0.05
    pooled = 0.03
    z = (p2 - p1) / math.sqrt(pooled * (1 - pooled) * (2 / 100_000))
    assert p == pytest.approx(2 * stats.norm.sf(z), rel=1e-9, abs=1e-300)
    assert h == pytest.approx(2 * math.asin(math.sqrt(p2)) - 2 * math.asin(math.sqrt(p1)))
    assert missing_rate_test(0, 100, 0, 100) == (1.0, 0.0)


def test_benjamini_hochberg_matches_the_step_up_procedure() -> None:
    p = [0.01, 0.04, 0.03, 0.005, 0.5, math.nan]
    adjusted = benjamini_hochberg(p)
    # by hand: sorted 0.005, 0.01, 0.03, 0.04, 0.5 -> 0.025, 0.025, 0.05, 0.05, 0.5
    assert adjusted[:5] == pytest.approx([0.025, 0.05, 0.05, 0.025, 0.5])
    assert math.isnan(adjusted[5])
