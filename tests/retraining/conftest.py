"""A fraud model one month into production: four weeks replayed into the log (amounts inflating,
a card-testing pattern growing), its accuracy alert firing at the end of week 4."""

from __future__ import annotations

import io
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import pandas as pd
import pytest
from rich.console import Console

from shipyard.core import Settings
from shipyard.demo import FEATURES, LABEL, replay_month
from shipyard.registry import Registry

END_OF_WEEK4 = datetime(2026, 11, 5, tzinfo=UTC)
ROWS_PER_WEEK = 6000


@dataclass
class Month:
    settings: Settings
    champion: int


@pytest.fixture
def month(settings: Settings, champion: tuple[Any, pd.DataFrame, float]) -> Month:
    settings = settings.model_copy(update={"auth": "off"})
    model, history, threshold = champion
    with Registry.from_settings(settings) as registry:
        version = registry.register(
            model, name="fraud-detector", sample=history[FEATURES].iloc[:2000],
            training_data=history[[*FEATURES, LABEL]], threshold=threshold,
        )  # fmt: skip
        registry.deploy("fraud-detector", version.version)
    replay_month(
        settings,
        "fraud-detector",
        version.version,
        end=END_OF_WEEK4,
        rows_per_week=ROWS_PER_WEEK,
        console=Console(file=io.StringIO()),
    )
    return Month(settings, version.version)
