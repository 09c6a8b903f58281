"""The chart's bootstrap hook (deploy/helm/shipyard/files/bootstrap-admin-key.py), run as the Job
runs it: a real `shipyard` on a SQLite home, against a Kubernetes API of the test's own on
loopback, over TLS with a CA of its own, checking the service account's token."""

from __future__ import annotations

import json
import os
import shutil
import ssl
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "deploy/helm/shipyard/files/bootstrap-admin-key.py"
TOKEN = "service-account-token"
SECRETS = "/api/v1/namespaces/ml/secrets"


@dataclass
class FakeKubernetes:
    """The Secrets API of one namespace: what was stored, and what was asked."""

    port: int
    account: Path
    secrets: dict[str, dict[str, Any]] = field(default_factory=dict)
    refuse_writes: bool = False
    requests: list[str] = field(default_factory=list)


@pytest.fixture
def kubernetes(tmp_path: Path) -> Iterator[FakeKubernetes]:
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("openssl is not on the PATH; it makes the fake API server's certificate")
    account = tmp_path / "serviceaccount"
    account.mkdir()
    subprocess.run(
        [openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
         "-keyout", str(tmp_path / "key.pem"), "-out", str(account / "ca.crt")],
        check=True, capture_output=True,
    )  # fmt: skip
    (account / "token").write_text(TOKEN + "\n")
    (account / "namespace").write_text("ml")
    state = FakeKubernetes(port=0, account=account)

    class Api(BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:
            pass

        def _answer(self, status: int, body: dict[str, Any]) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _allowed(self) -> bool:
            state.requests.append(f"{self.command} {self.path}")
            if self.headers.get("Authorization") != f"Bearer {TOKEN}":
                self._answer(401, {"kind": "Status", "reason": "Unauthorized"})
                return False
            return True

        def do_GET(self) -> None:
            if not self._allowed():
                return
            name = self.path.removeprefix(f"{SECRETS}/")
            if name in state.secrets:
                self._answer(200, state.secrets[name])
            else:
                self._answer(404, {"kind": "Status", "reason": "NotFound"})

        def do_POST(self) -> None:
            if not self._allowed():
                return
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            if state.refuse_writes or self.path != SECRETS:
                self._answer(403, {"kind": "Status", "reason": "Forbidden"})
                return
            state.secrets[body["metadata"]["name"]] = body
            self._answer(201, body)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Api)
    tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    tls.load_cert_chain(account / "ca.crt", tmp_path / "key.pem")
    server.socket = tls.wrap_socket(server.socket, server_side=True)
    state.port = server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield state
    server.shutdown()
    server.server_close()
    thread.join()


def environment(kubernetes: FakeKubernetes, home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SHIPYARD_")}
    return {
        **env,
        # the `shipyard` the script runs: this environment's
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}",
        "KUBERNETES_SERVICE_HOST": "127.0.0.1",
        "KUBERNETES_SERVICE_PORT": str(kubernetes.port),
        "SHIPYARD_HOME": str(home),
        "SHIPYARD_ACTOR": "helm-bootstrap",
    }


def bootstrap(kubernetes: FakeKubernetes, home: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(SCRIPT), "shipyard-admin-key", "--label", "app.kubernetes.io/name=shipyard",
         "--service-account", str(kubernetes.account)],
        env=environment(kubernetes, home), capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip


def keys(kubernetes: FakeKubernetes, home: Path) -> list[dict[str, Any]]:
    listed = subprocess.run(
        [sys.executable, "-m", "shipyard", "keys", "list", "--all", "--json"],
        env=environment(kubernetes, home), capture_output=True, text=True, timeout=120, check=True,
    )  # fmt: skip
    found: list[dict[str, Any]] = json.loads(listed.stdout)
    return found


def test_the_first_run_makes_an_admin_key_and_keeps_its_token_in_the_secret(
    kubernetes: FakeKubernetes, tmp_path: Path
) -> None:
    ran = bootstrap(kubernetes, tmp_path / "home")
    assert ran.returncode == 0, ran.stderr
    secret = kubernetes.secrets["shipyard-admin-key"]
    assert secret["metadata"] == {
        "name": "shipyard-admin-key",
        "namespace": "ml",
        "labels": {"app.kubernetes.io/name": "shipyard"},
    }
    (key,) = keys(kubernetes, tmp_path / "home")
    assert (key["scope"], key["model"], key["revoked_at"]) == ("admin", None, None)
    assert secret["stringData"]["key-id"] == key["id"]
    assert secret["stringData"]["token"].startswith(f"sy_{key['id']}_")
    assert key["created_by"] == "helm-bootstrap"
    assert f"created admin key {key['id']}" in ran.stdout


def test_a_second_run_finds_the_secret_and_makes_no_other_key(
    kubernetes: FakeKubernetes, tmp_path: Path
) -> None:
    assert bootstrap(kubernetes, tmp_path / "home").returncode == 0
    kubernetes.requests.clear()
    again = bootstrap(kubernetes, tmp_path / "home")
    assert again.returncode == 0, again.stderr
    assert "exists" in again.stdout
    assert kubernetes.requests == [f"GET {SECRETS}/shipyard-admin-key"]
    assert len(keys(kubernetes, tmp_path / "home")) == 1


def test_a_key_whose_secret_cannot_be_stored_is_revoked_again(
    kubernetes: FakeKubernetes, tmp_path: Path
) -> None:
    kubernetes.refuse_writes = True
    ran = bootstrap(kubernetes, tmp_path / "home")
    assert ran.returncode == 1
    (key,) = keys(kubernetes, tmp_path / "home")
    assert key["revoked_at"] is not None  # no admin key is left that nobody holds
    assert f"cannot store admin key {key['id']}" in ran.stderr
    assert "revoked it" in ran.stderr
    assert "HTTP 403" in ran.stderr
