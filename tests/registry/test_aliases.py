"""Aliases, archiving, look-ups and the audit trail."""

from __future__ import annotations

from typing import Any

import pandas as pd
import pytest

from shipyard.core import errors as e
from shipyard.registry import Registry


@pytest.fixture
def three_versions(registry: Registry, fraud_model: Any, fraud_sample: pd.DataFrame) -> Registry:
    for _ in range(3):
        registry.register(fraud_model, name="fraud-detector", sample=fraud_sample)
    return registry


def test_alias_moves_atomically_and_reports_where_it_was(three_versions: Registry) -> None:
    registry = three_versions
    first = registry.set_alias("fraud-detector", 1, "production")
    assert (first.version, first.previous) == (1, None)
    moved = registry.set_alias("fraud-detector", 3, "production")
    assert (moved.version, moved.previous) == (3, 1)
    assert registry.resolve("fraud-detector:production").version == 3
    assert registry.resolve("fraud-detector").version == 3  # bare name means production
    assert registry.get_version("fraud-detector", 3).aliases == ("production",)
    assert registry.get_version("fraud-detector", 1).aliases == ()
    assert registry.get_model("fraud-detector").aliases == {"production": 3}


def test_every_alias_move_is_in_the_audit_trail(three_versions: Registry) -> None:
    registry = three_versions
    registry.set_alias("fraud-detector", 1, "champion")
    registry.set_alias("fraud-detector", 2, "champion")
    registry.remove_alias("fraud-detector", "champion")
    events = registry.history("fraud-detector")
    moves = [
        (ev.action, ev.details.get("from"), ev.details.get("to"))
        for ev in events
        if ev.action.startswith("alias")
    ]
    assert moves == [("alias.removed", 2, None), ("alias.moved", 1, 2), ("alias.moved", None, 1)]
    assert all(ev.actor == "tester" for ev in events)
    registered = [ev.version for ev in events if ev.action == "version.registered"]
    assert registered == [3, 2, 1]
    assert events[0].at >= events[-1].at


def test_many_aliases_per_version_and_any_name(three_versions: Registry) -> None:
    registry = three_versions
    for alias in ("production", "champion", "shadow_2026"):
        registry.set_alias("fraud-detector", 2, alias)
    assert registry.get_version("fraud-detector", 2).aliases == (
        "champion",
        "production",
        "shadow_2026",
    )


def test_alias_on_a_missing_version_names_the_versions_there_are(three_versions: Registry) -> None:
    with pytest.raises(
        e.VersionNotFound,
        match=r"no version 7; versions are 1-3 \(shipyard models show fraud-detector\)",
    ):
        three_versions.set_alias("fraud-detector", 7, "production")


def test_unknown_model_says_which_models_exist(three_versions: Registry) -> None:
    with pytest.raises(e.ModelNotFound, match="registered models: fraud-detector"):
        three_versions.get_model("fraud")


def test_missing_alias_says_how_to_set_it(three_versions: Registry) -> None:
    with pytest.raises(
        e.AliasNotFound, match="shipyard models alias fraud-detector VERSION staging"
    ):
        three_versions.resolve("fraud-detector:staging")


def test_archived_versions_stay_on_record_but_do_not_serve(three_versions: Registry) -> None:
    registry = three_versions
    archived = registry.archive("fraud-detector", 1)
    assert archived.status == "archived"
    assert [v.status for v in registry.list_versions("fraud-detector")] == [
        "archived",
        "ready",
        "ready",
    ]
    with pytest.raises(e.VersionArchived, match="archived"):
        registry.open("fraud-detector", 1)
    with pytest.raises(e.VersionArchived):
        registry.set_alias("fraud-detector", 1, "production")
    assert any(ev.action == "version.archived" for ev in registry.history("fraud-detector"))


def test_a_version_behind_an_alias_cannot_be_archived(three_versions: Registry) -> None:
    three_versions.set_alias("fraud-detector", 2, "production")
    with pytest.raises(e.Conflict, match="move the alias first"):
        three_versions.archive("fraud-detector", 2)


def test_registering_with_aliases_points_them_at_the_new_version(
    registry: Registry, fraud_model: Any, fraud_sample: pd.DataFrame
) -> None:
    registry.register(
        fraud_model, name="fraud-detector", sample=fraud_sample, aliases=["production"]
    )
    second = registry.register(
        fraud_model, name="fraud-detector", sample=fraud_sample, aliases=["production", "champion"]
    )
    assert second.aliases == ("champion", "production")
    assert registry.resolve("fraud-detector").version == 2
