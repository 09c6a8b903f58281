"""Every drift statistic against an independent reference: scipy on the same data, or a value
known in closed form."""

from __future__ import annotations

import math
import statistics

import numpy as np
import pytest
from scipy import stats

from shipyard.monitoring._stats import (
    _EXACT_KS_MAX_N,
    PSI_EPSILON,
    benjamini_hochberg,
    categorical_stats,
    missing_rate_test,
    numeric_stats,
    psi,
)

RNG = np.random.default_rng(20261126)
LIMIT_REL = 0.10
"""How far above scipy's a KS p-value from the limit distribution may be (the module doc's
bound for p-values from 1e-30 to 1e-12 with m*n/(m+n) >= 10,000)."""


# up to _EXACT_KS_MAX_N rows on both sides `numeric_stats` hands the samples to scipy itself:
# every case here is larger on at least one side, so the statistic and p-value are our own
@pytest.mark.parametrize(
    ("n_ref", "n_cur", "shift"),
    [(300, 20_000, 0.15), (12_000, 9_000, -0.03), (20_000, 50_000, 0.05), (200_000, 150_000, 0.0)],
)
def test_ks_statistic_and_p_value_equal_scipy(n_ref: int, n_cur: int, shift: float) -> None:
    assert max(n_ref, n_cur) > _EXACT_KS_MAX_N
    ref = RNG.normal(0, 1, n_ref)
    cur = RNG.normal(shift, 1, n_cur)
    ours = numeric_stats(ref, cur)
    theirs = stats.ks_2samp(ref, cur)
    assert ours.ks_statistic == pytest.approx(theirs.statistic, abs=1e-12)
    assert theirs.pvalue > 1e-12  # the limit distribution's stand-in is tested on its own
    assert ours.ks_p_value == pytest.approx(theirs.pvalue, rel=1e-9)


@pytest.mark.parametrize(
    ("n_ref", "n_cur", "shift"), [(20_000, 20_000, 0.1), (30_000, 15_000, 0.13)]
)
def test_ks_p_values_far_in_the_tail_are_the_limit_distribution_within_ten_percent(
    n_ref: int, n_cur: int, shift: float
) -> None:
    ref = RNG.normal(0, 1, n_ref)
    cur = RNG.normal(shift, 1, n_cur)
    ours = numeric_stats(ref, cur)
    theirs = stats.ks_2samp(ref, cur)  # scipy's finite-n distribution at these sizes
    assert ours.ks_statistic == pytest.approx(theirs.statistic, abs=1e-12)
    assert 1e-30 < theirs.pvalue < 1e-12
    assert n_ref * n_cur / (n_ref + n_cur) >= 10_000
    # conservative (never smaller than scipy's), and within the documented relative bound
    assert theirs.pvalue <= ours.ks_p_value <= theirs.pvalue * (1 + LIMIT_REL)


def test_ks_handles_ties_like_scipy() -> None:
    ref = RNG.integers(0, 5, 20_000).astype(float)
    cur = RNG.integers(0, 6, 30_000).astype(float)
    ours = numeric_stats(ref, cur)
    theirs = stats.ks_2samp(ref, cur)
    assert ours.ks_statistic == pytest.approx(theirs.statistic, abs=1e-12)
    assert ours.ks_p_value == pytest.approx(theirs.pvalue, rel=1e-9)


@pytest.mark.parametrize("n", [50, 10_000, 120_000])
def test_wasserstein_equals_scipy(n: int) -> None:
    ref = RNG.lognormal(0, 1, n)
    cur = RNG.lognormal(0.2, 1.1, n + 7)
    ours = numeric_stats(ref, cur)
    assert ours.wasserstein == pytest.approx(stats.wasserstein_distance(ref, cur), rel=1e-9)
    # in reference standard deviations (population sd, as Evidently): the distance between
    # the two samples rescaled by that sd, computed by scipy and the standard library
    sd = statistics.pstdev(ref.tolist())
    assert ours.wasserstein_norm == pytest.approx(
        stats.wasserstein_distance(ref / sd, cur / sd), rel=1e-9
    )


def test_wasserstein_norm_of_known_samples() -> None:
    # every value moved up by 1, reference sd 1 (a sample sd would be sqrt(2))
    assert numeric_stats(np.array([0.0, 2.0]), np.array([1.0, 3.0])).wasserstein_norm == 1.0
    # a constant reference: the sd is floored at 0.001, so a move of 1 is 1000 sds
    constant = numeric_stats(np.zeros(100), np.ones(100))
    assert constant.wasserstein_norm == pytest.approx(1000.0, rel=1e-12)


def test_missing_values_are_counted_apart_not_tested() -> None:
    ref = RNG.normal(0, 1, 30_000)
    cur = RNG.normal(0, 1, 30_000)
    ref[:100] = np.nan
    cur[:500] = np.nan
    ours = numeric_stats(ref, cur)
    assert (ours.missing_ref, ours.missing_cur) == (100, 500)
    assert (ours.n_ref, ours.n_cur) == (30_000, 30_000)
    theirs = stats.ks_2samp(ref[100:], cur[500:])
    assert min(len(ref) - 100, len(cur) - 500) > _EXACT_KS_MAX_N  # our own KS, not scipy's
    assert ours.ks_statistic == pytest.approx(theirs.statistic, abs=1e-12)
    assert ours.ks_p_value == pytest.approx(theirs.pvalue, rel=1e-9)
    assert ours.wasserstein == pytest.approx(
        stats.wasserstein_distance(ref[100:], cur[500:]), rel=1e-9
    )


