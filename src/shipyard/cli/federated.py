"""`shipyard federated server|site`: train one model across sites whose rows never leave them."""

from __future__ import annotations

import contextlib
import logging
import math
from pathlib import Path
from typing import Any

import typer
from rich.table import Table

from shipyard.cli._common import (
    console,
    emit_json,
    err_console,
    json_flag,
    open_registry,
    read_table,
)
from shipyard.core.errors import InvalidInput, ServiceUnavailable, ShipyardError

app = typer.Typer(
    help="Federated training on Flower: sites train together, their rows stay where they are.",
    no_args_is_help=True,
)


class _OurOwn(logging.Filter):
    """Flower logs with its traceback an exception a site raised; shipyard's own (a refusal
    with its reason) is reported by shipyard, as a message."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.exc_info and isinstance(record.exc_info[1], ShipyardError))


def _quiet_flower(verbose: bool) -> None:
    """Flower logs every round and a deprecation banner; shipyard reports the rounds itself.
    Flower sets its logger's level when it is imported, so it is imported first."""
    with contextlib.suppress(ImportError):
        import flwr  # noqa: F401

    flower = logging.getLogger("flwr")
    flower.setLevel(logging.INFO if verbose else logging.ERROR)
    flower.addFilter(_OurOwn())


@app.command("server")
def server(
    ctx: typer.Context,
    name: str = typer.Argument(..., help="the model to register the result as (next version)"),
    address: str = typer.Option("0.0.0.0:9092", "--address", help="HOST:PORT the sites connect to"),
    rounds: int = typer.Option(10, "--rounds", min=1, max=1000, help="training rounds"),
    min_sites: int = typer.Option(
        3, "--min-sites", min=1, max=10_000, help="sites every round waits for"
    ),
    strategy: str = typer.Option("fedavg", "--strategy", help="fedavg or fedprox"),
    model: str = typer.Option(
        "logistic",
        "--model",
        help="logistic (logistic regression) or mlp:64,32 (a PyTorch network, hidden widths)",
    ),
    mu: float = typer.Option(0.1, "--mu", min=0.0, help="FedProx's proximal term"),
    steps: int = typer.Option(
        20,
        "--local-steps",
        min=1,
        max=10_000,
        help="training iterations per site per round (L-BFGS, or Adam for a network)",
    ),
    dp_noise: float | None = typer.Option(
        None,
        "--dp-noise",
        min=0.0,
        help="differential privacy: each site clips its update and adds Gaussian noise of this "
        "many times the clip; the epsilon spent is reported",
    ),
    dp_clip: float = typer.Option(
        1.0, "--dp-clip", min=0.0, help="L2 norm each update is clipped to"
    ),
    dp_delta: float = typer.Option(
        1e-5, "--dp-delta", min=0.0, max=1.0, help="delta of (epsilon, delta)"
    ),
    secure: bool = typer.Option(
        False,
        "--secure-aggregation/--no-secure-aggregation",
        help="Flower's SecAgg+: the server learns only the sum of the sites' updates, never "
        "one site's (needs 3 sites or more)",
    ),
    secure_clip: float = typer.Option(
        16.0,
        "--secure-clip",
        min=0.001,
        help="under secure aggregation, each update coordinate is quantised within +-this",
    ),
    tls_cert: Path | None = typer.Option(
        None, "--tls-cert", help="the server's TLS certificate (PEM): sites connect over TLS"
    ),
    tls_key: Path | None = typer.Option(None, "--tls-key", help="its private key (PEM)"),
    tls_ca: Path | None = typer.Option(
        None, "--tls-ca", help="the CA that signed it (PEM; default: the certificate itself)"
    ),
    key_file: Path | None = typer.Option(
        None,
        "--key-file",
        help="the federation's shared key: the server and every site prove they hold it before "
        "any statistic or model is sent (openssl rand -hex 32 > federation.key)",
    ),
    wait: float = typer.Option(
        300.0, "--wait", min=1.0, help="seconds to wait for --min-sites sites to connect"
    ),
    register: bool = typer.Option(
        True, "--register/--no-register", help="register the global model as the next version"
    ),
    verbose: bool = typer.Option(False, "--verbose", help="show Flower's own log"),
    as_json: bool = json_flag("the run: rounds, sites, privacy and the version registered"),
) -> None:
    """Coordinate a federated training run: wait for the sites, run the rounds, report what
    each round scored on the sites' holdouts, and register the global model."""
    from shipyard.federated import Privacy, Settings, read_key, serve, server_certificates
    from shipyard.federated import register as register_result

    if (tls_cert is None) != (tls_key is None):
        raise InvalidInput("TLS needs both --tls-cert and --tls-key")
    certificates = server_certificates(tls_cert, tls_key, tls_ca) if tls_cert and tls_key else None
    key = read_key(key_file) if key_file is not None else None

    _quiet_flower(verbose)
    privacy = Privacy(dp_clip, dp_noise, dp_delta) if dp_noise else None
    settings = Settings(
        rounds=rounds, min_sites=min_sites, strategy=strategy.lower(), model=model, mu=mu,
        steps=steps, privacy=privacy, secure=secure, secure_clip=secure_clip, wait_seconds=wait,
    )  # fmt: skip
    err_console.print(
        f"waiting for {min_sites} site(s) on {address} (up to {wait:.0f} s), then {rounds} "
        f"round(s) of {settings.strategy}{' under secure aggregation' if secure else ''}",
        highlight=False,
    )  # fmt: skip
    result = serve(address, settings, certificates=certificates, key=key)
    registered = None
    if register:
        with open_registry(ctx) as registry:
            registered = register_result(registry, name, result)
    if as_json:
        emit_json(
            {
                "rounds": result.rounds,
                "sites": result.sites,
                "epsilon": result.epsilon,
                "secure_aggregation": secure,
                "features": result.features,
                "classes": result.classes,
                "registered": registered.ref if registered is not None else None,
            }
        )
        return
    _print_rounds(result)
    if result.epsilon is not None:
        console.print(
            f"differential privacy: noise {dp_noise} x clip {dp_clip}; epsilon {result.epsilon:.3g} "
            f"at delta {dp_delta:g} over {rounds} round(s), per site",
            highlight=False,
        )
    if secure:
        console.print(
            "secure aggregation (SecAgg+): the server saw only the sum of the sites' moments "
            "and updates, never one site's",
            highlight=False,
        )
    if registered is not None:
        console.print(f"registered {registered.ref}", highlight=False)


