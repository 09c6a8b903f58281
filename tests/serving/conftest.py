"""A served fraud model: registered, aliased to production, behind the real app in-process."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pandas as pd
import pytest
from fastapi.testclient import TestClient

from shipyard.access import KeyStore
from shipyard.app import create_app
from shipyard.core import Settings
from shipyard.registry import Registry


@pytest.fixture
def served_settings(settings: Settings, fraud_model: Any, fraud_sample: pd.DataFrame) -> Settings:
    """Two versions of fraud-detector; production points at version 1, threshold 0.3."""
    with Registry.from_settings(settings) as registry:
        registry.register(
            fraud_model,
            name="fraud-detector",
            sample=fraud_sample,
            threshold=0.3,
            aliases=["production"],
        )
        registry.register(fraud_model, name="fraud-detector", sample=fraud_sample, threshold=0.6)
    return settings


@pytest.fixture
def served_sqlite(
    sqlite_settings: Settings, fraud_model: Any, fraud_sample: pd.DataFrame
) -> Settings:
    """fraud-detector:1 serving, on SQLite only (for tests about processes, not databases)."""
    with Registry.from_settings(sqlite_settings) as registry:
        registry.register(
            fraud_model, name="fraud-detector", sample=fraud_sample, aliases=["production"]
        )
    return sqlite_settings


def make_key(settings: Settings, scope: str, **options: Any) -> str:
    """A new API key's token."""
    with Registry.from_settings(settings) as registry:
        return KeyStore(registry.database).create(scope, **options)[1]


@pytest.fixture
def admin_token(served_settings: Settings) -> str:
    return make_key(served_settings, "admin", name="tests")


@pytest.fixture
def client(served_settings: Settings, admin_token: str) -> Iterator[TestClient]:
    """The app in-process, called with an admin key."""
    app = create_app(served_settings)
    headers = {"Authorization": f"Bearer {admin_token}"}
    with TestClient(app, raise_server_exceptions=False, headers=headers) as test_client:
        yield test_client
