"""Deployments: traffic splits as numbered revisions, the production alias following the
primary, one-step rollback, and the audit trail."""

from __future__ import annotations

from typing import Any

import pandas as pd
import pytest

from shipyard.core import errors as e
from shipyard.registry import Registry, Variant


@pytest.fixture
def four_versions(registry: Registry, fraud_model: Any, fraud_sample: pd.DataFrame) -> Registry:
    for _ in range(4):
        registry.register(fraud_model, name="fraud-detector", sample=fraud_sample)
    return registry


def _split(registry: Registry) -> list[tuple[int, float, str]]:
    deployment = registry.deployment("fraud-detector")
    assert deployment is not None
    return [(v.version, v.weight, v.role) for v in deployment.variants]


def test_deploying_a_version_gives_it_all_traffic_and_the_production_alias(
    four_versions: Registry,
) -> None:
    registry = four_versions
    first = registry.deploy("fraud-detector", 1, reason="first release")
    assert first.revision == 1
    assert first.previous_revision is None
    assert _split(registry) == [(1, 100.0, "primary")]
    assert registry.resolve("fraud-detector:production").version == 1
    second = registry.deploy("fraud-detector", 2)
    assert (second.revision, second.previous_revision) == (2, 1)
    assert registry.resolve("fraud-detector").version == 2


def test_canary_takes_its_share_beside_the_primary(four_versions: Registry) -> None:
    registry = four_versions
    registry.deploy("fraud-detector", 1)
    registry.deploy("fraud-detector", 3, canary=5, routing_field="customer_id")
    assert _split(registry) == [(1, 95.0, "primary"), (3, 5.0, "canary")]
    deployment = registry.deployment("fraud-detector")
    assert deployment is not None
    assert deployment.routing_field == "customer_id"
    assert deployment.describe() == "1 primary 95% + 3 canary 5%"
    # ramping up replaces the canary's share; the routing field is kept
    registry.deploy("fraud-detector", 3, canary=25)
    assert _split(registry) == [(1, 75.0, "primary"), (3, 25.0, "canary")]
    ramped = registry.deployment("fraud-detector")
    assert ramped is not None
    assert ramped.routing_field == "customer_id"
    # the production alias stays on the primary while a canary runs
    assert registry.resolve("fraud-detector").version == 1


def test_ab_and_shadow_variants(four_versions: Registry) -> None:
    registry = four_versions
    registry.deploy("fraud-detector", 1)
    registry.deploy("fraud-detector", 2, ab=50)
    registry.deploy("fraud-detector", 4, shadow=True)
    assert _split(registry) == [(1, 50.0, "primary"), (2, 50.0, "ab"), (4, 0.0, "shadow")]
    deployment = registry.deployment("fraud-detector")
    assert deployment is not None
    assert [v.version for v in deployment.live] == [1, 2]
    assert [v.version for v in deployment.shadows] == [4]
    # a new canary replaces the A/B arm and keeps the shadow
    registry.deploy("fraud-detector", 3, canary=10)
    assert _split(registry) == [(1, 90.0, "primary"), (3, 10.0, "canary"), (4, 0.0, "shadow")]
    # moving the canary's version to shadow gives its share back to the primary
    registry.deploy("fraud-detector", 3, shadow=True)
    assert _split(registry) == [(1, 100.0, "primary"), (4, 0.0, "shadow"), (3, 0.0, "shadow")]
    # a full deploy ends every experiment
    registry.deploy("fraud-detector", 2)
    assert _split(registry) == [(2, 100.0, "primary")]


def test_a_model_that_only_has_a_production_alias_can_take_a_canary(
    four_versions: Registry,
) -> None:
    registry = four_versions
    registry.set_alias("fraud-detector", 2, "production")
    registry.deploy("fraud-detector", 3, canary=5)
    assert _split(registry) == [(2, 95.0, "primary"), (3, 5.0, "canary")]


def test_rollback_returns_one_step_at_a_time(four_versions: Registry) -> None:
    registry = four_versions
    registry.deploy("fraud-detector", 1)
    registry.deploy("fraud-detector", 2, canary=5)
    registry.deploy("fraud-detector", 2)
    back = registry.rollback("fraud-detector", reason="error spike")
    assert back.revision == 4
    assert _split(registry) == [(1, 95.0, "primary"), (2, 5.0, "canary")]
    assert registry.resolve("fraud-detector").version == 1
    registry.rollback("fraud-detector")
    assert _split(registry) == [(1, 100.0, "primary")]
    with pytest.raises(e.Conflict, match="no earlier deployment"):
        registry.rollback("fraud-detector")
    history = registry.deployment_history("fraud-detector")
    assert [d.revision for d in history] == [5, 4, 3, 2, 1]
    assert history[1].reason == "error spike"


