"""shipyard: take a trained model from the lab to production and keep it healthy there.

import shipyard
version = shipyard.register(model, name="fraud-detector", sample=X_train, metrics={"auc": 0.94})
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from shipyard.client import AsyncClient, Client
from shipyard.core import Settings, Signature, errors
from shipyard.core.version import __version__
from shipyard.registry import ModelVersion, Registry
from shipyard.tracking import Run, Tracker

__all__ = [
    "AsyncClient",
    "Client",
    "ModelVersion",
    "Registry",
    "Settings",
    "Signature",
    "__version__",
    "errors",
    "register",
    "start_run",
]


def register(
    model: Any, *, name: str, settings: Settings | None = None, **fields: Any
) -> ModelVersion:
    """Register `model` as the next version of `name` in the registry `settings` point at.

    Takes the keyword arguments of `Registry.register` (`sample`, `metrics`, `params`, `tags`,
    `description`, `purpose`, `features`, `training_data`, `threshold`, `signature`,
    `aliases`). Settings default to the `SHIPYARD_*` environment.
    """
    with Registry.from_settings(settings or Settings()) as registry:
        return registry.register(model, name=name, **fields)


@contextmanager
def start_run(
    experiment: str = "default", *, settings: Settings | None = None, **options: Any
) -> Iterator[Run]:
    """Open a tracking run: log params, metrics, data sets and artifacts to it; a
    `shipyard.register(...)` inside the block links the new version to the run.

    Takes the keyword arguments of `Tracker.start_run` (`name`, `params`, `tags`, `entrypoint`).
    """
    registry = Registry.from_settings(settings or Settings())
    try:
        tracker = Tracker(registry.database, registry.artifacts, actor=registry.actor)
        with tracker.start_run(experiment, **options) as run:
            yield run
    finally:
        registry.close()
