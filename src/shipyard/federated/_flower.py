"""Federated training on Flower: a server that never receives rows, and sites that train on
their own.

    round 1        each site sends its row count and each feature's sum and sum of squares;
                   the server pools them into one standardiser, sent with the model
    rounds 2..R+1  each site trains `steps` iterations (L-BFGS for the logistic regression,
                   Adam for a PyTorch network) from the global model on its own rows (FedProx:
                   with a proximal term), optionally clips its update and adds
                   Gaussian noise, and sends the update; the server averages the updates
                   weighted by row counts (FedAvg / FedProx) into the next global model; every
                   site then scores it on its own holdout, and the server averages those scores
                   the same way

With secure aggregation (Flower's SecAgg+) the server learns only the row-weighted sum of what
the sites send, never one site's. Four rounds then make the standardiser: each feature's binary
order of magnitude (in the clear), the sites' means scaled by it (secure), the order of
magnitude of the distances from the pooled mean (in the clear), and the sites' mean squared
distances scaled by that (secure); the training rounds send the updates (secure).

Flower's gRPC transport (`flwr.server.start_server`, `flwr.client.start_client`) carries it,
server and sites as separate processes; SecAgg+ runs over it as Flower's own workflow and client
mod, each stage's message carried in a round's instructions. `simulate` runs the same server
and sites on Flower's simulation engine, many sites in one process.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import itertools
import json
import logging
import math
import secrets
import threading
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from shipyard.core.errors import (
    Forbidden,
    InvalidInput,
    MissingDependency,
    ServiceUnavailable,
    ShipyardError,
    Unauthenticated,
)
from shipyard.federated._model import (
    family,
    magnitudes,
    scaled_mean,
    scaled_spread,
    scores,
    secure_standardiser,
    standardiser,
    statistics,
)
from shipyard.federated._privacy import clip_and_noise, epsilon

__all__ = [
    "Champion",
    "Privacy",
    "Result",
    "Settings",
    "Site",
    "champion_parameters",
    "proof",
    "serve",
    "simulate",
    "start_site",
]

_SECURE = "shipyard.secagg"  # a SecAgg+ stage's message, serialised, inside a round's instructions
_NODE = "shipyard.node"

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
class Champion:
    """A model the sites score beside the run's last global model, on the same holdout rows:
    its family (`logistic`), the features it takes in order, and `[mean, scale, *weights]`."""

    model: str
    features: list[str]
    parameters: list[np.ndarray]
    classes: list[str] | None = None  # as the champion orders them (its positive class last)


def champion_parameters(estimator: Any, features: list[str]) -> Champion:
    """A registered binary logistic regression (alone or after a `StandardScaler`, as federated
    training registers it) as parameters the sites can score; anything else cannot be scored at
    the sites."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import StandardScaler

    steps = list(estimator.named_steps.values()) if isinstance(estimator, Pipeline) else [estimator]
    width = len(features)
    mean, scale = np.zeros(width), np.ones(width)
    if len(steps) == 2 and isinstance(steps[0], StandardScaler):
        scaler = steps.pop(0)
        mean = np.asarray(scaler.mean_ if scaler.with_mean else mean, dtype=np.float64)
        scale = np.asarray(scaler.scale_ if scaler.with_std else scale, dtype=np.float64)
    model = steps[0] if len(steps) == 1 else None
    named = getattr(estimator, "feature_names_in_", getattr(model, "feature_names_in_", None))
    if named is not None and [str(n) for n in named] != list(features):
        raise InvalidInput(
            "the champion's columns are not in its signature's order; it cannot be scored on "
            "the sites' holdouts"
        )
    if not isinstance(model, LogisticRegression) or np.asarray(model.coef_).shape != (1, width):
        raise InvalidInput(
            f"the champion ({type(estimator).__name__}) cannot be scored on the sites' holdouts: "
            "shipyard scores a binary logistic regression there (what federated training "
            "registers); drop the gates that compare with the champion"
        )
    weights = [
        np.asarray(model.coef_, dtype=np.float64)[0],
        np.asarray(model.intercept_, dtype=np.float64),
    ]
    classes = [str(c) for c in model.classes_]
    return Champion("logistic", list(features), [mean, scale, *weights], classes)


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
    secure: bool = False  # SecAgg+: the server sees only the sum of the sites' updates
    secure_clip: float = 16.0  # SecAgg+ quantises each update coordinate within +-this
    # a model to score beside the last round's on the sites' holdouts (the champion a retrained
    # candidate must beat): its family, features and parameters, as `champion_parameters` gives
    champion: Champion | None = None
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
    transport: dict[str, Any] = field(default_factory=dict)  # TLS, sites authenticated

    @property
    def final(self) -> dict[str, Any]:
        return self.rounds[-1] if self.rounds else {}

    def lineage(self) -> dict[str, Any]:
        settings = asdict(self.settings)
        settings.pop("wait_seconds")
        settings.pop("round_timeout")
        settings.pop("champion")
        return {
            "federated": {
                "sites": self.sites,
                "rounds": self.rounds,
                "settings": settings,
                "epsilon": self.epsilon,
                "transport": self.transport,
                "data": (
                    "the sites kept their rows; under secure aggregation the server learned "
                    "only row counts, orders of magnitude and row-weighted sums (the "
                    "standardiser's mean and spread, then each round's update)"
                    if self.settings.secure
                    else "the sites kept their rows; they sent row counts, per-feature sums "
                    "and sums of squares once (to standardise), then each round's update"
                ),
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
        self, frame: Any, label: str, name: str, *, holdout: float = 0.2, seed: int = 0,
        key: bytes | None = None, require_secure: bool = False,
    ) -> None:  # fmt: skip
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
        self.key = key  # the federation's shared key: the server must prove it holds it
        self.require_secure = require_secure  # answer only under secure aggregation
        self.features = [str(c) for c in features]
        rng = np.random.default_rng(seed)
        order = rng.permutation(len(frame))
        cut = round(len(frame) * (1 - holdout))
        X = frame[features].to_numpy(dtype=np.float64)
        labels = frame[label].to_numpy()
        self.X, self.X_holdout = X[order[:cut]], X[order[cut:]]
        self.labels, self.labels_holdout = labels[order[:cut]], labels[order[cut:]]
        # differential privacy's noise must be unknown to the server: fresh entropy, never a
        # seed the server could know
        self.rng = np.random.default_rng()
        if len(self.X) == 0 or len(self.X_holdout) == 0:
            raise InvalidInput(f"{len(frame)} rows are too few to train and hold some out")

    def _y(self, labels: np.ndarray, classes: list[Any]) -> np.ndarray:
        return np.asarray([str(v) == str(classes[1]) for v in labels], dtype=np.float64)

    def fit(
        self, parameters: list[np.ndarray], config: dict[str, Any], *, masked: bool = False
    ) -> tuple[list[np.ndarray], int, dict[str, Any]]:
        """What the site sends for one round's `config` (`masked`: through SecAgg+)."""
        stage = str(config["stage"])
        clear = ("describe", "deviation")  # orders of magnitude only
        if self.require_secure and (stage == "statistics" or (stage not in clear and not masked)):
            raise Forbidden(
                f"{self.name}: the server asked for {stage} in the clear; this site takes part "
                "only under secure aggregation (--require-secure-aggregation); nothing was sent"
            )
        if config["stage"] in ("statistics", "describe"):
            described = self._described(config)
            if config["stage"] == "describe":  # secure aggregation: magnitudes only, in the clear
                return [magnitudes(self.X)], len(self.X), described
            return statistics(self.X), len(self.X), described
        # secure aggregation's standardiser: the mean, then the spread about it (summed), each
        # scaled by orders of magnitude (in the clear)
        if stage == "mean":
            return scaled_mean(self.X, parameters[0]), len(self.X), {"site": self.name}
        if stage == "deviation":
            return [magnitudes(self.X - parameters[0])], len(self.X), {"site": self.name}
        if stage == "spread":
            spread = scaled_spread(self.X, parameters[0], parameters[1])
            return spread, len(self.X), {"site": self.name}
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
        if config.get("secure") or float(config.get("dp_noise", 0.0)) > 0:
            # an update's norm is this site's alone: under SecAgg+ only sums leave; under DP
            # the norm before clipping would be a value without noise
            return update, len(self.X), {"site": self.name}
        return update, len(self.X), {"site": self.name, "update_norm": norm}

    def _described(self, config: dict[str, Any]) -> dict[str, Any]:
        """What the site says of itself in the first round, once the server has proved it holds
        the federation's key (when the site has one), with the site's own proof."""
        labels = sorted({str(v) for v in self.labels} | {str(v) for v in self.labels_holdout})
        described: dict[str, Any] = {
            "site": self.name,
            "features": json.dumps(self.features),
            "labels": json.dumps(labels),
            "holdout_rows": len(self.X_holdout),
        }
        if self.key is None:
            return described
        challenge = str(config.get("challenge", ""))
        if not challenge or not hmac.compare_digest(
            str(config.get("server_proof", "")), proof(self.key, "server", challenge)
        ):
            raise Unauthenticated(
                f"{self.name}: the server did not prove it holds the federation key; nothing "
                "was sent. Check --key-file on both sides (and that this is your server)"
            )
        return {**described, "proof": proof(self.key, f"site:{self.name}", challenge)}

    def evaluate(
        self, parameters: list[np.ndarray], config: dict[str, Any]
    ) -> tuple[float, int, dict[str, Any]]:
        mean, scale, *weights = parameters
        classes = json.loads(str(config["classes"]))
        truth = self._y(self.labels_holdout, classes)
        margin = family(str(config["model"])).margin((self.X_holdout - mean) / scale, weights)
        found = scores(margin, truth)
        if "champion" in config:  # the model to beat, on the same rows
            c_mean, c_scale, *c_weights = _unpacked(bytes(config["champion"]))
            c_margin = family(str(config["champion_model"])).margin(
                (self.X_holdout - c_mean) / c_scale, c_weights
            )
            found |= {f"champion_{k}": v for k, v in scores(c_margin, truth).items()}
        return float(found.pop("loss")), len(self.X_holdout), {"site": self.name, **found}


def proof(key: bytes, who: str, challenge: str) -> str:
    """HMAC-SHA256 of the round's challenge by one party (`server`, or `site:NAME`)."""
    return hmac.new(key, f"{who}:{challenge}".encode(), hashlib.sha256).hexdigest()


def _packed(arrays: list[np.ndarray]) -> bytes:
    import io

    buffer = io.BytesIO()
    np.savez(buffer, *arrays)
    return buffer.getvalue()


def _unpacked(data: bytes) -> list[np.ndarray]:
    import io

    with np.load(io.BytesIO(data), allow_pickle=False) as found:
        return [found[f"arr_{i}"] for i in range(len(found.files))]


def _client(site: Site) -> Any:
    """The site as a Flower client. A fit whose instructions carry a SecAgg+ stage's message goes
    through Flower's `secaggplus_mod`, which masks what the site trains before it leaves."""
    flwr = _flwr()
    contexts: dict[int, Any] = {}

    class Client(flwr.client.NumPyClient):  # type: ignore[misc,name-defined]
        def get_parameters(self, config: dict[str, Any]) -> list[np.ndarray]:
            return []

        def fit(self, parameters: list[np.ndarray], config: dict[str, Any]) -> Any:
            with _as_ours(site):
                if _SECURE in config:
                    return [], 0, {_SECURE: _secure_step(site, config, contexts)}
                return site.fit(parameters, config)

        def evaluate(self, parameters: list[np.ndarray], config: dict[str, Any]) -> Any:
            with _as_ours(site):
                return site.evaluate(parameters, config)

    return Client().to_client()


@contextlib.contextmanager
def _as_ours(site: Site) -> Iterator[None]:
    """A failure in the site's own work (a refusal, or the SecAgg+ protocol's own check) ends
    its part as a shipyard error that says what went wrong, not as a lost connection."""
    try:
        yield
    except ShipyardError:
        raise
    except Exception as error:
        raise InvalidInput(
            f"{site.name} could not do what the server asked: {type(error).__name__}: {error}"
        ) from error


def _secure_step(site: Site, config: dict[str, Any], contexts: dict[int, Any]) -> bytes:
    """One SecAgg+ stage at a site: the server's message through Flower's `secaggplus_mod`
    (which calls the site's own training at the masking stage), the reply serialised back."""
    import flwr.compat.common.recorddict_compat as compat
    from flwr.app import Context, Message, RecordDict
    from flwr.app.message_type import MessageType
    from flwr.client.mod import secaggplus_mod
    from flwr.common import Code, FitRes, Status, ndarrays_to_parameters, parameters_to_ndarrays
    from flwr.common.serde import recorddict_from_proto, recorddict_to_proto
    from flwr.proto.recorddict_pb2 import RecordDict as RecordDictProto

    node = int(config[_NODE])
    _identify(node)
    content = recorddict_from_proto(RecordDictProto.FromString(bytes(config[_SECURE])))
    message = Message(content, dst_node_id=node, message_type=MessageType.TRAIN)
    context = contexts.setdefault(node, Context(0, node, {}, RecordDict(), {}))

    def train(incoming: Any, _: Any) -> Any:
        instructions = compat.recorddict_to_fitins(incoming.content, keep_input=True)
        update, rows, metrics = site.fit(
            parameters_to_ndarrays(instructions.parameters), instructions.config, masked=True
        )
        result = FitRes(Status(Code.OK, ""), ndarrays_to_parameters(update), rows, metrics)
        return Message(compat.fitres_to_recorddict(result, keep_input=True), reply_to=incoming)

    reply = secaggplus_mod(message, context, train)
    return bytes(recorddict_to_proto(reply.content).SerializeToString())


def _identify(node: int) -> None:
    """Flower's messages take their run and node from the process's task identity, which its
    own runtimes set; the gRPC transport's server and sites set it here (one run a process)."""
    from flwr.supercore.task_identity import TaskIdentity

    try:
        TaskIdentity.run_id  # noqa: B018 - set already (Flower's simulation engine)
    except RuntimeError:
        TaskIdentity.task_id = 1
        TaskIdentity.run_id = 0
        TaskIdentity.node_id = node


def start_site(
    site: Site, server: str, *, wait_seconds: float = 300.0, root_certificates: bytes | None = None
) -> None:
    """Take part in a run at `server` (HOST:PORT) until it ends, trying to reach it for
    `wait_seconds` (`math.inf`: until it answers); over TLS when `root_certificates` (PEM)
    say whom to trust."""
    flwr = _flwr()
    try:
        flwr.client.start_client(
            server_address=server, client=_client(site), insecure=root_certificates is None,
            root_certificates=root_certificates,
            max_wait_time=None if math.isinf(wait_seconds) else wait_seconds,
        )  # fmt: skip
    except ShipyardError:  # the site's own refusal or failure, with its reason
        raise
    except Exception as error:  # Flower's gRPC errors: the server went away or never came
        raise ServiceUnavailable(
            f"the federated server at {server} could not be reached or went away "
            f"({type(error).__name__}); check the address and that it runs"
        ) from None


# -- the server --------------------------------------------------------------------------------


class _Run:
    """What the strategy learns as the rounds go."""

    def __init__(self, settings: Settings, key: bytes | None = None) -> None:
        self.settings = settings
        self.key = key
        self.challenge = secrets.token_hex(16)
        self.features: list[str] | None = None
        self.classes: list[Any] | None = None
        self.mean = self.scale = np.zeros(0)
        self.sites: dict[str, dict[str, Any]] = {}
        self.rounds: list[dict[str, Any]] = []
        self.problem: str | None = None
        self.last: list[np.ndarray] | None = None
        self.exponents = np.zeros(0)  # secure aggregation: the features' orders of magnitude
        self.champion_sign = 1.0  # -1 where the champion's positive class is the sites' other
        self.aggregated = 0  # the last server round whose results were aggregated
        self.deviations = np.zeros(0)  # and of the distances from the pooled mean
        self.early = (
            ["describe", "mean", "deviation", "spread"] if settings.secure else ["statistics"]
        )

    @property
    def server_rounds(self) -> int:
        return len(self.early) + self.settings.rounds

    def stage(self, server_round: int) -> str:
        return self.early[server_round - 1] if server_round <= len(self.early) else "train"

    def start(self) -> list[np.ndarray]:
        """The global model before the first training round."""
        rng = np.random.default_rng(self.settings.seed)
        initial = family(self.settings.model).initial(len(self.features or []), rng)
        self.last = [self.mean, self.scale, *initial]
        return self.last

    def described(self, reports: list[tuple[list[np.ndarray], int, dict[str, Any]]]) -> None:
        """Round 1: the sites' columns must agree; their labels make two classes."""
        first = json.loads(str(reports[0][2]["features"]))
        labels: set[str] = set()
        for _, _, metrics in reports:
            site = str(metrics.get("site", "?"))
            if self.key is not None and not hmac.compare_digest(
                str(metrics.get("proof", "")), proof(self.key, f"site:{site}", self.challenge)
            ):
                self.problem = (
                    f"a site calling itself {site!r} did not prove it holds the federation key; "
                    "the run stopped before any model was sent (start every site with the "
                    "server's --key-file)"
                )
                return
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
        champion = self.settings.champion
        if champion is not None and champion.features != first:
            self.problem = (
                f"the champion takes columns {champion.features[:10]}, the sites have "
                f"{first[:10]}: it cannot be scored on their holdouts"
            )
            return
        self.features = first
        self.classes = [_native(v) for v in sorted(labels, key=_label_order)]
        if champion is not None and champion.classes is not None:
            ours = [str(c) for c in self.classes]
            if sorted(champion.classes) != sorted(ours):
                self.problem = (
                    f"the champion answers {champion.classes}, the sites' labels are {ours}: "
                    "it cannot be scored on their holdouts"
                )
                return
            self.champion_sign = 1.0 if champion.classes == ours else -1.0
        if self.settings.secure:
            self.exponents = np.max([parts[0] for parts, _, _ in reports], axis=0)
        else:
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
            stage = run.stage(server_round)
            if stage in ("statistics", "describe") and run.key is not None:
                return {
                    "stage": stage,
                    "challenge": run.challenge,
                    "server_proof": proof(run.key, "server", run.challenge),
                }
            if stage != "train":
                return {"stage": stage}
            config: dict[str, Any] = {
                "stage": "train",
                "classes": json.dumps([str(c) for c in run.classes or []]),
                "alpha": settings.alpha,
                "steps": settings.steps,
                "model": settings.model,
                "seed": settings.seed * 1000 + server_round,
                "secure": settings.secure,
            }
            if settings.privacy is not None:
                config["dp_clip"] = settings.privacy.clip
                config["dp_noise"] = settings.privacy.noise
            return config

        def configure_fit(self, server_round: int, parameters: Any, client_manager: Any) -> Any:
            if server_round > 1 and run.aggregated != server_round - 1 and run.problem is None:
                run.problem = (
                    f"round {server_round - 1} ended without a result to aggregate (a site went "
                    "away, or under secure aggregation too few remained to remove the masks); "
                    "the run stopped"
                )
            if run.problem is not None:
                return []
            pairs = super().configure_fit(server_round, parameters, client_manager)
            extra = self._config(server_round)
            return [(c, FitIns(ins.parameters, {**ins.config, **extra})) for c, ins in pairs]

        def aggregate_fit(self, server_round: int, results: Any, failures: Any) -> Any:
            if failures:
                log.warning("round %d: %d site(s) failed to train", server_round, len(failures))
            if not results or run.problem is not None:
                return None, {}
            stage = run.stage(server_round)
            if settings.secure and stage not in ("describe", "deviation") and len(results) < 3:
                run.problem = (
                    f"only {len(results)} site(s) remained in secure round {server_round}: with "
                    "fewer than 3, each could learn another's contribution; the run stopped "
                    "before another model was sent"
                )
                return None, {}
            run.aggregated = server_round
            if stage in ("statistics", "describe"):
                run.described(
                    [(parameters_to_ndarrays(r.parameters), r.num_examples, r.metrics)
                     for _, r in results]
                )  # fmt: skip
                if run.problem is not None:
                    return None, {}
                if stage == "describe":
                    return ndarrays_to_parameters([run.exponents]), {}
                return ndarrays_to_parameters(run.start()), {}
            if stage == "deviation":  # each site's order of magnitude, in the clear: the largest
                reported = [parameters_to_ndarrays(r.parameters)[0] for _, r in results]
                run.deviations = np.max(reported, axis=0)
                return ndarrays_to_parameters([run.mean, run.deviations]), {}
            # the rest is averaged weighted by rows; under SecAgg+ every result carries the
            # average already, so averaging them again changes nothing
            averaged, metrics = super().aggregate_fit(server_round, results, failures)
            if averaged is None:
                return None, {}
            if stage == "mean":
                run.mean = parameters_to_ndarrays(averaged)[0] * np.exp2(run.exponents)
                return ndarrays_to_parameters([run.mean]), {}
            if stage == "spread":
                spread = parameters_to_ndarrays(averaged)[0]
                run.scale = secure_standardiser(run.mean, spread, run.deviations)
                return ndarrays_to_parameters(run.start()), {}
            mean, scale, *weights = run.last or []
            update = parameters_to_ndarrays(averaged)
            run.last = [mean, scale, *(w + u for w, u in zip(weights, update, strict=True))]
            norms = {
                str(r.metrics["site"]): float(r.metrics["update_norm"])
                for _, r in results
                if "update_norm" in r.metrics
            }
            run.rounds.append({"round": server_round - len(run.early), "update_norms": norms})
            return ndarrays_to_parameters(run.last), metrics

        def configure_evaluate(
            self, server_round: int, parameters: Any, client_manager: Any
        ) -> Any:
            if run.stage(server_round) != "train" or run.problem is not None:
                return []
            pairs = super().configure_evaluate(server_round, parameters, client_manager)
            classes: dict[str, Any] = {
                "classes": json.dumps([str(c) for c in run.classes or []]),
                "model": settings.model,
            }
            if settings.champion is not None and server_round == run.server_rounds:
                c_mean, c_scale, *c_weights = settings.champion.parameters
                classes["champion_model"] = settings.champion.model
                classes["champion"] = _packed(
                    [c_mean, c_scale, *(run.champion_sign * w for w in c_weights)]
                )
            return [(c, EvaluateIns(ins.parameters, {**ins.config, **classes})) for c, ins in pairs]

        def aggregate_evaluate(self, server_round: int, results: Any, failures: Any) -> Any:
            loss, metrics = super().aggregate_evaluate(server_round, results, failures)
            reported = [(r.num_examples, {**r.metrics, "loss": r.loss}) for _, r in results]
            summary: dict[str, Any] = {
                key: _weighted(reported, key) for key in ("loss", "accuracy", "auc")
            }
            if any("champion_loss" in m for _, m in reported):
                summary["champion"] = {
                    key: _weighted(reported, f"champion_{key}")
                    for key in ("loss", "accuracy", "auc")
                }
            per_site = {
                str(m["site"]): {
                    k: float(v)
                    for k, v in m.items()
                    if k != "site" and not k.startswith("champion_")
                }
                for _, m in reported
            }
            if run.rounds and run.rounds[-1]["round"] == server_round - len(run.early):
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
        """Waits for the sites `seconds` at most (Flower's default is a day); numbers each site
        that connects over gRPC (the node id a workflow addresses it by)."""

        numbers = itertools.count(1)  # next() on it is atomic: sites connect on gRPC's threads

        def register(self, client: Any) -> bool:
            if not hasattr(client, "node_id"):  # gRPC's; a Grid's proxies come numbered
                client.node_id = next(self.numbers)
            return bool(super().register(client))

        def wait_for(self, num_clients: int, timeout: int = 86400) -> bool:
            return bool(super().wait_for(num_clients, timeout=int(min(timeout, seconds))))

    return Waiting()


def _secure_fit(run: _Run) -> Any:
    """The fit step of every round under SecAgg+: the rounds of orders of magnitude (in the
    clear) as Flower's default; the scaled mean and spread and every training round through
    Flower's `SecAggPlusWorkflow`, weights up to the largest site's rows, each coordinate
    quantised within +-1 for the scaled mean and spread and +-`secure_clip` for an update."""
    from flwr.server.workflow import SecAggPlusWorkflow
    from flwr.server.workflow.constant import MAIN_CONFIGS_RECORD, Key
    from flwr.server.workflow.default_workflows import default_fit_workflow

    def fit(grid: Any, context: Any) -> None:
        server_round = int(context.state.config_records[MAIN_CONFIGS_RECORD][Key.CURRENT_ROUND])
        stage = run.stage(server_round)
        if stage in ("describe", "deviation"):  # on the simulation engine; gRPC's server runs it
            default_fit_workflow(grid, context)
            return
        largest = max((s["train_rows"] for s in run.sites.values()), default=1)
        SecAggPlusWorkflow(
            num_shares=1.0,  # every site holds a share of every other's secrets
            reconstruction_threshold=0.6,  # the masks are removed if 60% of the sites remain
            max_weight=float(largest),
            clipping_range=1.0 if stage in ("mean", "spread") else run.settings.secure_clip,
            timeout=run.settings.round_timeout,
        )(grid, context)

    return fit


def _proxy_grid(client_manager: Any, timeout: float | None) -> Any:
    """Flower's `Grid` (what a workflow sends its messages through) over the sites connected to
    the gRPC server: a message to a site goes as a fit instruction carrying it serialised, and
    the site's reply comes back the same way."""
    from concurrent.futures import ThreadPoolExecutor

    from flwr.app import Error, Message
    from flwr.common import Code, FitIns, Parameters
    from flwr.common.serde import recorddict_from_proto, recorddict_to_proto
    from flwr.proto.recorddict_pb2 import RecordDict as RecordDictProto
    from flwr.serverapp.grid import Grid

    def exchange(message: Any) -> Any:
        node = int(message.metadata.dst_node_id)
        nodes = {proxy.node_id: proxy for proxy in client_manager.all().values()}
        payload = recorddict_to_proto(message.content).SerializeToString()
        instructions = FitIns(Parameters([], ""), {_SECURE: payload, _NODE: node})
        try:
            answer = nodes[node].fit(
                instructions, timeout=timeout, group_id=int(message.metadata.group_id or 0)
            )
            if answer.status.code != Code.OK or _SECURE not in answer.metrics:
                raise RuntimeError(answer.status.message or "the site's answer has no message")
            content = RecordDictProto.FromString(bytes(answer.metrics[_SECURE]))
            return Message(recorddict_from_proto(content), reply_to=message)
        except Exception as error:  # the site went away, timed out or failed: an error reply
            log.warning("site %s: %s", node, error)
            return Message(Error(code=0, reason=str(error)), reply_to=message)

    class ProxyGrid(Grid):
        def __init__(self) -> None:
            self.replies: dict[str, Any] = {}

        def set_run(self, run: Any) -> None:
            self._run = run

        @property
        def run(self) -> Any:
            return self._run

        def create_message(
            self, content: Any, message_type: str, dst_node_id: int, group_id: str,
            ttl: float | None = None,
        ) -> Any:  # fmt: skip
            return Message(content, dst_node_id=dst_node_id, message_type=message_type,
                           group_id=group_id)  # fmt: skip

        def get_node_ids(self) -> list[int]:
            return [int(proxy.node_id) for proxy in client_manager.all().values()]

        def push_messages(self, messages: Any) -> list[str]:
            sent = list(messages)
            with ThreadPoolExecutor(max_workers=max(1, len(sent))) as pool:
                replies = list(pool.map(exchange, sent))
            ids = []
            for index, reply in enumerate(replies):
                key = f"{id(self)}-{len(self.replies)}-{index}"
                self.replies[key] = reply
                ids.append(key)
            return ids

        def pull_messages(self, message_ids: Any) -> list[Any]:
            return [self.replies.pop(i) for i in list(message_ids) if i in self.replies]

        def send_and_receive(self, messages: Any, *, timeout: float | None = None) -> list[Any]:
            return self.pull_messages(self.push_messages(messages))

    return ProxyGrid()


def _secure_server(flwr: Any, run: _Run, strategy: Any, client_manager: Any) -> Any:
    """Flower's server, each round's fit run by `_secure_fit` over the connected sites."""
    import flwr.compat.common.recorddict_compat as compat
    from flwr.app import ConfigRecord, Context, RecordDict
    from flwr.common.constant import SUPERLINK_NODE_ID
    from flwr.server.compat.legacy_context import LegacyContext
    from flwr.server.workflow.constant import MAIN_CONFIGS_RECORD, MAIN_PARAMS_RECORD, Key

    fit = _secure_fit(run)
    _identify(SUPERLINK_NODE_ID)

    class SecureServer(flwr.server.Server):  # type: ignore[misc]
        def fit_round(self, server_round: int, timeout: float | None) -> Any:
            if run.stage(server_round) in ("describe", "deviation"):  # in the clear, as any round
                return super().fit_round(server_round, timeout)
            context = LegacyContext(
                Context(0, 0, {}, RecordDict(), {}), strategy=self.strategy,
                client_manager=self._client_manager,
            )  # fmt: skip
            context.state.config_records[MAIN_CONFIGS_RECORD] = ConfigRecord(
                {Key.CURRENT_ROUND: server_round}
            )
            context.state.array_records[MAIN_PARAMS_RECORD] = compat.parameters_to_arrayrecord(
                self.parameters, keep_input=True
            )
            fit(_proxy_grid(self._client_manager, timeout), context)
            if run.aggregated != server_round:
                return None
            parameters = compat.arrayrecord_to_parameters(
                context.state.array_records[MAIN_PARAMS_RECORD], keep_input=True
            )
            return parameters, {}, ([], [])

    return SecureServer(client_manager=client_manager, strategy=strategy)


def _checked(settings: Settings) -> None:
    if settings.strategy not in ("fedavg", "fedprox"):
        raise InvalidInput(f"strategy must be fedavg or fedprox, got {settings.strategy!r}")
    if settings.rounds < 1 or settings.min_sites < 1:
        raise InvalidInput("rounds and min-sites must be at least 1")
    if settings.secure and settings.min_sites < 3:
        raise InvalidInput(
            "secure aggregation needs at least 3 sites (--min-sites 3): with two, each could "
            "subtract its own update from the sum and learn the other's"
        )
    if settings.secure and settings.min_sites > 1023:
        raise InvalidInput(
            "secure aggregation sums at most 1,023 sites (its 2**22 quantisation levels in a "
            "2**32 modulus); lower --min-sites"
        )
    if settings.secure_clip <= 0:
        raise InvalidInput(
            f"the secure aggregation range must be positive, got {settings.secure_clip}"
        )
    family(settings.model)  # a model spec that cannot be read is refused before anyone waits


def serve(
    address: str,
    settings: Settings,
    *,
    started: threading.Event | None = None,
    certificates: tuple[bytes, bytes, bytes] | None = None,
    key: bytes | None = None,
) -> Result:
    """Run a federated training at `address` (HOST:PORT) until its rounds are done; `started`
    is set once it listens. `certificates`: (CA, certificate, private key) as PEM to serve over
    TLS; `key`: the federation's shared key, which the server and every site prove they hold
    (HMAC of a fresh challenge) before any statistic or model is sent."""
    flwr = _flwr()
    _checked(settings)
    run = _Run(settings, key)
    strategy = _strategy(flwr, run)
    manager = _waiting_manager(flwr, settings.wait_seconds)
    if started is not None:
        started.set()
    try:
        flwr.server.start_server(
            server_address=address,
            certificates=certificates,
            config=flwr.server.ServerConfig(
                num_rounds=run.server_rounds, round_timeout=settings.round_timeout
            ),
            **(
                {"server": _secure_server(flwr, run, strategy, manager)}
                if settings.secure
                else {"strategy": strategy, "client_manager": manager}
            ),
        )
    except BaseException:
        # Flower stops its gRPC server only when the rounds end; on a failure each connected
        # site's stream would wait for instructions for ever, and the process with it
        for proxy in manager.all().values():
            proxy.bridge.close()
        raise
    result = _result(run)
    result.transport = {
        "engine": "grpc",
        "tls": certificates is not None,
        "sites_authenticated": key is not None,
    }
    return result


def simulate(sites: list[Site], settings: Settings, *, cpus: int = 2) -> Result:
    """The same federated training on Flower's simulation engine: every site a virtual node in
    this process's Ray cluster (`cpus` CPUs), the server's workflow Flower's own, with SecAgg+
    as its fit step when `settings.secure`."""
    flwr = _flwr()
    _checked(settings)
    try:
        from flwr.simulation import run_simulation
    except ImportError:
        raise MissingDependency(
            "Flower's simulation engine runs on Ray; install it with: pip install 'shipyard[ray]'"
        ) from None
    from flwr.client import ClientApp
    from flwr.client.mod import secaggplus_mod
    from flwr.common.secure_aggregation.secaggplus_constants import RECORD_KEY_CONFIGS
    from flwr.server import ServerApp, ServerConfig
    from flwr.server.compat.legacy_context import LegacyContext
    from flwr.server.workflow import DefaultWorkflow

    if len(sites) < settings.min_sites:
        raise InvalidInput(f"{len(sites)} site(s) given, --min-sites is {settings.min_sites}")
    run = _Run(settings)
    strategy = _strategy(flwr, run)
    server_app = ServerApp()

    @server_app.main()
    def _(grid: Any, context: Any) -> None:
        legacy = LegacyContext(
            context,
            config=ServerConfig(num_rounds=run.server_rounds, round_timeout=settings.round_timeout),
            strategy=strategy,
            client_manager=_waiting_manager(flwr, settings.wait_seconds),
        )
        workflow = (
            DefaultWorkflow(fit_workflow=_secure_fit(run)) if settings.secure else DefaultWorkflow()
        )
        workflow(grid, legacy)

    def secure_stages(message: Any, context: Any, call_next: Any) -> Any:
        """Flower's `secaggplus_mod` for the SecAgg+ stages; other messages pass by it."""
        if RECORD_KEY_CONFIGS in message.content.config_records:
            return secaggplus_mod(message, context, call_next)
        return call_next(message, context)

    client_app = ClientApp(
        client_fn=lambda context: _client(sites[int(context.node_config["partition-id"])]),
        mods=[secure_stages],
    )
    run_simulation(
        server_app=server_app, client_app=client_app, num_supernodes=len(sites),
        backend_config={
            "client_resources": {"num_cpus": 1, "num_gpus": 0.0},
            "init_args": {"num_cpus": cpus, "num_gpus": 0, "include_dashboard": False},
        },
    )  # fmt: skip
    result = _result(run)
    result.transport = {"engine": "simulation"}
    return result


def _result(run: _Run) -> Result:
    settings = run.settings
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