def test_every_deployment_is_audited_with_before_and_after(four_versions: Registry) -> None:
    registry = four_versions
    registry.deploy("fraud-detector", 1)
    registry.deploy("fraud-detector", 2, canary=5, reason="try v2")
    registry.rollback("fraud-detector")
    events = [ev for ev in registry.history("fraud-detector") if ev.action.startswith("deployment")]
    assert [ev.action for ev in events] == [
        "deployment.rolled_back",
        "deployment.created",
        "deployment.created",
    ]
    created = events[1]
    assert created.details["from"] == "1 primary 100%"
    assert created.details["to"] == "1 primary 95% + 2 canary 5%"
    assert created.details["reason"] == "try v2"
    assert created.actor == "tester"
    moves = [ev for ev in registry.history("fraud-detector") if ev.action == "alias.moved"]
    assert [ev.details["to"] for ev in moves] == [1]  # the canary did not move production


@pytest.mark.parametrize(
    ("call", "error", "fragment"),
    [
        (lambda r: r.deploy("fraud-detector", 2, canary=5), e.Conflict, "no primary version yet"),
        (
            lambda r: r.deploy("fraud-detector", 9),
            e.VersionNotFound,
            "no version 9; versions are 1-4",
        ),
        (lambda r: r.deploy("nope", 1), e.ModelNotFound, "no model named 'nope'"),
        (lambda r: r.rollback("fraud-detector"), e.Conflict, "no earlier deployment"),
    ],
)
def test_impossible_deployments_before_any_release_say_why(
    four_versions: Registry, call: Any, error: type[Exception], fragment: str
) -> None:
    with pytest.raises(error, match=fragment):
        call(four_versions)


@pytest.mark.parametrize(
    ("options", "fragment"),
    [
        ({"canary": 0}, "between 0 and 100"),
        ({"canary": 100}, "between 0 and 100"),
        ({"ab": -5}, "between 0 and 100"),
        ({"canary": 5, "shadow": True}, "choose one of --canary, --shadow"),
    ],
)
def test_bad_splits_are_refused(
    four_versions: Registry, options: dict[str, Any], fragment: str
) -> None:
    four_versions.deploy("fraud-detector", 1)
    with pytest.raises(e.InvalidInput, match=fragment):
        four_versions.deploy("fraud-detector", 2, **options)


def test_the_primary_cannot_also_be_its_own_canary_or_shadow(four_versions: Registry) -> None:
    four_versions.deploy("fraud-detector", 1)
    with pytest.raises(e.Conflict, match="already the primary"):
        four_versions.deploy("fraud-detector", 1, canary=5)
    with pytest.raises(e.Conflict, match="is the primary"):
        four_versions.deploy("fraud-detector", 1, shadow=True)


def test_deployed_versions_cannot_be_archived_and_archived_ones_cannot_deploy(
    four_versions: Registry,
) -> None:
    registry = four_versions
    registry.deploy("fraud-detector", 1)
    registry.deploy("fraud-detector", 2, shadow=True)
    with pytest.raises(e.Conflict, match="serves in deployment revision 2"):
        registry.archive("fraud-detector", 2)
    registry.archive("fraud-detector", 4)
    with pytest.raises(e.VersionArchived):
        registry.deploy("fraud-detector", 4, canary=5)


def test_serving_plan_covers_deployed_and_alias_only_models(
    four_versions: Registry, fraud_model: Any, fraud_sample: pd.DataFrame
) -> None:
    registry = four_versions
    registry.deploy("fraud-detector", 1)
    registry.deploy("fraud-detector", 3, canary=5)
    registry.register(fraud_model, name="churn", sample=fraud_sample, aliases=["production"])
    registry.register(fraud_model, name="unreleased", sample=fraud_sample)
    plans = registry.serving_plan()
    assert set(plans) == {"fraud-detector", "churn"}
    assert plans["fraud-detector"].revision == 2
    assert plans["churn"].variants == (Variant(1, 100.0, "primary"),)
    assert plans["churn"].revision == 0
