"""Federated training on Flower: a server that never receives rows, and sites that train on
their own.

    round 1        each site sends its row count and each feature's sum and sum of squares;
                   the server pools them into one standardiser, sent with the model
    rounds 2..R+1  each site trains `steps` iterations (L-BFGS for the logistic regression,
                   Adam for a PyTorch network) from the global model on its own rows (FedProx:
                   with a proximal term), optionally clips its update and adds
                   Gaussian noise, and sends the weights; the server averages them weighted by
                   row counts (FedAvg / FedProx); every site then scores the new global model on
                   its own holdout, and the server averages those scores the same way

Flower's legacy gRPC transport (`flwr.server.start_server`, `flwr.client.start_client`) carries
it, server and sites as separate processes.
"""

from __future__ import annotations

import json
import logging
import math
import threading
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from shipyard.core.errors import InvalidInput, MissingDependency, ServiceUnavailable
from shipyard.federated._model import family, scores, standardiser, statistics
from shipyard.federated._privacy import clip_and_noise, epsilon

__all__ = ["Privacy", "Result", "Settings", "Site", "serve", "start_site"]

log = logging.getLogger("shipyard.federated")


def _flwr() -> Any:
    try:
        import flwr
    except ImportError:
        raise MissingDependency(
            "federated training runs on Flower; install it with: pip install 'shipyard[federated]'"
        ) from None
    return flwr


@dataclass(frozen=True)
class Privacy:
    """Client-side differential privacy: each site's update clipped to L2 norm `clip`, then
    Gaussian noise of standard deviation `noise * clip` added; `delta` for the epsilon."""

    clip: float
    noise: float
    delta: float = 1e-5


@dataclass(frozen=True)
class Settings:
    rounds: int = 10
    min_sites: int = 3
    strategy: str = "fedavg"  # or fedprox
    model: str = "logistic"  # or mlp:64,32 (PyTorch)
    seed: int = 0  # the network's starting weights
    mu: float = 0.1  # FedProx's proximal term
    steps: int = 20  # local L-BFGS iterations per round
    alpha: float = 1e-3  # L2 penalty
    privacy: Privacy | None = None
    wait_seconds: float = 300.0  # for the sites to connect
    round_timeout: float = 600.0


@dataclass
class Result:
    """What a federated run produced: the model (standardiser and weights), what each round
    scored on the sites' holdouts (weighted by their rows), what each site reported (counts
    and scores, never rows), and the privacy spent."""

    features: list[str]
    classes: list[Any]
    mean: np.ndarray
    scale: np.ndarray
    weights: list[np.ndarray]
    rounds: list[dict[str, Any]] = field(default_factory=list)
    sites: dict[str, dict[str, Any]] = field(default_factory=dict)
    settings: Settings = field(default_factory=Settings)
    epsilon: float | None = None

    @property
    def final(self) -> dict[str, Any]:
        return self.rounds[-1] if self.rounds else {}

    def lineage(self) -> dict[str, Any]:
        settings = asdict(self.settings)
        settings.pop("wait_seconds")
        settings.pop("round_timeout")
        return {
            "federated": {
                "sites": self.sites,
                "rounds": self.rounds,
                "settings": settings,
                "epsilon": self.epsilon,
                "data": "the sites kept their rows; they sent row counts, per-feature sums "
                "and sums of squares once (to standardise), then model weights",
            }
        }

    def estimator(self) -> Any:
        """The global model, ready to register and serve: a scikit-learn pipeline (standardiser,
        logistic regression), or a `TorchModel` with the standardisation in its first layer."""
        rows = sum(int(s["train_rows"]) for s in self.sites.values())
        return family(self.settings.model).estimator(
            self.features, self.classes, self.mean, self.scale, self.weights, rows
        )


# -- a site ------------------------------------------------------------------------------------


