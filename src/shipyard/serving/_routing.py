"""Which variant answers a request: sticky by routing key, weighted random without one.

Each canary or A/B arm, in a fixed order, draws the key's point in [0, 100) from a hash of
(model, the arm's version, key) and takes the key when the point falls under its share of
the traffic the arms before it left:

    arm i takes the key  when  point_i(key) < 100 * weight_i / (100 - sum of weights before i)

and the primary answers every key no arm took (it is not hashed: it is what is left). So:

- the same key always lands on the same variant;
- raising an arm's weight (a canary from 5% to 25%) only raises its bar: every key already
  on it stays, the arm only grows;
- the version salts the hash, so each candidate gets its own slice of customers rather than
  the same few being every candidate's canary.
"""

from __future__ import annotations

import hashlib
import random

from shipyard.registry import Deployment, Variant

__all__ = ["choose", "key_point"]


def key_point(model: str, key: str, version: int | None = None) -> float:
    """Where `key` falls in [0, 100) for `model` (and, salted, for one of its versions):
    independent across models and across versions."""
    salt = "" if version is None else f"\x00{version}"
    digest = hashlib.blake2b(f"{model}{salt}\x00{key}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64 * 100.0


def _arms(deployment: Deployment) -> list[Variant]:
    """The live arms other than the primary, in the order they draw."""
    return sorted(
        (v for v in deployment.live if v.role != "primary"), key=lambda v: (v.role, v.version)
    )


def choose(
    deployment: Deployment, routing_key: str | None, rng: random.Random | None = None
) -> Variant:
    """The live variant that answers; `routing_key` makes the choice sticky."""
    live = deployment.live
    if len(live) == 1:
        return live[0]
    if routing_key is None:
        point = (rng or random).random() * 100.0
        edge = 0.0
        for variant in _arms(deployment):
            edge += variant.weight
            if point < edge:
                return variant
        return deployment.primary
    left = 100.0  # the share of traffic the arms so far did not take
    for variant in _arms(deployment):
        if left <= 0:
            break
        if key_point(deployment.name, routing_key, variant.version) < 100.0 * variant.weight / left:
            return variant
        left -= variant.weight
    return deployment.primary