def _print_rounds(result: Any) -> None:
    table = Table(
        "round",
        "accuracy",
        "AUC",
        "log-loss",
        title="the global model on the sites' holdouts (weighted by rows)",
    )
    for r in result.rounds:
        table.add_row(
            str(r["round"]),
            *(f"{r[k]:.4f}" if r.get(k) is not None else "-" for k in ("accuracy", "auc", "loss")),
        )
    console.print(table)
    sites = Table(
        "site", "train rows", "holdout rows", "accuracy", "AUC", title="per site, last round"
    )
    for name, s in sorted(result.sites.items()):
        sites.add_row(
            name, str(s["train_rows"]), str(s["holdout_rows"]),
            *(f"{s[k]:.4f}" if s.get(k) is not None else "-" for k in ("accuracy", "auc")),
        )  # fmt: skip
    console.print(sites)


@app.command("site")
def site(
    server: str = typer.Option(..., "--server", help="HOST:PORT of `shipyard federated server`"),
    data: Path = typer.Option(
        ..., "--data", help="this site's rows (.parquet or .csv); they stay here"
    ),
    name: str = typer.Option(..., "--name", help="this site's name, e.g. hospital-a"),
    label: str = typer.Option("label", "--label", help="the label column"),
    holdout: float = typer.Option(
        0.2, "--holdout", min=0.01, max=0.99, help="share of rows kept to score each round's model"
    ),
    wait: float = typer.Option(
        300.0, "--wait", min=1.0, help="seconds to keep trying to reach the server"
    ),
    tls_ca: Path | None = typer.Option(
        None, "--tls-ca", help="the CA certificate (PEM) to trust the server's by: connect over TLS"
    ),
    key_file: Path | None = typer.Option(
        None,
        "--key-file",
        help="the federation's shared key: this site answers only a server that proves it "
        "holds it, and proves it holds it too",
    ),
    require_secure: bool = typer.Option(
        False,
        "--require-secure-aggregation",
        help="take part only in runs under secure aggregation: a server that asks for this "
        "site's statistics or updates in the clear is refused (exit 8), nothing sent",
    ),
    stay: bool = typer.Option(
        False,
        "--stay",
        help="take part in every run the server starts (a retraining policy's too), waiting "
        "for the next as long as it takes, until stopped",
    ),
    verbose: bool = typer.Option(False, "--verbose", help="show Flower's own log"),
) -> None:
    """Take part in a federated run: train on this site's rows, send only model updates."""
    from shipyard.federated import Site, read_key, start_site, trusted_certificates

    _quiet_flower(verbose)
    if not name.strip() or len(name) > 128:
        raise InvalidInput("--name must be 1 to 128 characters")
    trusted = trusted_certificates(tls_ca) if tls_ca is not None else None
    key = read_key(key_file) if key_file is not None else None
    frame = read_table(data)
    joined = Site(frame, label, name, holdout=holdout, key=key, require_secure=require_secure)
    err_console.print(
        f"{name}: {len(joined.X)} rows to train on, {len(joined.X_holdout)} held out; "
        f"joining {server}", highlight=False,
    )  # fmt: skip
    while True:
        try:
            start_site(
                joined, server, wait_seconds=math.inf if stay else wait, root_certificates=trusted
            )
        except ServiceUnavailable as error:
            if not stay:
                raise
            err_console.print(f"{name}: {error.message}; waiting for the next run", highlight=False)
            continue
        err_console.print(f"{name}: the run is over", highlight=False)
        if not stay:
            return
        err_console.print(f"{name}: waiting for the next run at {server}", highlight=False)