def test_psi_on_reference_deciles_matches_the_formula() -> None:
    ref = RNG.normal(0, 1, 50_000)
    cur = RNG.normal(0.5, 1, 40_000)
    edges = np.quantile(ref, np.linspace(0.1, 0.9, 9))
    r = np.bincount(np.searchsorted(edges, ref, side="right"), minlength=10) / len(ref)
    c = np.bincount(np.searchsorted(edges, cur, side="right"), minlength=10) / len(cur)
    expected = float(np.sum((c - r) * np.log(c / r)))
    assert numeric_stats(ref, cur).psi == pytest.approx(expected, rel=1e-12)
    assert psi([0.5, 0.5], [0.5, 0.5]) == 0.0


def test_an_empty_bin_is_filled_with_psi_epsilon_when_no_bin_is_that_small() -> None:
    assert PSI_EPSILON == 1e-4
    # counts or shares alike; the empty bin of `actual` becomes 1e-4, not renormalised
    expected = 0.5 * math.log(1.0 / 0.5) + (1e-4 - 0.5) * math.log(1e-4 / 0.5)
    assert psi([1, 1], [7, 0]) == pytest.approx(expected, rel=1e-12)
    assert psi([0.5, 0.5], [1.0, 0.0]) == pytest.approx(expected, rel=1e-12)
    # empty on both sides of two bins: both 1e-4
    both = 2 * (1e-4 - 1) * math.log(1e-4 / 1)
    assert psi([1, 0], [0, 1]) == pytest.approx(both, rel=1e-12)


def test_an_empty_bin_beside_a_tiny_one_is_filled_with_a_millionth_of_it() -> None:
    # reference: 0.1 in each decile. Current: one row below the median, none in four deciles,
    # 10,000 in each upper decile; the one row's share (1/50,001) is under 1e-4, so the empty
    # deciles get a millionth of it
    ref = np.arange(100_000) / 100_000
    cur = np.concatenate([[0.05], 0.5 + np.arange(50_000) / 100_000])
    n = 50_001
    shares = [1 / n, *[1 / n / 1e6] * 4, *[10_000 / n] * 5]
    expected = sum((c - 0.1) * math.log(c / 0.1) for c in shares)
    assert numeric_stats(ref, cur).psi == pytest.approx(expected, rel=1e-9)
    # the same rule for categories: "c" is in the current data only
    ours = categorical_stats({"a": 99_999, "b": 1}, {"a": 50, "b": 30, "c": 20}).psi
    r = [99_999 / 100_000, 1 / 100_000, 1 / 100_000 / 1e6]
    c = [0.5, 0.3, 0.2]
    assert ours == pytest.approx(
        sum((ci - ri) * math.log(ci / ri) for ri, ci in zip(r, c, strict=True)), rel=1e-12
    )


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


def test_jensen_shannon_is_a_natural_log_distance_from_zero_to_sqrt_ln_2() -> None:
    # M = (0.75, 0.25): KL(P||M) = ln(4/3), KL(Q||M) = ln(4/3) / 2, the divergence is their mean
    one_in_two = categorical_stats({"a": 10}, {"a": 5, "b": 5}).jensen_shannon
    assert one_in_two == pytest.approx(math.sqrt(0.75 * math.log(4 / 3)), rel=1e-12)
    assert categorical_stats({"a": 3}, {"b": 8}).jensen_shannon == pytest.approx(
        math.sqrt(math.log(2)), rel=1e-12
    )
    assert categorical_stats({"a": 3, "b": 1}, {"a": 6, "b": 2}).jensen_shannon == 0.0


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


@pytest.mark.parametrize(
    ("missing_ref", "n_ref", "missing_cur", "n_cur"),
    [(100, 10_000, 140, 10_000), (300, 20_000, 180, 9_000), (50, 1_000, 48, 1_200)],
)
def test_missing_rate_z_test_equals_scipys_chi_square_on_the_two_by_two_table(
    missing_ref: int, n_ref: int, missing_cur: int, n_cur: int
) -> None:
    p, _ = missing_rate_test(missing_ref, n_ref, missing_cur, n_cur)
    # a two-sided two-proportion z-test is the chi-square test (no continuity correction) of
    # the 2x2 table, z^2 = chi^2
    table = [[missing_ref, n_ref - missing_ref], [missing_cur, n_cur - missing_cur]]
    reference = stats.chi2_contingency(table, correction=False).pvalue
    assert 1e-4 < reference < 0.9  # a p-value that neither underflows nor saturates
    assert p == pytest.approx(reference, rel=1e-9)


def test_cohens_h_of_known_proportions() -> None:
    # 2*asin(sqrt(p)) is pi/3 at 25% and 2*pi/3 at 75%
    _, h = missing_rate_test(25, 100, 75, 100)
    assert h == pytest.approx(math.pi / 3, rel=1e-12)
    _, h = missing_rate_test(1, 4, 0, 4)  # 25% -> 0%
    assert h == pytest.approx(math.pi / 3, rel=1e-12)
    assert missing_rate_test(0, 100, 0, 100) == (1.0, 0.0)


def test_benjamini_hochberg_takes_the_running_minimum_from_the_largest_p() -> None:
    p = [0.04, 0.01, 0.035, 0.5, math.nan]
    adjusted = benjamini_hochberg(p)
    # sorted 0.01, 0.035, 0.04, 0.5 (m = 4): p * m / rank is 0.04, 0.07, 0.0533, 0.5; the step-up
    # procedure takes the minimum over the ranks above, so 0.035 gets 0.0533, not 0.07
    assert adjusted[:4] == pytest.approx([0.16 / 3, 0.04, 0.16 / 3, 0.5], rel=1e-12)
    assert adjusted[:4] == pytest.approx(list(stats.false_discovery_control(p[:4])), rel=1e-12)
    assert math.isnan(adjusted[4])
    assert all(math.isnan(x) for x in benjamini_hochberg([math.nan, math.nan]))
