"""Federated training: sites train one model together (a logistic regression or a PyTorch
network) on Flower without their rows leaving them; the server registers the result as a version like any other (served, monitored,
retrained), with its lineage: the sites, rounds, strategy, privacy settings and per-site
scores.

    serve("0.0.0.0:9092", Settings(rounds=10, min_sites=3))   -> Result  (blocks for the run)
    start_site(Site(frame, label="is_fraud", name="hospital-a"), "server:9092")
    simulate([Site(...), ...], Settings(rounds=10, min_sites=10))  -> Result  (Flower's
                                                             simulation engine, one process)
    register(registry, "fraud-detector", result)            -> ModelVersion
"""

from __future__ import annotations

from typing import Any

from shipyard.federated._champion import Champion, champion_parameters
from shipyard.federated._flower import Privacy, Result, Settings, serve, simulate
from shipyard.federated._privacy import clip_and_noise, epsilon
from shipyard.federated._site import Site, start_site
from shipyard.federated._transport import read_key, server_certificates, trusted_certificates
from shipyard.registry import ModelVersion, Registry

__all__ = [
    "Champion",
    "Privacy",
    "Result",
    "Settings",
    "Site",
    "champion_parameters",
    "clip_and_noise",
    "epsilon",
    "read_key",
    "register",
    "serve",
    "server_certificates",
    "simulate",
    "start_site",
    "trusted_certificates",
]


def register(registry: Registry, name: str, result: Result, **options: Any) -> ModelVersion:
    """Register the run's global model as the next version of `name`: its signature is the
    sites' feature columns (no row of theirs is at the server, so the version has no reference
    sample: monitoring compares its inputs with its first answers), its metrics the last round's scores on the
    sites' holdouts, its lineage the run."""
    final = result.final
    metrics = {k: final[k] for k in ("accuracy", "auc", "loss") if final.get(k) is not None}
    if result.epsilon is not None:
        metrics["dp_epsilon"] = result.epsilon
    signature = {"columns": [{"name": f, "type": "float64"} for f in result.features]}
    return registry.register(
        result.estimator(),
        name=name,
        signature=signature,
        metrics=metrics,
        params={
            "model": result.settings.model,
            "strategy": result.settings.strategy,
            "rounds": result.settings.rounds,
            "sites": len(result.sites),
            "secure_aggregation": result.settings.secure,
        },
        lineage=result.lineage(),
        **options,
    )