class Site:
    """A site's data and what it does with the rounds' instructions. `frame`: its rows, the
    label column and numeric features; a seeded `holdout` share is kept out of training and
    scores each round's global model."""

    def __init__(
        self, frame: Any, label: str, name: str, *, holdout: float = 0.2, seed: int = 0
    ) -> None:
        if label not in frame.columns:
            raise InvalidInput(
                f"the data has no label column {label!r}; its columns: "
                f"{', '.join(map(str, frame.columns[:20]))}"
            )
        features = [c for c in frame.columns if c != label]
        import pandas as pd

        text = [c for c in features if not pd.api.types.is_numeric_dtype(frame[c].dtype)]
        if text:
            raise InvalidInput(
                f"federated training takes numeric features; {', '.join(text[:5])} "
                "are not: encode them as numbers at every site the same way"
            )
        if frame[features].isna().to_numpy().any():
            raise InvalidInput("the data has missing values; fill them before training")
        if not 0 < holdout < 1:
            raise InvalidInput(f"the holdout share must be between 0 and 1, got {holdout}")
        self.name = name
        self.features = [str(c) for c in features]
        rng = np.random.default_rng(seed)
        order = rng.permutation(len(frame))
        cut = round(len(frame) * (1 - holdout))
        X = frame[features].to_numpy(dtype=np.float64)
        labels = frame[label].to_numpy()
        self.X, self.X_holdout = X[order[:cut]], X[order[cut:]]
        self.labels, self.labels_holdout = labels[order[:cut]], labels[order[cut:]]
        self.rng = np.random.default_rng(seed + 1)
        if len(self.X) == 0 or len(self.X_holdout) == 0:
            raise InvalidInput(f"{len(frame)} rows are too few to train and hold some out")

    def _y(self, labels: np.ndarray, classes: list[Any]) -> np.ndarray:
        return np.asarray([str(v) == str(classes[1]) for v in labels], dtype=np.float64)

    def fit(
        self, parameters: list[np.ndarray], config: dict[str, Any]
    ) -> tuple[list[np.ndarray], int, dict[str, Any]]:
        if config["stage"] == "statistics":
            labels = sorted({str(v) for v in self.labels} | {str(v) for v in self.labels_holdout})
            described = {
                "site": self.name,
                "features": json.dumps(self.features),
                "labels": json.dumps(labels),
                "holdout_rows": len(self.X_holdout),
            }
            return statistics(self.X), len(self.X), described
        mean, scale, *weights = parameters
        classes = json.loads(str(config["classes"]))
        model = family(str(config["model"]))
        Z = (self.X - mean) / scale
        trained = model.fit(
            Z, self._y(self.labels, classes), weights, alpha=float(config["alpha"]),
            mu=float(config.get("proximal_mu", 0.0)), steps=int(config["steps"]),
            seed=int(config["seed"]),
        )  # fmt: skip
        update = [new - old for new, old in zip(trained, weights, strict=True)]
        norm = math.sqrt(sum(float(np.sum(u**2)) for u in update))
        if float(config.get("dp_noise", 0.0)) > 0:
            update, norm = clip_and_noise(
                update, float(config["dp_clip"]), float(config["dp_noise"]), self.rng
            )
        return (
            [mean, scale, *(old + u for old, u in zip(weights, update, strict=True))],
            len(self.X),
            {"site": self.name, "update_norm": norm},
        )

    def evaluate(
        self, parameters: list[np.ndarray], config: dict[str, Any]
    ) -> tuple[float, int, dict[str, Any]]:
        mean, scale, *weights = parameters
        classes = json.loads(str(config["classes"]))
        margin = family(str(config["model"])).margin((self.X_holdout - mean) / scale, weights)
        found = scores(margin, self._y(self.labels_holdout, classes))
        return float(found.pop("loss")), len(self.X_holdout), {"site": self.name, **found}


def start_site(site: Site, server: str, *, wait_seconds: float = 300.0) -> None:
    """Take part in a run at `server` (HOST:PORT) until it ends."""
    flwr = _flwr()

    class _Client(flwr.client.NumPyClient):  # type: ignore[misc,name-defined]
        def get_parameters(self, config: dict[str, Any]) -> list[np.ndarray]:
            return []

        def fit(self, parameters: list[np.ndarray], config: dict[str, Any]) -> Any:
            return site.fit(parameters, config)

        def evaluate(self, parameters: list[np.ndarray], config: dict[str, Any]) -> Any:
            return site.evaluate(parameters, config)

    try:
        flwr.client.start_client(
            server_address=server, client=_Client().to_client(), insecure=True,
            max_wait_time=wait_seconds,
        )  # fmt: skip
    except Exception as error:  # Flower's gRPC errors: the server went away or never came
        raise ServiceUnavailable(
            f"the federated server at {server} could not be reached or went away "
            f"({type(error).__name__}); check the address and that it runs"
        ) from None


# -- the server --------------------------------------------------------------------------------


