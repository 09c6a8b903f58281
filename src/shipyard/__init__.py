"""shipyard: take a trained model from the lab to production and keep it healthy there.

    import shipyard
    version = shipyard.register(model, name="fraud-detector", sample=X_train, metrics={"auc": 0.94})

The names below load on first use, so `import shipyard.monitoring` (say) does not pay for the
registry, the client or pandas unless it needs them.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from shipyard.core.version import __version__

if TYPE_CHECKING:
    from shipyard import errors
    from shipyard.client import AsyncClient, Client
    from shipyard.core import Settings, Signature
    from shipyard.optimize import OptimizationReport
    from shipyard.registry import ModelVersion, Registry
    from shipyard.runtime import TorchModel
    from shipyard.tracking import Run

__all__ = [
    "AsyncClient",
    "Client",
    "ModelVersion",
    "Registry",
    "Settings",
    "Signature",
    "TorchModel",
    "__version__",
    "errors",
    "optimize",
    "register",
    "start_run",
]

_LAZY = {
    "AsyncClient": "shipyard.client",
    "Client": "shipyard.client",
    "ModelVersion": "shipyard.registry",
    "Registry": "shipyard.registry",
    "Settings": "shipyard.core",
    "Signature": "shipyard.core",
    "TorchModel": "shipyard.runtime",
}


def __getattr__(name: str) -> Any:
    if name == "errors":
        return importlib.import_module("shipyard.errors")
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'shipyard' has no attribute {name!r}")


def register(
    model: Any, *, name: str, settings: Settings | None = None, **fields: Any
) -> ModelVersion:
    """Register `model` as the next version of `name` in the registry `settings` point at.

    Takes the keyword arguments of `Registry.register` (`sample`, `metrics`, `params`, `tags`,
    `description`, `purpose`, `features`, `training_data`, `threshold`, `signature`,
    `aliases`, `run_id`, `lineage`). Settings default to the `SHIPYARD_*` environment.
    """
    from shipyard.core import Settings
    from shipyard.registry import Registry

    with Registry.from_settings(settings or Settings()) as registry:
        return registry.register(model, name=name, **fields)


def optimize(
    ref: str, *, holdout: Any, settings: Settings | None = None, **options: Any
) -> OptimizationReport:
    """Optimise the registered version `ref` (`name:version` or `name:alias`) into a smaller,
    faster version, registered only if it loses at most `max_loss` on `holdout`.

    Takes the keyword arguments of `Optimizer.run` (`label`, `quantize`, `calibration`,
    `prune`, `distill`, `train`, `data`, `max_loss`, `compare_all`, `register`, `seed`).
    """
    from shipyard.core import Settings
    from shipyard.optimize import Optimizer
    from shipyard.registry import Registry

    with Registry.from_settings(settings or Settings()) as registry:
        return Optimizer(registry).run(ref, holdout=holdout, **options)


@contextmanager
def start_run(
    experiment: str = "default", *, settings: Settings | None = None, **options: Any
) -> Iterator[Run]:
    """Open a tracking run: log params, metrics, data sets and artifacts to it; a
    `shipyard.register(...)` inside the block links the new version to the run.

    Takes the keyword arguments of `Tracker.start_run` (`name`, `params`, `tags`, `entrypoint`).
    """
    from shipyard.core import Settings
    from shipyard.registry import Registry
    from shipyard.tracking import Tracker

    registry = Registry.from_settings(settings or Settings())
    try:
        tracker = Tracker(registry.database, registry.artifacts, actor=registry.actor)
        with tracker.start_run(experiment, **options) as run:
            yield run
    finally:
        registry.close()
