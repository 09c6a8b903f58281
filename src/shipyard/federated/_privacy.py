"""Differential privacy at each site: its update (new weights less the global ones) is clipped
to an L2 norm and Gaussian noise is added before it leaves, so what the server sees of a site
is private whatever the server does (site-level DP: the whole site's data is what is
protected). The privacy spent over the rounds is accounted with Rényi DP for the Gaussian
mechanism, converted to (epsilon, delta).
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["clip_and_noise", "epsilon"]

_ORDERS = np.concatenate([np.linspace(1.01, 10, 500), np.linspace(10, 1024, 2000)])


def clip_and_noise(
    update: list[np.ndarray], clip: float, noise: float, rng: np.random.Generator
) -> tuple[list[np.ndarray], float]:
    """The update scaled down to L2 norm at most `clip`, then N(0, (noise * clip)^2) added to
    every coordinate; also the norm before clipping."""
    norm = math.sqrt(sum(float(np.sum(u**2)) for u in update))
    factor = min(1.0, clip / norm) if norm > 0 else 1.0
    noisy = [u * factor + rng.normal(0.0, noise * clip, size=u.shape) for u in update]
    return noisy, norm


def epsilon(noise: float, rounds: int, delta: float) -> float:
    """Epsilon of `rounds` Gaussian mechanisms with noise multiplier `noise` at `delta`: each
    round costs alpha / (2 noise^2) of Rényi DP of order alpha; the best order converts the
    total to (epsilon, delta) by epsilon = RDP + log(1 / delta) / (alpha - 1)."""
    if noise <= 0:
        return math.inf
    rdp = rounds * _ORDERS / (2 * noise**2)
    return float(np.min(rdp + math.log(1 / delta) / (_ORDERS - 1)))
