"""The statistics behind drift verdicts, vectorised and checked against scipy.

Numeric columns: one merge of the two sorted samples gives both empirical CDFs on every
observed value, from which the Kolmogorov-Smirnov statistic and the Wasserstein-1 distance
come out together (scipy's `ks_2samp` and `wasserstein_distance` compute the same CDFs, each
sorting again). Categorical columns work on counts.

P-values are scipy's to floating-point rounding, with one exception: a KS p-value below
1e-12 when either sample has over 10,000 rows is Kolmogorov's limit distribution
(`kstwobign`), not scipy's finite-n one (`kstwo`, which takes up to seconds there). It is
within 1e-12 of scipy's, and larger (conservative): by under 10% down to 1e-30 when
m*n/(m+n) >= 10,000 (20,000 rows a side); with fewer rows on one side, or further in the
tail, by up to orders of magnitude, where every verdict is the same either way.

PSI fills an empty bin one way everywhere, Evidently's: with a millionth of the smallest
non-zero share of that histogram when that share is at most `PSI_EPSILON` (1e-4), else with
`PSI_EPSILON`. The shares are not renormalised after filling. One rule, so the three PSIs
(reference deciles, Sturges bins, categories) differ only in their bins; Evidently's, so
`psi_sturges` and the categorical PSI equal Evidently's numbers (the drift benchmark checks
them). The rule jumps: a bin holding 1 row in 10,000 or fewer moves the fill of the empty
bins from 1e-4 to under 1e-10, which raises PSI.

Jensen-Shannon is scipy's `distance.jensenshannon` with natural logarithms: a distance (the
square root of the divergence) from 0 (same shares) to sqrt(ln 2) ~ 0.833 (no category in
common).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import stats
from scipy.spatial import distance

__all__ = [
    "PSI_EPSILON",
    "CategoricalStats",
    "NumericStats",
    "benjamini_hochberg",
    "categorical_stats",
    "missing_rate_test",
    "numeric_stats",
    "psi",
]

PSI_EPSILON = 1e-4
"""The share an empty bin gets when no bin of its histogram is this small (see the module doc)."""
_EXACT_KS_MAX_N = 10_000  # scipy's 'auto' mode: exact p-values up to this many rows per side


@dataclass(frozen=True)
class NumericStats:
    """Two samples of a numeric column, compared; NaNs counted apart, not tested."""

    n_ref: int
    n_cur: int
    missing_ref: int
    missing_cur: int
    ks_statistic: float
    ks_p_value: float
    wasserstein: float
    ref_std: float
    psi: float
    psi_sturges: float
    ref_min: float
    ref_max: float
    out_of_range: int
    histogram: dict[str, list[float]]

    @property
    def wasserstein_norm(self) -> float:
        """Wasserstein distance in reference standard deviations (floored at 0.001, as Evidently)."""
        return self.wasserstein / max(self.ref_std, 0.001)


@dataclass(frozen=True)
class CategoricalStats:
    n_ref: int
    n_cur: int
    missing_ref: int
    missing_cur: int
    chi2_statistic: float
    chi2_p_value: float
    chi2_dof: int
    chi2_gof_statistic: float
    chi2_gof_p_value: float
    jensen_shannon: float
    psi: float
    unseen: dict[str, int]
    shares: dict[str, list[Any]]

    @property
    def unseen_share(self) -> float:
        present = self.n_cur - self.missing_cur
        return sum(self.unseen.values()) / present if present else 0.0


def _split(values: np.ndarray) -> tuple[np.ndarray, int]:
    """Non-missing values (sorted) and how many were missing."""
    values = np.asarray(values, dtype=np.float64)
    missing = np.isnan(values)
    n_missing = int(missing.sum())
    kept = values[~missing] if n_missing else values
    return np.sort(kept), n_missing


def psi(expected: Any, actual: Any) -> float:
    """Population stability index of two histograms (shares or counts) over the same bins,
    empty bins filled as the module doc says."""
    e = np.asarray(expected, dtype=np.float64)
    a = np.asarray(actual, dtype=np.float64)
    e = _fill_zeroes(e / e.sum() if e.sum() else e)
    a = _fill_zeroes(a / a.sum() if a.sum() else a)
    return float(np.sum((a - e) * np.log(a / e)))


def _quantile_psi(ref: np.ndarray, cur: np.ndarray, bins: int = 10) -> float:
    """PSI on `bins` equal-frequency bins of the reference (open-ended outer bins)."""
    edges = np.unique(_sorted_quantiles(ref, np.linspace(0, 1, bins + 1)[1:-1]))
    # both samples are sorted: each bin's count is a difference of two binary searches
    ref_counts = np.diff(
        np.concatenate([[0], np.searchsorted(ref, edges, side="left"), [len(ref)]])
    )
    cur_counts = np.diff(
        np.concatenate([[0], np.searchsorted(cur, edges, side="left"), [len(cur)]])
    )
    return psi(ref_counts, cur_counts)


def _fill_zeroes(shares: np.ndarray) -> np.ndarray:
    """Empty bins as Evidently fills them: a millionth of the smallest share, or 1e-4."""
    present = shares[shares != 0]
    if not len(present):
        return np.full_like(shares, PSI_EPSILON)
    fill = present.min() / 10**6 if present.min() <= PSI_EPSILON else PSI_EPSILON
    return np.where(shares == 0, fill, shares)


def _sturges_psi(ref: np.ndarray, cur: np.ndarray) -> float:
    """PSI on Sturges bins over both samples together (Evidently's `psi`)."""
    edges = np.histogram_bin_edges(np.concatenate([ref, cur]), bins="sturges")
    return psi(np.histogram(ref, edges)[0], np.histogram(cur, edges)[0])


def _ks_and_wasserstein(ref: np.ndarray, cur: np.ndarray) -> tuple[float, float, float]:
    """KS statistic and p-value (as scipy's `ks_2samp`, method 'auto') and Wasserstein-1.

    Both empirical CDFs are read off one merge of the two sorted samples: a stable argsort of
    two sorted runs is a linear-time merge, the running count of reference rows gives F_ref at
    every position, and the last position of each run of tied values is where both CDFs are
    evaluated (scipy's `searchsorted(..., side="right")`).
    """
    n1, n2 = len(ref), len(cur)
    # memory matters at millions of rows: every step reuses or frees what the last one made
    merged = np.concatenate([ref, cur])
    order = np.argsort(merged, kind="stable")
    merged = merged[order]
    from_ref = order < n1
    del order
    diffs = np.cumsum(from_ref, dtype=np.float64)  # reference rows up to each position
    del from_ref
    diffs *= 1 / n1 + 1 / n2
    steps = np.arange(1, n1 + n2 + 1, dtype=np.float64)
    steps /= n2
    diffs -= steps  # F_ref - F_cur at every position
    del steps
    deltas = np.diff(merged)
    del merged
    # inside a run of ties the step is zero, so Wasserstein needs no special care; the KS
    # statistic is read only where a run ends (where scipy evaluates both CDFs)
    wasserstein = float(np.dot(np.abs(diffs[:-1]), deltas))
    if not deltas.all():
        diffs = diffs[np.append(deltas != 0, True)]
    del deltas
    if max(n1, n2) <= _EXACT_KS_MAX_N:
        with warnings.catch_warnings():  # scipy falls back to the asymptotic p-value itself
            warnings.filterwarnings("ignore", "ks_2samp: Exact calculation", RuntimeWarning)
            result = stats.ks_2samp(ref, cur)
        return float(result.statistic), float(result.pvalue), wasserstein
    d = float(max(np.clip(-diffs.min(), 0, 1), diffs.max()))
    m, n = sorted([float(n1), float(n2)], reverse=True)
    en = np.round(m * n / (m + n))
    # scipy's finite-n distribution, except far in the tail: there the limit distribution is
    # within 1e-12 of it (both are below that; see the module doc), while the finite-n one
    # takes up to seconds at a million rows
    limit = float(stats.kstwobign.sf(d * math.sqrt(en)))
    p = limit if limit < 1e-12 else float(np.clip(stats.kstwo.sf(d, en), 0, 1))
    return d, p, wasserstein


def _sorted_quantiles(values: np.ndarray, q: np.ndarray) -> np.ndarray:
    """`np.quantile(values, q)` (linear method) for already sorted values, without re-sorting."""
    position = q * (len(values) - 1)
    low = np.floor(position).astype(np.int64)
    high = np.minimum(low + 1, len(values) - 1)
    weight = position - low
    return np.asarray(values[low] * (1 - weight) + values[high] * weight, dtype=np.float64)


def numeric_stats(reference: np.ndarray, current: np.ndarray) -> NumericStats:
    """Compare two samples of a numeric column (NaN = missing)."""
    ref, missing_ref = _split(reference)
    cur, missing_cur = _split(current)
    if len(ref) == 0 or len(cur) == 0:
        nan = math.nan
        return NumericStats(
            len(ref) + missing_ref, len(cur) + missing_cur, missing_ref, missing_cur,
            nan, nan, nan, nan, nan, nan, nan, nan, 0, {},
        )  # fmt: skip
    d, p, w = _ks_and_wasserstein(ref, cur)
    out_of_range = int(
        np.searchsorted(cur, ref[0], side="left")
        + len(cur)
        - np.searchsorted(cur, ref[-1], side="right")
    )
    return NumericStats(
        n_ref=len(ref) + missing_ref,
        n_cur=len(cur) + missing_cur,
        missing_ref=missing_ref,
        missing_cur=missing_cur,
        ks_statistic=d,
        ks_p_value=p,
        wasserstein=w,
        ref_std=float(np.std(ref)),  # population sd, as Evidently normalises Wasserstein
        psi=_quantile_psi(ref, cur),
        psi_sturges=_sturges_psi(ref, cur),
        ref_min=float(ref[0]),
        ref_max=float(ref[-1]),
        out_of_range=out_of_range,
        histogram=_histogram(ref, cur),
    )


def _histogram(ref: np.ndarray, cur: np.ndarray, bins: int = 20) -> dict[str, list[float]]:
    """Shares of both sorted samples in `bins` equal-frequency bins of the reference (for charts)."""
    edges = np.unique(_sorted_quantiles(ref, np.linspace(0, 1, bins + 1)))
    if len(edges) < 2:
        edges = np.array([ref[0], ref[0] + 1.0])
    inner = edges[1:-1]
    ref_counts = np.diff(
        np.concatenate([[0], np.searchsorted(ref, inner, side="left"), [len(ref)]])
    )
    cur_counts = np.diff(
        np.concatenate([[0], np.searchsorted(cur, inner, side="left"), [len(cur)]])
    )
    return {
        "edges": [float(e) for e in edges],
        "reference": (ref_counts / len(ref)).tolist(),
        "current": (cur_counts / len(cur)).tolist(),
    }


def categorical_stats(
    reference: Mapping[str, int],
    current: Mapping[str, int],
    missing_ref: int = 0,
    missing_cur: int = 0,
) -> CategoricalStats:
    """Compare the category counts of two samples (missing values counted apart)."""
    keys = sorted(set(reference) | set(current))
    ref = np.array([reference.get(k, 0) for k in keys], dtype=np.float64)
    cur = np.array([current.get(k, 0) for k in keys], dtype=np.float64)
    n_ref, n_cur = float(ref.sum()), float(cur.sum())
    unseen = {
        k: int(current[k]) for k in keys if reference.get(k, 0) == 0 and current.get(k, 0) > 0
    }
    if n_ref == 0 or n_cur == 0:
        nan = math.nan
        return CategoricalStats(int(n_ref) + missing_ref, int(n_cur) + missing_cur, missing_ref, missing_cur,
                                nan, nan, 0, nan, nan, nan, nan, unseen, {})  # fmt: skip
    # homogeneity of the two samples (a 2 x K contingency table): both are samples
    table = np.vstack([ref, cur])
    table = table[:, table.sum(axis=0) > 0]
    if table.shape[1] > 1:
        contingency = stats.chi2_contingency(table, correction=False)
        chi2, chi2_p, dof = (
            float(contingency.statistic),
            float(contingency.pvalue),
            int(contingency.dof),
        )
    else:
        chi2, chi2_p, dof = 0.0, 1.0, 0
    # goodness of fit against the reference shares taken as exact (Evidently's `chisquare`)
    with np.errstate(divide="ignore", invalid="ignore"):
        gof = stats.chisquare(cur, ref / n_ref * n_cur)
    return CategoricalStats(
        n_ref=int(n_ref) + missing_ref,
        n_cur=int(n_cur) + missing_cur,
        missing_ref=missing_ref,
        missing_cur=missing_cur,
        chi2_statistic=chi2,
        chi2_p_value=chi2_p,
        chi2_dof=dof,
        chi2_gof_statistic=float(gof.statistic),
        chi2_gof_p_value=float(gof.pvalue),
        jensen_shannon=float(distance.jensenshannon(ref / n_ref, cur / n_cur)),
        psi=psi(ref, cur),
        unseen=unseen,
        shares=_top_shares(keys, ref / n_ref, cur / n_cur),
    )


def _top_shares(
    keys: list[str], ref: np.ndarray, cur: np.ndarray, top: int = 12
) -> dict[str, list[Any]]:
    """The largest categories on either side with their shares (for charts)."""
    order = np.argsort(-np.maximum(ref, cur))[:top]
    return {
        "categories": [keys[i] for i in order],
        "reference": [float(ref[i]) for i in order],
        "current": [float(cur[i]) for i in order],
    }


def missing_rate_test(
    missing_ref: int, n_ref: int, missing_cur: int, n_cur: int
) -> tuple[float, float]:
    """Two-proportion z-test p-value (two-sided) and Cohen's h for a change in missing rate."""
    if n_ref == 0 or n_cur == 0:
        return 1.0, 0.0
    p1, p2 = missing_ref / n_ref, missing_cur / n_cur
    pooled = (missing_ref + missing_cur) / (n_ref + n_cur)
    se = math.sqrt(pooled * (1 - pooled) * (1 / n_ref + 1 / n_cur))
    h = abs(2 * math.asin(math.sqrt(p2)) - 2 * math.asin(math.sqrt(p1)))
    if se == 0:
        return (1.0 if p1 == p2 else 0.0), h
    z = (p2 - p1) / se
    return float(2 * stats.norm.sf(abs(z))), h


def benjamini_hochberg(p_values: Sequence[float]) -> list[float]:
    """Benjamini-Hochberg adjusted p-values (false discovery rate); NaN stays NaN."""
    p = np.asarray(p_values, dtype=np.float64)
    out = np.full(p.shape, np.nan)
    valid = ~np.isnan(p)
    if not valid.any():
        return [math.nan] * len(out)
    q = p[valid]
    order = np.argsort(q)
    ranked = q[order] * len(q) / np.arange(1, len(q) + 1)
    adjusted = np.minimum.accumulate(ranked[::-1])[::-1]
    result = np.empty_like(q)
    result[order] = np.clip(adjusted, 0, 1)
    out[valid] = result
    return [float(x) for x in out]
