"""Deployments: which versions of a model serve, with what share of traffic and in what role.

    primary   answers the traffic the other live variants do not take
    canary    a small share of traffic, on its way to becoming primary
    ab        a share of traffic kept for a comparison (an A/B test)
    shadow    gets a copy of every request after the answer is sent; never answers

A deployment is a numbered revision per model; a new one never edits an old one, so rolling
back is writing a new revision with the variants of the one before.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal, get_args

from shipyard.core.errors import Conflict, InvalidInput

__all__ = ["ROLES", "Deployment", "Role", "Variant", "plan"]

Role = Literal["primary", "canary", "ab", "shadow"]
ROLES: tuple[Role, ...] = get_args(Role)
LIVE_ROLES = ("primary", "canary", "ab")


@dataclass(frozen=True)
class Variant:
    """One version in a deployment; `weight` is its percent of live traffic (shadows: 0)."""

    version: int
    weight: float
    role: Role

    def to_dict(self) -> dict[str, Any]:
        return {"version": self.version, "weight": self.weight, "role": self.role}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Variant:
        return cls(int(data["version"]), float(data["weight"]), data["role"])


@dataclass(frozen=True)
class Deployment:
    """A revision of a model's traffic split."""

    name: str
    revision: int
    variants: tuple[Variant, ...]
    routing_field: str | None
    previous_revision: int | None
    created_at: datetime | None
    created_by: str
    reason: str

    @property
    def primary(self) -> Variant:
        return next(v for v in self.variants if v.role == "primary")

    @property
    def live(self) -> tuple[Variant, ...]:
        """Variants that answer requests, primary first."""
        return tuple(v for v in self.variants if v.role != "shadow")

    @property
    def shadows(self) -> tuple[Variant, ...]:
        return tuple(v for v in self.variants if v.role == "shadow")

    @property
    def versions(self) -> list[int]:
        return sorted({v.version for v in self.variants})

    @property
    def stopped(self) -> bool:
        """A revision that serves nothing (`shipyard deploy NAME --stop`)."""
        return not self.variants

    def describe(self) -> str:
        """`3 primary 95% + 4 canary 5% + 5 shadow`, or `stopped`."""
        if self.stopped:
            return "stopped"
        parts = [
            f"{v.version} {v.role}" + (f" {v.weight:g}%" if v.role != "shadow" else "")
            for v in self.variants
        ]
        return " + ".join(parts)

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.name,
            "revision": self.revision,
            "variants": [v.to_dict() for v in self.variants],
            "routing_field": self.routing_field,
            "previous_revision": self.previous_revision,
            "created_at": self.created_at.isoformat() if self.created_at else None,
            "created_by": self.created_by,
            "reason": self.reason,
        }


def _percent(value: float, flag: str) -> float:
    if not 0 < value < 100:
        raise InvalidInput(
            f"{flag} takes a percentage between 0 and 100 (exclusive), got {value:g}"
        )
    return float(value)


def plan(
    current: tuple[Variant, ...] | None,
    version: int,
    *,
    canary: float | None = None,
    ab: float | None = None,
    shadow: bool = False,
) -> tuple[Variant, ...]:
    """The variants of the next deployment.

    `version` alone takes all traffic (canaries, A/B arms and shadows end). With `canary` or
    `ab` it takes that percent beside the current primary, replacing any other canary or A/B
    arm; with `shadow` it is added as a shadow. Shadows of other versions are kept.
    """
    modes = [
        m
        for m, on in (
            ("--canary", canary is not None),
            ("--ab", ab is not None),
            ("--shadow", shadow),
        )
        if on
    ]
    if len(modes) > 1:
        raise InvalidInput(f"choose one of {', '.join(modes)}; a version takes one role at a time")
    if not modes:
        return (Variant(version, 100.0, "primary"),)
    if not current:
        raise Conflict(
            f"there is no primary version yet to split traffic with; deploy one first "
            f"(shipyard deploy NAME --version {version})"
        )
    primary = next(v for v in current if v.role == "primary")
    others = tuple(v for v in current if v.role == "shadow" and v.version != version)
    if shadow:
        if primary.version == version:
            raise Conflict(f"version {version} is the primary; a shadow must be another version")
        live = [v for v in current if v.role != "shadow" and v.version != version]
        return (*_rebalanced(live), *others, Variant(version, 0.0, "shadow"))
    role: Role = "canary" if canary is not None else "ab"
    share = _percent(canary if canary is not None else ab, modes[0])  # type: ignore[arg-type]
    if primary.version == version:
        raise Conflict(
            f"version {version} is already the primary; a {role} must be another version "
            f"(to give it all traffic: shipyard deploy NAME --version {version})"
        )
    return (
        Variant(primary.version, 100.0 - share, "primary"),
        Variant(version, share, role),
        *others,
    )


def _rebalanced(live: list[Variant]) -> tuple[Variant, ...]:
    """Give the primary whatever share the other live variants leave."""
    rest = sum(v.weight for v in live if v.role != "primary")
    return tuple(
        Variant(v.version, 100.0 - rest, "primary") if v.role == "primary" else v for v in live
    )
