"""Group-sequential boundaries: Lan-DeMets O'Brien-Fleming-type alpha spending, with exact
boundaries for the looks actually taken.

A one-sided test at level alpha spends its error rate as information accrues:

    alpha(tau) = 2 - 2 * Phi(z_{1 - alpha/2} / sqrt(tau)),    alpha(1) = alpha

(`tau` the information fraction, `Phi` the standard normal CDF; gsDesign's `sfLDOF` with
alpha the one-sided level). Almost nothing is spent early and nearly all of it at the end,
like O'Brien and Fleming's boundary, but for any number and timing of looks.

Look k, at information I_k, gets the boundary c_k that spends exactly what is due:

    P0(Z_1 < c_1, ..., Z_{k-1} < c_{k-1}, Z_k >= c_k) = alpha(tau_k) - alpha(tau_{k-1})

Under the null hypothesis the statistics are a Brownian motion read at the looks,
B(s) = Z * sqrt(s) with s = I / I_ref, whose increments are independent N(0, s_k - s_{k-1});
the probability is the Armitage-McPherson-Rowe recursion: the density of B on the region
that has not crossed is carried from look to look by a Gaussian convolution on a grid
(spacing 0.02 over [-12, 12], midpoint rule with the boundary's cell cut at the boundary)
and c_k found by a safeguarded Newton iteration. Only the previous looks' (s_i, c_i) are
needed, and the boundaries are the ones those looks used, so nothing is recomputed into a
different past. Each step must add at least `MIN_STEP` of the reference information (the
grid's resolution); the recursion's states are cached, so a look after a cached one costs a
single convolution.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence

import numpy as np
from scipy import signal, special

__all__ = ["MIN_STEP", "NEVER", "boundary", "spent"]

MIN_STEP = 0.002
"""The least information a look may add, as a share of the reference information: the
convolution kernel then spans at least 2.2 grid steps (its standard deviation 0.045), where
the grid's boundaries agree with one four times finer to 0.002 in z."""
NEVER = 40.0
"""The boundary of a look that spends nothing: no statistic reaches it."""

_H = 0.02
_HALF = 600  # grid points each side of 0: [-12, 12]
_GRID = (np.arange(2 * _HALF + 1) - _HALF) * _H
_ROOT_2PI = math.sqrt(2 * math.pi)


def spent(alpha: float, fraction: float) -> float:
    """Error rate spent once the information fraction reaches `fraction` (capped at 1)."""
    if fraction <= 0:
        return 0.0
    z = -float(special.ndtri(alpha / 2))
    return float(2 * special.ndtr(-z / math.sqrt(min(fraction, 1.0))))


def boundary(increment: float, looks: Sequence[tuple[float, float]], information: float) -> float:
    """The z the statistic must reach at a look at `information` (in units of the reference)
    to spend `increment` more, after `looks` ((information, boundary) each, in order)."""
    if increment <= 1e-14:
        return NEVER
    if not looks:
        return min(-float(special.ndtri(increment)), NEVER)
    previous = looks[-1][0]
    if information - previous < MIN_STEP * (1 - 1e-9):
        raise ValueError(f"a look must add at least {MIN_STEP:.1%} of the reference information")
    mass = _state(tuple((float(s), float(c)) for s, c in looks))
    sd = math.sqrt(information - previous)
    keep = mass > mass.max() * 1e-18
    last = looks[-1][1] * math.sqrt(previous) if looks[-1][1] < NEVER else None
    if last is not None:
        # the boundary moves little from look to look: mass far below it cannot cross
        near = keep & (last - 15 * sd < _GRID)
        b = _solve(np.log(mass[near]), _GRID[near], sd, math.log(increment), last)
        if b > last - 6 * sd:
            return min(b / math.sqrt(information), NEVER)
    b = _solve(np.log(mass[keep]), _GRID[keep], sd, math.log(increment), None)
    return min(b / math.sqrt(information), NEVER)


@functools.lru_cache(maxsize=256)
def _state(looks: tuple[tuple[float, float], ...]) -> np.ndarray:
    """Probability mass of B at each grid point after `looks`, on paths that crossed none."""
    if not looks:
        start = np.zeros_like(_GRID)
        start[_HALF] = 1.0
        return start
    before = _state(looks[:-1])
    information, z = looks[-1]
    sd = math.sqrt(information - (looks[-2][0] if len(looks) > 1 else 0.0))
    reach = min(math.ceil(9 * sd / _H), 2 * _HALF)
    kernel = np.exp(-0.5 * (np.arange(-reach, reach + 1) * (_H / sd)) ** 2) * (_H / sd / _ROOT_2PI)
    # only where there is mass (paths below -12 or above the last boundary carry none)
    held = np.flatnonzero(before > before.max() * 1e-18)
    first, last = int(held[0]), int(held[-1]) + 1
    spread = np.asarray(signal.convolve(before[first:last], kernel, mode="full"))
    mass = np.zeros_like(_GRID)
    low, high = max(first - reach, 0), min(last + reach, _GRID.size)
    mass[low:high] = spread[low - (first - reach) : high - (first - reach)]
    # the cell around each point is kept below the boundary: a partial cell keeps its share
    edge = z * math.sqrt(information)
    kept: np.ndarray = np.clip(mass, 0.0, None) * np.clip((edge - _GRID) / _H + 0.5, 0.0, 1.0)
    kept.flags.writeable = False
    return kept


def _solve(
    log_mass: np.ndarray, points: np.ndarray, sd: float, target: float, start: float | None
) -> float:
    """The b where log sum(mass * P(N(point, sd^2) >= b)) equals `target` (it falls in b),
    by Newton's method kept inside a shrinking bracket, from `start` when given."""

    def excess(b: float) -> tuple[float, float]:
        z = (points - b) / sd
        log_tail = log_mass + special.log_ndtr(z)
        top = float(log_tail.max())
        total = float(np.exp(log_tail - top).sum())
        density = float(np.exp(log_mass - 0.5 * z * z - top).sum()) / (sd * _ROOT_2PI)
        return top + math.log(total) - target, -density / total

    low, high = float(points[0]) - 10 * sd, float(points[-1]) + 40 * sd
    if start is None:
        start = float(points[np.argmax(log_mass)]) - sd * float(special.ndtri(math.exp(target)))
    b = min(max(start, low), high)
    for _ in range(100):
        value, slope = excess(b)
        if abs(value) < 1e-9:
            break
        if value > 0:
            low = b
        else:
            high = b
        step = b - value / slope if slope < 0 else math.nan
        b = step if low < step < high else (low + high) / 2
        if high - low < 1e-12:
            break
    return b