class _Run:
    """What the strategy learns as the rounds go."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.features: list[str] | None = None
        self.classes: list[Any] | None = None
        self.mean = self.scale = np.zeros(0)
        self.sites: dict[str, dict[str, Any]] = {}
        self.rounds: list[dict[str, Any]] = []
        self.problem: str | None = None
        self.last: list[np.ndarray] | None = None

    def described(self, reports: list[tuple[list[np.ndarray], int, dict[str, Any]]]) -> None:
        """Round 1: the sites' columns must agree; their labels make two classes."""
        first = json.loads(str(reports[0][2]["features"]))
        labels: set[str] = set()
        for _, rows, metrics in reports:
            features = json.loads(str(metrics["features"]))
            if features != first:
                self.problem = (
                    f"site {metrics['site']} has columns {features[:10]}, others {first[:10]}: "
                    "every site needs the same feature columns in the same order"
                )
                return
            labels |= set(json.loads(str(metrics["labels"])))
            self.sites[str(metrics["site"])] = {
                "train_rows": int(rows),
                "holdout_rows": int(metrics["holdout_rows"]),
            }
        if len(labels) != 2:
            self.problem = (
                f"the sites' labels take {len(labels)} value(s) ({', '.join(sorted(labels)[:10])}); "
                "federated training here fits binary classifiers"
            )
            return
        self.features = first
        self.classes = [_native(v) for v in sorted(labels, key=_label_order)]
        self.mean, self.scale = standardiser([parts for parts, _, _ in reports])


def _label_order(value: str) -> tuple[int, float, str]:
    try:
        return (0, float(value), value)
    except ValueError:
        return (1, 0.0, value)


def _native(value: str) -> Any:
    """A label as sent ("0", "1", "yes") back to a number where it is one."""
    try:
        number = float(value)
    except ValueError:
        return value
    return int(number) if number.is_integer() else number


def _weighted(metrics: list[tuple[int, dict[str, Any]]], key: str) -> float | None:
    pairs = [(n, float(m[key])) for n, m in metrics if key in m]
    total = sum(n for n, _ in pairs)
    return sum(n * v for n, v in pairs) / total if total else None


def _strategy(flwr: Any, run: _Run) -> Any:
    from flwr.common import EvaluateIns, FitIns, ndarrays_to_parameters, parameters_to_ndarrays
    from flwr.server.strategy import FedAvg, FedProx

    settings = run.settings
    base = FedProx if settings.strategy == "fedprox" else FedAvg

    class Strategy(base):  # type: ignore[misc,valid-type]
        def _config(self, server_round: int) -> dict[str, Any]:
            if server_round == 1:
                return {"stage": "statistics"}
            config: dict[str, Any] = {
                "stage": "train",
                "classes": json.dumps([str(c) for c in run.classes or []]),
                "alpha": settings.alpha,
                "steps": settings.steps,
                "model": settings.model,
                "seed": settings.seed * 1000 + server_round,
            }
            if settings.privacy is not None:
                config["dp_clip"] = settings.privacy.clip
                config["dp_noise"] = settings.privacy.noise
            return config

        def configure_fit(self, server_round: int, parameters: Any, client_manager: Any) -> Any:
            if run.problem is not None:
                return []
            pairs = super().configure_fit(server_round, parameters, client_manager)
            extra = self._config(server_round)
            return [(c, FitIns(ins.parameters, {**ins.config, **extra})) for c, ins in pairs]

        def aggregate_fit(self, server_round: int, results: Any, failures: Any) -> Any:
            if failures:
                log.warning("round %d: %d site(s) failed to train", server_round, len(failures))
            if not results:
                return None, {}
            if server_round == 1:
                run.described(
                    [(parameters_to_ndarrays(r.parameters), r.num_examples, r.metrics)
                     for _, r in results]
                )  # fmt: skip
                if run.problem is not None:
                    return None, {}
                width = len(run.features or [])
                rng = np.random.default_rng(settings.seed)
                start = [run.mean, run.scale, *family(settings.model).initial(width, rng)]
                run.last = start
                return ndarrays_to_parameters(start), {}
            aggregated, metrics = super().aggregate_fit(server_round, results, failures)
            if aggregated is not None:
                run.last = parameters_to_ndarrays(aggregated)
            norms = {str(r.metrics["site"]): float(r.metrics["update_norm"]) for _, r in results}
            run.rounds.append({"round": server_round - 1, "update_norms": norms})
            return aggregated, metrics

        def configure_evaluate(
            self, server_round: int, parameters: Any, client_manager: Any
        ) -> Any:
            if server_round == 1 or run.problem is not None:
                return []
            pairs = super().configure_evaluate(server_round, parameters, client_manager)
            classes = {
                "classes": json.dumps([str(c) for c in run.classes or []]),
                "model": settings.model,
            }
            return [(c, EvaluateIns(ins.parameters, {**ins.config, **classes})) for c, ins in pairs]

        def aggregate_evaluate(self, server_round: int, results: Any, failures: Any) -> Any:
            loss, metrics = super().aggregate_evaluate(server_round, results, failures)
            reported = [(r.num_examples, {**r.metrics, "loss": r.loss}) for _, r in results]
            summary = {key: _weighted(reported, key) for key in ("loss", "accuracy", "auc")}
            per_site = {
                str(m["site"]): {k: float(v) for k, v in m.items() if k != "site"}
                for _, m in reported
            }
            if run.rounds and run.rounds[-1]["round"] == server_round - 1:
                run.rounds[-1].update({**summary, "sites": per_site})
            return loss, metrics

    kwargs: dict[str, Any] = {
        "min_fit_clients": settings.min_sites,
        "min_evaluate_clients": settings.min_sites,
        "min_available_clients": settings.min_sites,
        "initial_parameters": ndarrays_to_parameters([np.zeros(1)]),
        "fit_metrics_aggregation_fn": lambda _: {},
        "evaluate_metrics_aggregation_fn": lambda _: {},
    }
    if settings.strategy == "fedprox":
        kwargs["proximal_mu"] = settings.mu
    return Strategy(**kwargs)


