"""Create shipyard's first admin API key once and keep its token in a Kubernetes Secret.

The chart's post-install / post-upgrade hook Job runs it in the shipyard image:

    python /opt/bootstrap/bootstrap-admin-key.py SECRET [--label KEY=VALUE ...]

When the Secret exists it does nothing (the key was made before). Otherwise it creates the key
with `shipyard keys create --scope admin` against the release's database and stores the token
as the Secret's `token` (the key's id as `key-id`) through the Kubernetes API, with the pod's
service account. If the Secret cannot be stored, the key is revoked again: no admin key is
left that nobody holds. Exit status 0 when the Secret exists at the end, 1 otherwise.
"""

from __future__ import annotations

import argparse
import json
import os
import ssl
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx

SERVICE_ACCOUNT = Path("/var/run/secrets/kubernetes.io/serviceaccount")


def _api(account: Path) -> tuple[httpx.Client, str]:
    """A client of the cluster's API server with the pod's token, and the pod's namespace."""
    host = os.environ["KUBERNETES_SERVICE_HOST"]
    port = os.environ["KUBERNETES_SERVICE_PORT"]
    if ":" in host:  # an IPv6 address
        host = f"[{host}]"
    token = (account / "token").read_text().strip()
    tls = ssl.create_default_context(cafile=str(account / "ca.crt"))
    client = httpx.Client(
        base_url=f"https://{host}:{port}",
        headers={"Authorization": f"Bearer {token}"},
        verify=tls,
        timeout=30.0,
    )
    return client, (account / "namespace").read_text().strip()


def _shipyard(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["shipyard", *args], capture_output=True, text=True, check=False)


def _secret(
    name: str, namespace: str, labels: dict[str, str], key: dict[str, Any]
) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "type": "Opaque",
        "metadata": {"name": name, "namespace": namespace, "labels": labels},
        "stringData": {"token": key["token"], "key-id": key["key"]["id"]},
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("secret", help="the Secret that holds the admin key's token")
    parser.add_argument("--label", action="append", default=[], help="KEY=VALUE on the Secret")
    parser.add_argument(
        "--service-account", type=Path, default=SERVICE_ACCOUNT, help="the pod's token folder"
    )
    args = parser.parse_args(argv)
    labels = dict(label.split("=", 1) for label in args.label)
    api, namespace = _api(args.service_account)
    where = f"secret {namespace}/{args.secret}"
    secrets = f"/api/v1/namespaces/{namespace}/secrets"
    with api:
        found = api.get(f"{secrets}/{args.secret}")
        if found.status_code == 200:
            print(f"{where} exists: the bootstrap admin key was made before; nothing to do")
            return 0
        if found.status_code != 404:
            print(
                f"cannot read {where}: HTTP {found.status_code} {found.text[:500]}", file=sys.stderr
            )
            return 1
        made = _shipyard(
            "keys", "create", "--scope", "admin", "--name", "bootstrap-admin", "--json"
        )
        if made.returncode != 0:
            print(
                f"`shipyard keys create` failed ({made.returncode}): {made.stderr}", file=sys.stderr
            )
            return 1
        key = json.loads(made.stdout)
        key_id = key["key"]["id"]
        try:
            stored = api.post(secrets, json=_secret(args.secret, namespace, labels, key))
            problem = (
                None
                if stored.status_code == 201
                else f"HTTP {stored.status_code} {stored.text[:500]}"
            )
        except httpx.HTTPError as error:
            problem = f"{type(error).__name__}: {error}"
    if problem is None:
        print(f"created admin key {key_id}; its token is in {where} (data key `token`)")
        return 0
    revoked = _shipyard("keys", "revoke", key_id)
    outcome = "revoked it" if revoked.returncode == 0 else f"could not revoke it: {revoked.stderr}"
    print(f"cannot store admin key {key_id} in {where}: {problem}; {outcome}", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
