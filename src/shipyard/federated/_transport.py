"""What protects a federated run in transit: TLS for the connection (the server's certificate
and key; the sites trust its CA) and a shared key that the server and every site prove they
hold before anything derived from a site's rows is sent (an HMAC of a fresh challenge, so the
key itself never crosses the wire)."""

from __future__ import annotations

from pathlib import Path

from shipyard.core.errors import InvalidInput

__all__ = ["read_key", "server_certificates", "trusted_certificates"]

MIN_KEY_BYTES = 16


def read_key(path: Path) -> bytes:
    """A federation key file's bytes (one trailing newline ignored)."""
    data = _read(path, "the federation key")
    key = data[:-1] if data.endswith(b"\n") else data
    if len(key) < MIN_KEY_BYTES:
        raise InvalidInput(
            f"{path} holds {len(key)} byte(s); a federation key needs at least {MIN_KEY_BYTES} "
            "(make one with: openssl rand -hex 32 > federation.key)"
        )
    return key


def server_certificates(
    certificate: Path, private_key: Path, ca: Path | None = None
) -> tuple[bytes, bytes, bytes]:
    """(CA, certificate, private key) as Flower's gRPC server takes them; without a CA, the
    certificate stands for it (the sites are not asked for certificates of their own)."""
    cert = _pem(certificate, "CERTIFICATE", "the server's certificate")
    key = _pem(private_key, "PRIVATE KEY", "the server's private key")
    return (_pem(ca, "CERTIFICATE", "the CA certificate") if ca else cert, cert, key)


def trusted_certificates(path: Path) -> bytes:
    """The PEM certificates a site trusts the server's certificate by."""
    return _pem(path, "CERTIFICATE", "the CA certificate")


def _pem(path: Path, kind: str, what: str) -> bytes:
    data = _read(path, what)
    if b"-----BEGIN" not in data or kind.encode() not in data:
        raise InvalidInput(f"{path} is not a PEM file with a {kind} ({what})")
    return data


def _read(path: Path, what: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as error:
        raise InvalidInput(f"cannot read {what} at {path}: {error.strerror}") from None