def _waiting_manager(flwr: Any, seconds: float) -> Any:
    from flwr.server.client_manager import SimpleClientManager

    class Waiting(SimpleClientManager):
        """Waits for the sites `seconds` at most (Flower's default is a day)."""

        def wait_for(self, num_clients: int, timeout: int = 86400) -> bool:
            return bool(super().wait_for(num_clients, timeout=int(min(timeout, seconds))))

    return Waiting()


def serve(address: str, settings: Settings, *, started: threading.Event | None = None) -> Result:
    """Run a federated training at `address` (HOST:PORT) until its rounds are done; `started`
    is set once it listens."""
    flwr = _flwr()
    if settings.strategy not in ("fedavg", "fedprox"):
        raise InvalidInput(f"strategy must be fedavg or fedprox, got {settings.strategy!r}")
    if settings.rounds < 1 or settings.min_sites < 1:
        raise InvalidInput("rounds and min-sites must be at least 1")
    family(settings.model)  # a model spec that cannot be read is refused before anyone waits
    run = _Run(settings)
    if started is not None:
        started.set()
    flwr.server.start_server(
        server_address=address,
        config=flwr.server.ServerConfig(
            num_rounds=settings.rounds + 1, round_timeout=settings.round_timeout
        ),
        strategy=_strategy(flwr, run),
        client_manager=_waiting_manager(flwr, settings.wait_seconds),
    )
    if run.problem is not None:
        raise InvalidInput(run.problem)
    if run.features is None or run.last is None or len(run.last) < 3:
        raise ServiceUnavailable(
            f"fewer than {settings.min_sites} site(s) took part within {settings.wait_seconds:.0f} s; "
            "start the sites (`shipyard federated site --server ...`) or lower --min-sites"
        )
    trained = [r for r in run.rounds if "accuracy" in r]
    if len(trained) < settings.rounds:
        raise ServiceUnavailable(
            f"only {len(trained)} of {settings.rounds} rounds finished with every site; a site "
            "went away or a round timed out (the server's log says which)"
        )
    mean, scale, *weights = run.last
    spent = None
    if settings.privacy is not None:
        spent = epsilon(settings.privacy.noise, settings.rounds, settings.privacy.delta)
    for name, site in run.sites.items():
        last = trained[-1].get("sites", {}).get(name, {})
        site.update({k: v for k, v in last.items() if k in ("accuracy", "auc", "loss")})
    return Result(
        features=run.features, classes=run.classes or [], mean=mean, scale=scale,
        weights=weights, rounds=trained, sites=run.sites, settings=settings, epsilon=spent,
    )  # fmt: skip
