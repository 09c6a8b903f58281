"""Federated training on Flower: a server and three sites as separate processes on loopback, the
sites' rows never crossing the wire, the global model registered and served; differential
privacy's clipping, noise and epsilon; secure aggregation (SecAgg+), under which not even a
site's aggregates cross the wire unmasked; ten sites on Flower's simulation engine; bad sites
refused with a message."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from pydantic import ValidationError
from tests.serving.servers import free_port
from tests.tcp_proxy import TcpProxy

from shipyard.core import Settings
from shipyard.core.errors import InvalidInput
from shipyard.federated import Settings as Federated
from shipyard.federated import Site, clip_and_noise, epsilon, simulate
from shipyard.federated._model import (
    magnitudes,
    scaled_mean,
    scaled_spread,
    secure_standardiser,
    standardiser,
    statistics,
)
from shipyard.registry import Registry
from shipyard.retraining import RetrainSpec, pipeline_history
from shipyard.tracking import Tracker

pytest.importorskip(
    "flwr", reason="federated training needs Flower: pip install 'shipyard[federated]'"
)


def shipyard(home: Path, *args: str, log: Path | None = None) -> subprocess.Popen[str]:
    """`shipyard ARGS` in a process; its output to `log` when given (a process that runs on,
    as a site with --stay, would otherwise fill its pipe and stall)."""
    env = {**os.environ, "SHIPYARD_HOME": str(home), "SHIPYARD_ACTOR": "federated-tester"}
    env.pop("SHIPYARD_DATABASE_URL", None)
    out: Any = subprocess.PIPE if log is None else log.open("w")
    try:
        return subprocess.Popen(
            [sys.executable, "-m", "shipyard", *args], env=env, text=True, stdout=out,
            stderr=subprocess.STDOUT if log is not None else subprocess.PIPE,
        )  # fmt: skip
    finally:
        if log is not None:
            out.close()  # the process holds its own copy


def federated_server(
    home: Path, port: int, min_sites: int, rounds: int, *extra: str, wait: str = "60"
) -> subprocess.Popen[str]:
    """`shipyard federated server` for model `bc` on 127.0.0.1:`port`."""
    return shipyard(
        home, "federated", "server", "bc", "--address", f"127.0.0.1:{port}", "--min-sites",
        str(min_sites), "--rounds", str(rounds), "--wait", wait, *extra,
    )  # fmt: skip


def federated_site(
    home: Path, port: int, data: Path, name: str, *extra: str, wait: str = "60"
) -> subprocess.Popen[str]:
    """`shipyard federated site` with `data` (label `target`), for the server on `port`."""
    return shipyard(
        home, "federated", "site", "--server", f"127.0.0.1:{port}", "--data", str(data),
        "--name", name, "--label", "target", "--wait", wait, *extra,
    )  # fmt: skip


@pytest.fixture(scope="module")
def sites(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """Breast-cancer data split across three sites by tumour radius (non-IID: the sites see
    different kinds of tumours)."""
    from sklearn.datasets import load_breast_cancer

    folder = tmp_path_factory.mktemp("sites")
    data = load_breast_cancer(as_frame=True).frame.sort_values("mean radius", kind="stable")
    data = data.reset_index(drop=True)
    paths = []
    for i, part in enumerate(np.array_split(np.arange(len(data)), 3)):
        path = folder / f"site-{i}.parquet"
        data.iloc[part].to_parquet(path, index=False)
        paths.append(path)
    return paths


def settle(watched: subprocess.Popen[str], *others: subprocess.Popen[str]) -> str:
    """Wait for `watched` to end and return what it wrote to stderr; then stop the others."""
    try:
        _, err = watched.communicate(timeout=120)
    finally:
        for process in (watched, *others):
            if process.poll() is None:
                process.kill()
            process.communicate(timeout=30)
    return err


def run(
    home: Path, sites: list[Path], *server_args: str, site_args: tuple[str, ...] = ()
) -> tuple[dict[str, Any], TcpProxy]:
    """`shipyard federated server` and one `shipyard federated site` per file, the sites
    talking to the server through a proxy that keeps what they send."""
    port = free_port()
    proxy = TcpProxy(("127.0.0.1", port)).start()
    server = shipyard(
        home, "federated", "server", "bc", "--address", f"127.0.0.1:{port}", "--min-sites",
        str(len(sites)), "--wait", "60", "--json", *server_args,
    )  # fmt: skip
    members = [
        shipyard(home, "federated", "site", "--server", f"127.0.0.1:{proxy.port}", "--data",
                 str(path), "--name", f"hospital-{i}", "--label", "target", "--wait", "60",
                 *site_args)
        for i, path in enumerate(sites)
    ]  # fmt: skip
    try:
        out, err = server.communicate(timeout=180)
        assert server.returncode == 0, err[-3000:]
        for member in members:
            _, site_err = member.communicate(timeout=60)
            assert member.returncode == 0, site_err[-3000:]
    finally:
        for process in (server, *members):
            if process.poll() is None:
                process.kill()
        proxy.cut()
    return json.loads(out), proxy


def test_three_sites_train_one_model_and_no_row_crosses_the_wire(
    tmp_path: Path, sites: list[Path]
) -> None:
    answer, proxy = run(tmp_path, sites, "--rounds", "5")
    assert [r["round"] for r in answer["rounds"]] == [1, 2, 3, 4, 5]
    final = answer["rounds"][-1]
    assert final["accuracy"] > 0.93
    assert final["auc"] > 0.97
    assert set(answer["sites"]) == {"hospital-0", "hospital-1", "hospital-2"}
    for name, site in answer["sites"].items():
        assert site["train_rows"] + site["holdout_rows"] == len(
            pd.read_parquet(sites[int(name[-1])])
        )
    assert answer["registered"] == "bc:1"

    # what crossed the wire: weights and aggregates, never a site's values. Each value with a
    # fraction (an integer's eight bytes, 2.0 = 00..0040, are common in any framing) is looked
    # for as the float64 the site holds it as, and as text
    sent = bytes(proxy.upstream)
    assert len(sent) > 1000
    for path in sites:
        frame = pd.read_parquet(path).drop(columns="target")
        values = [v for v in np.unique(frame.to_numpy(dtype=np.float64)) if v != int(v)]
        assert len(values) > 1000
        texts = {v: str(float(v)).encode() for v in values}
        found = [
            v for v in values
            if np.float64(v).tobytes() in sent or (len(texts[v]) >= 6 and texts[v] in sent)
        ]  # fmt: skip
        assert not found, f"{len(found)} raw values of {path.name} crossed the wire: {found[:5]}"
        # without secure aggregation a site's aggregates do cross, as the float64s it sends
        trained = Site(pd.read_parquet(path), "target", "x").X
        assert statistics(trained)[1].tobytes() in sent

    with Registry.from_settings(Settings(home=tmp_path)) as registry:
        version = registry.get_version("bc", 1)
        federated = version.lineage["federated"]  # type: ignore[index]
        assert federated["settings"]["strategy"] == "fedavg"
        assert set(federated["sites"]) == set(answer["sites"])
        assert version.metrics["accuracy"] == pytest.approx(final["accuracy"])
        served = registry.load("bc", 1)
    everything = pd.concat([pd.read_parquet(p) for p in sites])
    columns = served.signature.validate_frame(everything.drop(columns="target"))
    probabilities = served.predictor.predict(columns)
    assert np.mean(probabilities.argmax(axis=1) == everything["target"].to_numpy()) > 0.93

    # no row of its training data is at the server, yet its answers are explained exactly:
    # against the pooled mean its standardiser keeps (the base is the model at that mean)
    explained = served.explainer().explain(columns)
    assert (explained.method, explained.exact, explained.space) == ("linear", True, "log-odds")
    np.testing.assert_allclose(explained.base + explained.values.sum(axis=1), explained.output)
    np.testing.assert_allclose(1 / (1 + np.exp(-explained.output)), probabilities[:, 1], atol=1e-5)


def test_with_privacy_each_update_is_clipped_and_noised_and_the_epsilon_is_reported(
    tmp_path: Path, sites: list[Path]
) -> None:
    answer, _ = run(
        tmp_path, sites, "--rounds", "3", "--strategy", "fedprox", "--dp-noise", "0.5",
        "--dp-clip", "2.0",
    )  # fmt: skip
    assert answer["epsilon"] == pytest.approx(epsilon(0.5, 3, 1e-5))
    assert len(answer["rounds"]) == 3
    assert all(r["update_norms"] == {} for r in answer["rounds"])  # a norm carries no noise
    with Registry.from_settings(Settings(home=tmp_path)) as registry:
        version = registry.get_version("bc", 1)
    federated = version.lineage["federated"]  # type: ignore[index]
    assert federated["settings"]["privacy"] == {"clip": 2.0, "noise": 0.5, "delta": 1e-5}
    assert federated["settings"]["strategy"] == "fedprox"
    assert version.metrics["dp_epsilon"] == pytest.approx(answer["epsilon"])


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A CA, a server certificate it signed for 127.0.0.1, and a federation key."""
    import datetime as dt
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    folder = tmp_path_factory.mktemp("tls")
    now = dt.datetime.now(dt.UTC)

    def certificate(subject: str, key: Any, issuer: Any, signer: Any, ca: bool) -> Any:
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
            .issuer_name(issuer)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(hours=1))
            .not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        )
        if not ca:
            builder = builder.add_extension(
                x509.SubjectAlternativeName(
                    [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
                ),
                critical=False,
            )
        return builder.sign(signer, hashes.SHA256())

    ca_key, server_key = (
        ec.generate_private_key(ec.SECP256R1()),
        ec.generate_private_key(ec.SECP256R1()),
    )
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "federation CA")])
    ca = certificate("federation CA", ca_key, ca_name, ca_key, True)
    server = certificate("127.0.0.1", server_key, ca.subject, ca_key, False)
    paths = {name: folder / f"{name}.pem" for name in ("ca", "cert", "key")}
    paths["ca"].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths["cert"].write_bytes(server.public_bytes(serialization.Encoding.PEM))
    paths["key"].write_bytes(
        server_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    paths["federation"] = folder / "federation.key"
    paths["federation"].write_text("9f" * 32 + "\n")
    paths["other"] = folder / "other.key"
    paths["other"].write_text("a1" * 32 + "\n")
    return paths


def test_over_tls_with_a_federation_key_the_wire_carries_nothing_readable(
    tmp_path: Path, sites: list[Path], tls: dict[str, Path]
) -> None:
    answer, proxy = run(
        tmp_path, sites, "--rounds", "2", "--tls-cert", str(tls["cert"]), "--tls-key",
        str(tls["key"]), "--tls-ca", str(tls["ca"]), "--key-file", str(tls["federation"]),
        site_args=("--tls-ca", str(tls["ca"]), "--key-file", str(tls["federation"])),
    )  # fmt: skip
    assert answer["rounds"][-1]["accuracy"] > 0.93
    sent = bytes(proxy.upstream)
    for path in sites:  # what plain training shows on the wire (a site's sums) is encrypted
        trained = Site(pd.read_parquet(path), "target", "x").X
        assert statistics(trained)[1].tobytes() not in sent
    assert b"hospital-0" not in sent  # not even a site's name
    with Registry.from_settings(Settings(home=tmp_path)) as registry:
        lineage = registry.get_version("bc", 1).lineage
    assert lineage["federated"]["transport"] == {  # type: ignore[index]
        "engine": "grpc",
        "tls": True,
        "sites_authenticated": True,
    }
    assert "9f9f" not in json.dumps(lineage)  # the key is nowhere in what is kept


def test_the_server_and_the_sites_each_refuse_a_party_without_the_federation_key(
    tmp_path: Path, sites: list[Path], tls: dict[str, Path]
) -> None:
    """A site without the key is refused before any model is sent; a site whose key differs
    refuses the server before sending anything."""
    port = free_port()
    server = federated_server(tmp_path, port, 2, 2, "--key-file", str(tls["federation"]))
    members = [
        federated_site(tmp_path, port, sites[i], f"hospital-{i}", *extra)
        for i, extra in ((0, ("--key-file", str(tls["federation"]))), (1, ()))
    ]
    err = settle(server, *members)
    assert server.returncode == 2, err[-2000:]
    said = " ".join(err.split())  # the console wraps lines
    assert "a site calling itself 'hospital-1' did not prove it holds the federation key" in said
    assert "Traceback" not in err

    port = free_port()
    server = federated_server(tmp_path, port, 1, 1, "--key-file", str(tls["federation"]))
    stranger = federated_site(
        tmp_path, port, sites[0], "hospital-0", "--key-file", str(tls["other"])
    )
    site_err = settle(stranger, server)
    assert stranger.returncode == 8, site_err[-2000:]
    said = " ".join(site_err.split())
    assert "the server did not prove it holds the federation key; nothing was sent" in said
    assert "Traceback" not in site_err


def test_sites_started_before_their_server_wait_for_it_and_a_server_short_of_sites_says_so(
    tmp_path: Path, sites: list[Path]
) -> None:
    """A site that starts first waits for the server (--wait), as a run whose parts start in any
    order needs; a server that too few sites joined says how many came, not that a round failed."""
    port = free_port()
    members = [federated_site(tmp_path, port, sites[i], f"hospital-{i}") for i in (0, 1)]
    for member in members:  # each has tried the address where no server listens yet
        assert member.stderr is not None
        assert "joining" in member.stderr.readline()
    server = federated_server(tmp_path, port, 2, 1)
    err = settle(server, *members)
    assert server.returncode == 0, err[-2000:]
    assert [m.returncode for m in members] == [0, 0]

    port = free_port()
    server = federated_server(tmp_path, port, 2, 1, wait="3")
    lone = federated_site(tmp_path, port, sites[0], "hospital-0")
    err = settle(server, lone)
    assert server.returncode == 9, err[-2000:]
    said = " ".join(err.split())
    assert "1 of the 2 site(s) needed had joined within 3 s" in said, said[-1000:]
    assert "Traceback" not in err

    stranded = federated_site(tmp_path, free_port(), sites[0], "hospital-0", wait="2")
    err = settle(stranded)
    assert stranded.returncode == 9, err[-2000:]
    said = " ".join(err.split())
    assert "could not be reached within 2 s" in said, said[-1000:]
    assert "give it longer with --wait" in said


def test_under_secure_aggregation_the_server_sees_only_sums(
    tmp_path: Path, sites: list[Path]
) -> None:
    answer, proxy = run(
        tmp_path, sites, "--rounds", "3", "--secure-aggregation",
        site_args=("--require-secure-aggregation",),
    )  # fmt: skip
    assert answer["secure_aggregation"] is True
    assert [r["round"] for r in answer["rounds"]] == [1, 2, 3]
    assert answer["rounds"][-1]["accuracy"] > 0.93
    assert all(r["update_norms"] == {} for r in answer["rounds"])  # no site's norm either

    # what each site contributes (its mean and spread, then its updates) crosses only masked:
    # neither the sums plain training sends, nor the scaled mean or spread, nor a raw value
    sent = bytes(proxy.upstream)
    frames = [pd.read_parquet(p).drop(columns="target") for p in sites]
    trained = [Site(pd.read_parquet(p), "target", "x").X for p in sites]
    exponents = np.max([magnitudes(X) for X in trained], axis=0)
    mean, _ = standardiser([statistics(X) for X in trained])
    deviations = np.max([magnitudes(X - mean) for X in trained], axis=0)
    for X, frame in zip(trained, frames, strict=True):
        assert statistics(X)[1].tobytes() not in sent
        assert scaled_mean(X, exponents)[0].tobytes() not in sent
        assert scaled_spread(X, mean, deviations)[0].tobytes() not in sent
        values = [v for v in np.unique(frame.to_numpy(dtype=np.float64)) if v != int(v)]
        assert not [v for v in values if np.float64(v).tobytes() in sent]

    with Registry.from_settings(Settings(home=tmp_path)) as registry:
        version = registry.get_version("bc", 1)
        assert version.lineage["federated"]["settings"]["secure"] is True  # type: ignore[index]
        served = registry.load("bc", 1)
    everything = pd.concat([pd.read_parquet(p) for p in sites])
    columns = served.signature.validate_frame(everything.drop(columns="target"))
    predicted = served.predictor.predict(columns).argmax(axis=1)
    assert np.mean(predicted == everything["target"].to_numpy()) > 0.93


WORKER = """
import json, sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from shipyard.core import Settings
from shipyard.retraining import load_specs
from shipyard.worker import Worker

home, config = Path(sys.argv[1]), Path(sys.argv[2])
now = [datetime.now(UTC)]
with Worker(Settings(home=home), specs=load_specs(config), batch_jobs={},
            code_dir=config.parent, clock=lambda: now[0]) as worker:
    worker.start_schedule()
    now[0] += timedelta(minutes=2)  # the schedule's minute has come
    print(json.dumps([[job.kind, job.status] for job in worker.run_until_idle()]))
"""


def test_a_retraining_policy_starts_a_federated_run_that_the_staying_sites_join(
    tmp_path: Path, sites: list[Path]
) -> None:
    """Sites started with --stay take part in the first run, then in the run a worker starts
    when the model's schedule comes round; the candidate and the champion are scored on the
    sites' holdouts, the gates read those scores, and the candidate is canaried."""
    port = free_port()
    members = [
        shipyard(tmp_path, "federated", "site", "--server", f"127.0.0.1:{port}", "--data",
                 str(path), "--name", f"hospital-{i}", "--label", "target", "--stay",
                 log=tmp_path / f"site-{i}.log")
        for i, path in enumerate(sites)
    ]  # fmt: skip
    try:
        first = shipyard(
            tmp_path, "federated", "server", "bc", "--address", f"127.0.0.1:{port}",
            "--min-sites", "3", "--rounds", "2", "--wait", "60", "--json",
        )  # fmt: skip
        _, err = first.communicate(timeout=180)
        assert first.returncode == 0, err[-3000:]
        with Registry.from_settings(Settings(home=tmp_path)) as registry:
            registry.deploy("bc", 1)
        config = tmp_path / "shipyard.yaml"
        config.write_text(
            "models:\n  bc:\n"
            f"    federated: {{address: '127.0.0.1:{port}', rounds: 3, min_sites: 3, wait: 60s}}\n"
            "    gates: ['accuracy >= 0.9', 'auc >= champion - 0.05']\n"
            "    policies: [{schedule: '* * * * *'}]\n"
        )
        env = {**os.environ, "SHIPYARD_HOME": str(tmp_path)}
        env.pop("SHIPYARD_DATABASE_URL", None)
        worker = subprocess.run(
            [sys.executable, "-c", WORKER, str(tmp_path), str(config)], env=env,
            capture_output=True, text=True, timeout=240,
        )  # fmt: skip
        assert worker.returncode == 0, worker.stderr[-3000:]
        assert ["retrain", "done"] in json.loads(worker.stdout.strip().splitlines()[-1])
        assert all(member.poll() is None for member in members)  # still there for the next
    finally:
        for member in members:
            member.kill()
            member.wait(timeout=30)

    with Registry.from_settings(Settings(home=tmp_path)) as registry:
        candidate = registry.get_version("bc", 2)
        deployment = registry.deployment("bc")
        assert deployment is not None
        assert "canary" in deployment.describe()
        history = pipeline_history(registry, "bc")
    assert candidate.lineage["pipeline"] == history[0]["id"]  # type: ignore[index]
    assert candidate.lineage["trigger"]["kind"] == "schedule"  # type: ignore[index]
    assert set(candidate.lineage["federated"]["sites"]) == {  # type: ignore[index]
        "hospital-0",
        "hospital-1",
        "hospital-2",
    }
    validate = next(s for s in history[0]["steps"] if s["step"] == "validate")
    assert validate["status"] == "passed"
    scored = validate["evidence"]
    assert scored["champion"]["auc"] > 0.9  # the champion, scored on the sites' holdouts
    assert scored["candidate"]["accuracy"] >= 0.9
    assert [g["passed"] for g in scored["gates"]] == [True, True]
    assert scored["gates"][1]["bar"] == pytest.approx(scored["champion"]["auc"] - 0.05)
    # the run names the data each site trained and was scored on, as the site's own data
    # versions would (the same SHA-256), while the rows stayed at the sites
    with Registry.from_settings(Settings(home=tmp_path)) as registry:
        tracker = Tracker(registry.database, registry.artifacts)
        datasets = tracker.get(candidate.run_id or "").datasets
        assert tracker.data.list_versions() == []  # nothing was copied here
    for i, path in enumerate(sites):
        site = Site(pd.read_parquet(path), "target", f"hospital-{i}")
        for role in ("train", "holdout"):
            kept = datasets[f"hospital-{i}/{role}"]
            assert kept["sha256"] == site.data[role]["sha256"]
            assert kept["rows"] == site.data[role]["rows"]
            assert kept["snapshot"] is None
            assert kept["kept_by"] == f"site hospital-{i}"


def test_a_federated_retraining_spec_keeps_to_what_the_sites_can_do() -> None:
    base = {"federated": {"rounds": 3}}
    assert RetrainSpec(name="bc", **base).federated.rounds == 3  # type: ignore[union-attr]
    for body, problem in (
        ({}, "train .module:function. or federated"),
        ({**base, "train": "m:f"}, "train .module:function. or federated"),
        ({**base, "data": {"source": "parquet", "path": "x.parquet"}}, "drop data"),
        ({**base, "gates": ["f1 >= 0.8"]}, "the sites report accuracy, auc, log_loss"),
        ({"federated": {"wait": "soon"}}, "wait"),
        ({"federated": {"tls_cert": "server.pem"}}, "TLS needs both tls_cert and tls_key"),
    ):
        with pytest.raises(ValidationError, match=problem):
            RetrainSpec(name="bc", **body)


def test_ten_sites_on_flowers_simulation_engine_with_and_without_secure_aggregation(
    sites: list[Path],
) -> None:
    """Ten virtual sites in this process (Ray). SecAgg+ quantises what each site sends with
    stochastic rounding (Flower's), so its model is plain averaging's up to that: the pooled
    mean and variance within one quantisation step (2**-21 of a feature's magnitude) per site,
    and the model's scores within what that moves twenty L-BFGS steps a round."""
    pytest.importorskip("ray", reason="Flower's simulation engine runs on Ray")
    everything = pd.concat([pd.read_parquet(p) for p in sites]).reset_index(drop=True)
    parts = np.array_split(np.arange(len(everything)), 10)  # sorted by radius: non-IID
    members = [Site(everything.iloc[p], "target", f"clinic-{i}") for i, p in enumerate(parts)]
    plain = simulate(members, Federated(rounds=3, min_sites=10))
    secure = simulate(members, Federated(rounds=3, min_sites=10, secure=True))
    assert set(plain.sites) == set(secure.sites) == {f"clinic-{i}" for i in range(10)}
    assert plain.final["accuracy"] > 0.9
    assert secure.final["accuracy"] > 0.9
    unit = np.exp2(np.max([magnitudes(m.X) for m in members], axis=0))
    spread = np.exp2(np.max([magnitudes(m.X - plain.mean) for m in members], axis=0))
    step = 10 * 2.0**-21
    assert np.all(np.abs(secure.mean - plain.mean) <= step * unit)
    assert np.all(np.abs(secure.scale**2 - plain.scale**2) <= 3 * step * spread**2)
    assert secure.final["loss"] == pytest.approx(plain.final["loss"], rel=0.05)
    assert secure.final["accuracy"] == pytest.approx(plain.final["accuracy"], abs=0.02)
    assert all(r["update_norms"] == {} for r in secure.rounds)
    assert all(len(r["update_norms"]) == 10 for r in plain.rounds)


def test_the_secure_standardiser_survives_quantisation() -> None:
    """Through SecAgg+'s quantisation (values rounded to steps of 2**-21 of their range), the
    two passes give the pooled mean and spread: a feature at 2000 +- 3 keeps its spread, as
    one at 600 +- 50 or 0.1 +- 0.02 does; a constant feature keeps scale 1."""
    rng = np.random.default_rng(5)
    parts = [
        np.column_stack([rng.normal(600 + 100 * i, 50, n), rng.normal(0.1, 0.02, n),
                         np.full(n, 7.0), rng.normal(2000, 3, n)])
        for i, n in enumerate((40, 90, 250))
    ]  # fmt: skip
    rows = np.array([len(X) for X in parts], dtype=np.float64)

    def summed(values: list[np.ndarray]) -> np.ndarray:  # what unmasking gives
        quantised = [np.round(v * 2.0**21) / 2.0**21 for v in values]
        return np.sum([q * n for q, n in zip(quantised, rows, strict=True)], axis=0) / rows.sum()

    exponents = np.max([magnitudes(X) for X in parts], axis=0)
    mean = summed([scaled_mean(X, exponents)[0] for X in parts]) * np.exp2(exponents)
    deviations = np.max([magnitudes(X - mean) for X in parts], axis=0)
    scale = secure_standardiser(
        mean, summed([scaled_spread(X, mean, deviations)[0] for X in parts]), deviations
    )
    exact_mean, exact_scale = standardiser([statistics(X) for X in parts])
    np.testing.assert_allclose(mean, exact_mean, rtol=1e-6)
    np.testing.assert_allclose(scale[[0, 1, 3]], exact_scale[[0, 1, 3]], rtol=1e-4)
    assert scale[2] == 1.0


def test_a_champion_is_scored_at_the_sites_only_in_its_own_columns_order() -> None:
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from shipyard.federated import champion_parameters

    rng = np.random.default_rng(0)
    frame = pd.DataFrame(rng.normal(size=(50, 3)), columns=["a", "b", "c"])
    labels = (frame["a"] > 0).astype(int)
    fitted = make_pipeline(StandardScaler(), LogisticRegression()).fit(frame, labels)
    found = champion_parameters(fitted, ["a", "b", "c"])
    assert (found.model, found.classes) == ("logistic", ["0", "1"])
    np.testing.assert_allclose(found.parameters[2], fitted[-1].coef_[0])
    with pytest.raises(InvalidInput, match="not in its signature's order"):
        champion_parameters(fitted, ["c", "b", "a"])
    forest = RandomForestClassifier(n_estimators=2).fit(frame, labels)
    with pytest.raises(InvalidInput, match="cannot be scored on the sites' holdouts"):
        champion_parameters(forest, ["a", "b", "c"])


def test_a_champion_the_sites_cannot_score_stops_a_federated_retrain_before_it_starts(
    tmp_path: Path,
) -> None:
    """Gates that compare with the champion need it scored at the sites; a network served
    through its wrapper cannot be, so the retrain stops before any round, saying so."""
    torch = pytest.importorskip("torch", reason="the champion here is a PyTorch network")
    from shipyard.logstore import LogReader
    from shipyard.retraining import Pipeline
    from shipyard.runtime import TorchModel
    from shipyard.tracking import Tracker

    sample = pd.DataFrame(np.random.default_rng(0).normal(size=(20, 3)), columns=["a", "b", "c"])
    spec = RetrainSpec(name="bc", federated={"rounds": 1}, gates=["auc >= champion - 0.01"])
    started: list[Any] = []
    with Registry.from_settings(Settings(home=tmp_path)) as registry:
        registry.register(
            TorchModel(torch.nn.Linear(3, 1), classes=[0, 1]), name="bc",
            sample=sample.astype("float32"), aliases=["production"],
        )  # fmt: skip
        pipeline = Pipeline(
            registry, Tracker(registry.database, registry.artifacts),
            LogReader(registry.artifacts), spec, federated=lambda *given: started.append(given),
        )  # fmt: skip
        with pytest.raises(InvalidInput, match=r"bc:1 \(torch\) cannot be scored on the sites"):
            pipeline.train_and_canary({"kind": "manual"})
        assert pipeline_history(registry, "bc")[0]["status"] == "failed"
    assert started == []


def test_a_site_that_requires_secure_aggregation_refuses_a_plain_server(
    tmp_path: Path, sites: list[Path]
) -> None:
    port = free_port()
    server = federated_server(tmp_path, port, 1, 1)
    careful = federated_site(tmp_path, port, sites[0], "hospital-0", "--require-secure-aggregation")
    err = settle(careful, server)
    assert careful.returncode == 8, err[-2000:]
    said = " ".join(err.split())
    assert "the server asked for statistics in the clear" in said
    assert "nothing was sent" in said
    assert "Traceback" not in err


def test_secure_aggregation_needs_three_sites() -> None:
    with pytest.raises(InvalidInput, match="at least 3 sites"):
        simulate([], Federated(min_sites=2, secure=True))


def test_sites_train_a_pytorch_network_that_is_registered_and_served(
    tmp_path: Path, sites: list[Path]
) -> None:
    pytest.importorskip("torch", reason="a network needs PyTorch: pip install 'shipyard[torch]'")
    answer, _ = run(
        tmp_path, sites, "--rounds", "4", "--model", "mlp:16", "--local-steps", "30"
    )  # fmt: skip
    assert answer["rounds"][-1]["accuracy"] > 0.9
    with Registry.from_settings(Settings(home=tmp_path)) as registry:
        version = registry.get_version("bc", 1)
        assert version.flavour == "torch"
        assert version.params["model"] == "mlp:16"
        served = registry.load("bc", 1)
    everything = pd.concat([pd.read_parquet(p) for p in sites])
    columns = served.signature.validate_frame(everything.drop(columns="target"))
    predicted = served.predictor.predict(columns).argmax(axis=1)
    assert np.mean(predicted == everything["target"].to_numpy()) > 0.9


def test_a_networks_standardisation_folds_into_its_first_layer() -> None:
    """What is registered answers what the sites scored: the first layer takes raw values."""
    torch = pytest.importorskip("torch", reason="a network needs PyTorch")
    from shipyard.federated._model import Network

    rng = np.random.default_rng(3)
    network = Network((8, 4))
    weights = network.initial(5, rng)
    mean, scale = rng.normal(size=5) * 10, rng.uniform(0.5, 20, size=5)
    X = rng.normal(size=(50, 5)) * scale + mean
    wrapped = network.estimator([f"x{i}" for i in range(5)], [0, 1], mean, scale, weights, 50)
    with torch.no_grad():
        logits = wrapped.module(torch.from_numpy(X.astype(np.float32))).numpy().reshape(-1)
    np.testing.assert_allclose(logits, network.margin((X - mean) / scale, weights), atol=1e-4)


def test_epsilon_is_the_gaussian_mechanisms_renyi_bound() -> None:
    """Rounds of the Gaussian mechanism with noise multiplier s cost alpha T / (2 s^2) of Renyi
    DP; the best order gives epsilon = T / (2 s^2) + sqrt(2 T log(1/delta)) / s."""
    for noise, rounds in ((0.8, 10), (1.1, 50), (2.0, 100), (5.0, 3)):
        closed = rounds / (2 * noise**2) + math.sqrt(2 * rounds * math.log(1e5)) / noise
        found = epsilon(noise, rounds, 1e-5)
        assert closed <= found <= closed * 1.005
    assert epsilon(1.0, 20, 1e-5) < epsilon(1.0, 40, 1e-5)  # more rounds spend more
    assert epsilon(2.0, 20, 1e-5) < epsilon(1.0, 20, 1e-5)  # more noise spends less
    assert epsilon(0.0, 1, 1e-5) == math.inf


def test_clipping_bounds_an_update_and_the_noise_has_its_scale() -> None:
    rng = np.random.default_rng(0)
    update = [np.full(1000, 3.0), np.array([4.0])]
    clipped, norm = clip_and_noise(update, clip=1.0, noise=0.0, rng=rng)
    assert norm == pytest.approx(math.sqrt(1000 * 9 + 16))
    assert math.sqrt(sum(float(np.sum(u**2)) for u in clipped)) == pytest.approx(1.0)
    small = [np.array([0.3, 0.4])]
    kept, _ = clip_and_noise(small, clip=1.0, noise=0.0, rng=rng)
    np.testing.assert_allclose(kept[0], small[0])  # within the clip: unchanged
    noisy, _ = clip_and_noise([np.zeros(200_000)], clip=2.0, noise=0.5, rng=rng)
    assert np.std(noisy[0]) == pytest.approx(1.0, rel=0.01)  # noise * clip


def test_a_site_refuses_data_it_cannot_train_on(sites: list[Path]) -> None:
    frame = pd.read_parquet(sites[0])
    with pytest.raises(InvalidInput, match="no label column 'outcome'"):
        Site(frame, "outcome", "a")
    with pytest.raises(InvalidInput, match="numeric features"):
        Site(frame.assign(ward="north"), "target", "a")
    with pytest.raises(InvalidInput, match="missing values"):
        Site(frame.assign(**{"mean radius": np.nan}), "target", "a")


def test_sites_whose_columns_differ_are_refused_by_the_server(
    tmp_path: Path, sites: list[Path]
) -> None:
    other = tmp_path / "other.parquet"
    pd.read_parquet(sites[1]).drop(columns="worst area").to_parquet(other)
    port = free_port()
    server = shipyard(
        tmp_path, "federated", "server", "bc", "--address", f"127.0.0.1:{port}",
        "--min-sites", "2", "--rounds", "2", "--wait", "60",
    )  # fmt: skip
    members = [
        shipyard(tmp_path, "federated", "site", "--server", f"127.0.0.1:{port}", "--data",
                 str(path), "--name", name, "--label", "target", "--wait", "60")
        for name, path in (("a", sites[0]), ("b", other))
    ]  # fmt: skip
    err = settle(server, *members)
    assert server.returncode == 2, err[-2000:]
    assert "every site needs the same feature columns" in err
    assert "Traceback" not in err
