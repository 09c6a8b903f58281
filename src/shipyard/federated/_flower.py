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

import hmac
import itertools
import json
import logging
import secrets
import threading
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from shipyard.core.errors import (
    InvalidInput,
    MissingDependency,
    ServiceUnavailable,
)
from shipyard.federated._champion import Champion
from shipyard.federated._model import (
    family,
    secure_standardiser,
    standardiser,
)
from shipyard.federated._privacy import epsilon
from shipyard.federated._secure import (
    secure_fit,
    secure_server,
)
from shipyard.federated._site import Site, client, flower, packed, proof

__all__ = ["Privacy", "Result", "Settings", "serve", "simulate"]


log = logging.getLogger("shipyard.federated")


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
        self.short_of_sites = False  # the problem is that sites were missing, not what they sent
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
                "columns": features,
                **{k: str(metrics[k]) for k in ("train_sha256", "holdout_sha256") if k in metrics},
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
            if not pairs:  # fewer sites than --min-sites connected within --wait
                joined = client_manager.num_available()
                run.problem = (
                    f"{joined} of the {settings.min_sites} site(s) needed had joined within "
                    f"{settings.wait_seconds:.0f} s; start the sites (`shipyard federated site "
                    "--server ...`), give them longer (--wait) or lower --min-sites"
                    if server_round == 1
                    else f"only {joined} of the {settings.min_sites} site(s) needed remained for "
                    f"round {server_round}; the run stopped"
                )
                run.short_of_sites = True
                return []
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
                classes["champion"] = packed(
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
    flwr = flower()
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
                {"server": secure_server(flwr, run, strategy, manager)}
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
    flwr = flower()
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
            DefaultWorkflow(fit_workflow=secure_fit(run)) if settings.secure else DefaultWorkflow()
        )
        workflow(grid, legacy)

    def secure_stages(message: Any, context: Any, call_next: Any) -> Any:
        """Flower's `secaggplus_mod` for the SecAgg+ stages; other messages pass by it."""
        if RECORD_KEY_CONFIGS in message.content.config_records:
            return secaggplus_mod(message, context, call_next)
        return call_next(message, context)

    client_app = ClientApp(
        client_fn=lambda context: client(sites[int(context.node_config["partition-id"])]),
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
        raise (ServiceUnavailable if run.short_of_sites else InvalidInput)(run.problem)
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
