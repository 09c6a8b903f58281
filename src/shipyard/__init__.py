"""shipyard: take a trained model from the lab to production and keep it healthy there.

import shipyard
version = shipyard.register(model, name="fraud-detector", sample=X_train, metrics={"auc": 0.94})
"""

from __future__ import annotations

from typing import Any

from shipyard.client import AsyncClient, Client
from shipyard.core import Settings, Signature, errors
from shipyard.core.version import __version__
from shipyard.registry import ModelVersion, Registry

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
