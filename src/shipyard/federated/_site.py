"""A site of a federated run: its rows, split into training and holdout once, and what it does
with each round's instructions. What leaves it is what the round asks for and nothing more:
aggregates or orders of magnitude, an update (clipped and noised under differential privacy,
masked under secure aggregation) and its holdout scores; and only once the server has proved
it holds the federation's key, when the site has one.

    Site(frame, label, name)        the rows and the answers
    start_site(site, "host:9092")   take part in a run over Flower's gRPC transport
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import math
from collections.abc import Iterator
from typing import Any

import numpy as np

from shipyard.core import fingerprint
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
    statistics,
)
from shipyard.federated._privacy import clip_and_noise
from shipyard.federated._secure import SECURE, secure_step

__all__ = ["Site", "client", "flower", "packed", "proof", "start_site", "unpacked"]


def flower() -> Any:
    """Flower, or a message that says how to install it."""
    try:
        import flwr
    except ImportError:
        raise MissingDependency(
            "federated training runs on Flower; install it with: pip install 'shipyard[federated]'"
        ) from None
    return flwr


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
        # the ids its training and holdout rows have as data versions (the same SHA-256
        # `shipyard data` gives them): reported to the server, so the run that trains a version
        # names the data each site used, while the rows stay here
        self.data = {
            "train": fingerprint(frame.iloc[order[:cut]]),
            "holdout": fingerprint(frame.iloc[order[cut:]]),
        }
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
            "train_sha256": self.data["train"]["sha256"],
            "holdout_sha256": self.data["holdout"]["sha256"],
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
            c_mean, c_scale, *c_weights = unpacked(bytes(config["champion"]))
            c_margin = family(str(config["champion_model"])).margin(
                (self.X_holdout - c_mean) / c_scale, c_weights
            )
            found |= {f"champion_{k}": v for k, v in scores(c_margin, truth).items()}
        return float(found.pop("loss")), len(self.X_holdout), {"site": self.name, **found}


def proof(key: bytes, who: str, challenge: str) -> str:
    """HMAC-SHA256 of the round's challenge by one party (`server`, or `site:NAME`)."""
    return hmac.new(key, f"{who}:{challenge}".encode(), hashlib.sha256).hexdigest()


def packed(arrays: list[np.ndarray]) -> bytes:
    import io

    buffer = io.BytesIO()
    np.savez(buffer, *arrays)
    return buffer.getvalue()


def unpacked(data: bytes) -> list[np.ndarray]:
    import io

    with np.load(io.BytesIO(data), allow_pickle=False) as found:
        return [found[f"arr_{i}"] for i in range(len(found.files))]


def client(site: Site) -> Any:
    """The site as a Flower client. A fit whose instructions carry a SecAgg+ stage's message goes
    through Flower's `secaggplus_mod`, which masks what the site trains before it leaves."""
    flwr = flower()
    contexts: dict[int, Any] = {}

    class Client(flwr.client.NumPyClient):  # type: ignore[misc,name-defined]
        def get_parameters(self, config: dict[str, Any]) -> list[np.ndarray]:
            return []

        def fit(self, parameters: list[np.ndarray], config: dict[str, Any]) -> Any:
            with as_ours(site):
                if SECURE in config:
                    return [], 0, {SECURE: secure_step(site, config, contexts)}
                return site.fit(parameters, config)

        def evaluate(self, parameters: list[np.ndarray], config: dict[str, Any]) -> Any:
            with as_ours(site):
                return site.evaluate(parameters, config)

    return Client().to_client()


@contextlib.contextmanager
def as_ours(site: Site) -> Iterator[None]:
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


def start_site(
    site: Site, server: str, *, wait_seconds: float = 300.0, root_certificates: bytes | None = None
) -> None:
    """Take part in a run at `server` (HOST:PORT) until it ends, trying to reach it for
    `wait_seconds` (`math.inf`: until it answers); over TLS when `root_certificates` (PEM)
    say whom to trust."""
    flwr = flower()
    _reachable(server, wait_seconds, root_certificates)
    try:
        flwr.client.start_client(
            server_address=server, client=client(site), insecure=root_certificates is None,
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


def _reachable(server: str, wait_seconds: float, root_certificates: bytes | None) -> None:
    """Wait until the server at `server` accepts a connection (over TLS, completes the
    handshake), for `wait_seconds` at most: a site started before its server listens waits for
    it. (Flower's own retries do not cover its gRPC stream's first connection: a site started
    a moment too early failed at once with "could not be reached".)"""
    import grpc

    # gRPC retries a refused connection on its own, backing off 1 s, 1.6 s, 2.6 s ... by
    # default; capped here so that a server that comes up is found within a second or two
    options = [("grpc.initial_reconnect_backoff_ms", 250), ("grpc.max_reconnect_backoff_ms", 2000)]
    channel = (
        grpc.insecure_channel(server, options=options)
        if root_certificates is None
        else grpc.secure_channel(
            server, grpc.ssl_channel_credentials(root_certificates), options=options
        )
    )
    try:
        grpc.channel_ready_future(channel).result(
            timeout=None if math.isinf(wait_seconds) else wait_seconds
        )
    except grpc.FutureTimeoutError:
        raise ServiceUnavailable(
            f"the federated server at {server} could not be reached within {wait_seconds:.0f} s"
            f"{' over TLS' if root_certificates is not None else ''}; check the address, that "
            "it runs"
            f"{' and that --tls-ca is the CA that signed its certificate' if root_certificates else ''}"
            ", or give it longer with --wait"
        ) from None
    finally:
        channel.close()
