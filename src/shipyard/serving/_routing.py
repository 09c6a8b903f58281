"""Which variant answers a request: sticky by routing key, weighted random without one.

A routing key hashes to a point in [0, 100). Canary and A/B arms own the bottom of that range
and the primary the rest, so the same key always lands on the same variant, and raising a
canary from 5% to 25% keeps every key that was already on it (the arm only grows).
"""

from __future__ import annotations

import hashlib
import random

from shipyard.registry import Deployment, Variant

__all__ = ["choose", "key_point"]


def key_point(model: str, key: str) -> float:
    """Where `key` falls in [0, 100) for `model` (independent across models)."""
    digest = hashlib.blake2b(f"{model}\x00{key}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64 * 100.0


def _arms(deployment: Deployment) -> list[Variant]:
    others = sorted(
        (v for v in deployment.live if v.role != "primary"), key=lambda v: (v.role, v.version)
    )
    return [*others, deployment.primary]


def choose(
    deployment: Deployment, routing_key: str | None, rng: random.Random | None = None
) -> Variant:
    """The live variant that answers; `routing_key` makes the choice sticky."""
    live = deployment.live
    if len(live) == 1:
        return live[0]
    point = (
        key_point(deployment.name, routing_key)
        if routing_key is not None
        else (rng or random).random() * 100.0
    )
    edge = 0.0
    for variant in _arms(deployment):
        edge += variant.weight
        if point < edge:
            return variant
    return deployment.primary
