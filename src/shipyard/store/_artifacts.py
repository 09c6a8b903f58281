"""The artifact store: files under one fsspec root, each checked against its SHA-256 on load.

A remote root's failures reach callers as shipyard's errors, saying what to fix: access
refused or no credentials is a `ConfigurationError`, a store that cannot be reached a
`BackendUnavailable`. S3 credentials and endpoint come from the environment, as boto reads
them (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_PROFILE`, `AWS_ENDPOINT_URL` for an
S3-compatible store such as MinIO or SeaweedFS).
"""

from __future__ import annotations

import hashlib
import importlib
import os
import shutil
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from shipyard.core.errors import (
    ArtifactCorrupted,
    BackendUnavailable,
    ConfigurationError,
    ShipyardError,
    missing_extra,
)

__all__ = ["ArtifactStore", "StoredFile", "sha256_file"]

_CHUNK = 1 << 20
_EXTRAS = {
    "s3": ("s3fs", "s3"),
    "s3a": ("s3fs", "s3"),
    "gs": ("gcsfs", "gcs"),
    "az": ("adlfs", "azure"),
}


@dataclass(frozen=True)
class StoredFile:
    path: str
    sha256: str
    size: int


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(_CHUNK), b""):
            digest.update(block)
    return digest.hexdigest()


class ArtifactStore:
    """Files under a root that is a local folder or any fsspec URL (`s3://bucket/prefix`, ...).

    Paths given to the methods are relative to the root and use `/`.
    """

    def __init__(self, root: str, *, cache_dir: Path | None = None) -> None:
        self.root = root.rstrip("/")
        self.cache_dir = cache_dir
        self._fs: Any = None
        self._base = ""

    @property
    def fs(self) -> Any:
        if self._fs is None:
            import fsspec

            try:
                # no listings cache: other processes (a server's log flusher, other replicas,
                # the worker) add files, and a cached listing would hide them from this one
                self._fs, self._base = fsspec.core.url_to_fs(self.root, use_listings_cache=False)
            except ImportError:
                scheme = self.root.split("://", 1)[0]
                package, extra = _EXTRAS.get(scheme, (scheme, scheme))
                raise missing_extra(package, extra, f"artifact roots on {scheme}://") from None
            except ValueError as error:
                raise ConfigurationError(
                    f"cannot use artifact root {self.root!r}: {error}; set SHIPYARD_ARTIFACT_ROOT "
                    "to a folder or an fsspec URL such as s3://bucket/prefix"
                ) from None
        return self._fs

    @property
    def is_local(self) -> bool:
        protocol = self.fs.protocol
        return "file" in (protocol if isinstance(protocol, tuple) else (protocol,))

    def _full(self, path: str) -> str:
        _ = self.fs
        return f"{self._base}/{path.lstrip('/')}"

    @contextmanager
    def failures_explained(self, doing: str) -> Iterator[None]:
        """Raise the storage backend's failures while `doing` (e.g. "write models/m/1/x") as
        shipyard's errors that say what to fix; a missing file (FileNotFoundError) and errors
        that are not about reaching the store pass through as they are."""
        try:
            yield
        except (ShipyardError, FileNotFoundError):
            raise
        except Exception as error:
            kind = _failure_kind(error)
            if kind is None:
                raise
            reason = _reason(error)
            remote = not self.is_local
            if kind == "unreachable":
                where = " and that AWS_ENDPOINT_URL names it (an S3-compatible store)"
                raise BackendUnavailable(
                    f"the artifact store {self.root} cannot be reached to {doing} ({reason}); "
                    f"check that it is up{where if remote else ''}, then retry",
                    retry_after=5.0,
                ) from None
            if kind == "credentials":
                raise ConfigurationError(
                    f"no credentials for the artifact store {self.root} ({reason}); set "
                    "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (or AWS_PROFILE) where shipyard "
                    "runs"
                ) from None
            fix = (
                "check the credentials (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY or AWS_PROFILE), "
                "that they may read, write and list the bucket, and AWS_ENDPOINT_URL"
                if remote
                else "check that the user running shipyard may read and write that folder"
            )
            raise ConfigurationError(
                f"the artifact store {self.root} refused to {doing} ({reason}); {fix}"
            ) from None

    def local_path(self, path: str) -> Path:
        """The local filesystem path of `path` (only for a local root)."""
        return Path(self._full(path))

    def write_file(self, path: str, source: Path) -> StoredFile:
        """Copy a local file into the store, hashing it on the way."""
        digest = hashlib.sha256()
        size = 0
        full = self._full(path)
        with self.failures_explained(f"write {path}"):
            self.fs.makedirs(full.rsplit("/", 1)[0], exist_ok=True)
            with source.open("rb") as src, self.fs.open(full, "wb") as dst:
                for block in iter(lambda: src.read(_CHUNK), b""):
                    digest.update(block)
                    size += len(block)
                    dst.write(block)
        return StoredFile(path, digest.hexdigest(), size)

    def write_bytes(self, path: str, data: bytes) -> StoredFile:
        """Write `data` at `path`; readers see the whole file or none of it.

        Object stores put whole objects; on a local root the bytes go to a temporary name
        first and are renamed into place.
        """
        self.put_bytes(path, data)
        return StoredFile(path, hashlib.sha256(data).hexdigest(), len(data))

    def put_bytes(self, path: str, data: bytes) -> None:
        """`write_bytes` for files whose readers check no digest (prediction log segments):
        whole or nothing, without the SHA-256 (on a 10M-row batch job's log, 1.5 s of CPU)."""
        full = self._full(path)
        with self.failures_explained(f"write {path}"):
            self.fs.makedirs(full.rsplit("/", 1)[0], exist_ok=True)
            if self.is_local:
                tmp = Path(f"{full}.{os.getpid()}.tmp")
                tmp.write_bytes(data)
                tmp.replace(full)
            else:
                with self.fs.open(full, "wb") as fh:
                    fh.write(data)

    def glob(self, pattern: str) -> list[str]:
        """Paths (relative to the root) matching a glob pattern such as `logs/*/date=*/*.parquet`."""
        base = self._full("")
        with self.failures_explained(f"list {pattern}"):
            found = self.fs.glob(self._full(pattern))
        return sorted(str(p)[len(base) :].lstrip("/") for p in found)

    def read_bytes(self, path: str, sha256: str) -> bytes:
        """Read a file and check it against the SHA-256 recorded when it was written."""
        full = self._full(path)
        try:
            with self.failures_explained(f"read {path}"), self.fs.open(full, "rb") as fh:
                data: bytes = fh.read()
        except FileNotFoundError:
            raise ArtifactCorrupted(
                f"artifact {path!r} is missing from {self.root}; the store was changed outside "
                "shipyard: restore the file or register the model again"
            ) from None
        actual = hashlib.sha256(data).hexdigest()
        if actual != sha256:
            raise _corrupted(path, self.root, sha256, actual)
        return data

    def exists(self, path: str) -> bool:
        with self.failures_explained(f"look for {path}"):
            return bool(self.fs.exists(self._full(path)))

    def delete_tree(self, prefix: str) -> None:
        full = self._full(prefix)
        with self.failures_explained(f"delete {prefix}"):
            if self.fs.exists(full):
                self.fs.rm(full, recursive=True)

    def materialise(self, prefix: str, files: Mapping[str, str]) -> Path:
        """A local folder holding `prefix`'s files, each verified against `files` (path -> sha256).

        A local root is verified in place; a remote one is downloaded into the cache once,
        verified on the way, and reused while its hashes still match.
        """
        if self.is_local:
            folder = self.local_path(prefix)
            for rel, expected in files.items():
                _verify_local(folder / rel, f"{prefix}/{rel}", self.root, expected)
            return folder
        if self.cache_dir is None:
            raise ConfigurationError("a remote artifact root needs a local cache folder")
        folder = self.cache_dir / prefix
        for rel, expected in files.items():
            target = folder / rel
            if target.exists() and sha256_file(target) == expected:
                continue
            data = self.read_bytes(f"{prefix}/{rel}", expected)
            target.parent.mkdir(parents=True, exist_ok=True)
            tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
            tmp.write_bytes(data)
            tmp.replace(target)
        return folder

    def clear_cache(self, prefix: str) -> None:
        if self.cache_dir is not None:
            shutil.rmtree(self.cache_dir / prefix, ignore_errors=True)


def _failure_kind(error: Exception) -> Literal["unreachable", "credentials", "refused"] | None:
    """What a storage backend's exception means for the user, or None for anything else.

    botocore's exceptions (S3 through s3fs) are looked up only when it is installed; they are
    not OSErrors, and s3fs passes them through as they are.
    """
    if isinstance(error, PermissionError):
        return "refused"  # s3fs: 403 (AccessDenied, SignatureDoesNotMatch, InvalidAccessKeyId)
    if isinstance(error, ConnectionError | TimeoutError):
        return "unreachable"
    try:  # by name: botocore comes with the s3 extra only, and has no type hints
        boto: Any = importlib.import_module("botocore.exceptions")
    except ImportError:
        return None
    if isinstance(error, boto.ConnectionError | boto.HTTPClientError):
        return "unreachable"  # connection refused, DNS, TLS, timeouts, connections dropped
    credentials = boto.NoCredentialsError | boto.PartialCredentialsError
    if isinstance(error, credentials | boto.CredentialRetrievalError):
        return "credentials"
    return None


def _reason(error: Exception) -> str:
    text = str(error).strip() or type(error).__name__
    return text if len(text) <= 300 else f"{text[:300]}..."


def _verify_local(file: Path, name: str, root: str, expected: str) -> None:
    if not file.exists():
        raise ArtifactCorrupted(
            f"artifact {name!r} is missing from {root}; the store was changed outside shipyard: "
            "restore the file or register the model again"
        )
    actual = sha256_file(file)
    if actual != expected:
        raise _corrupted(name, root, expected, actual)


def _corrupted(name: str, root: str, expected: str, actual: str) -> ArtifactCorrupted:
    return ArtifactCorrupted(
        f"artifact {name!r} in {root} fails its integrity check (sha256 {actual[:12]}..., "
        f"recorded {expected[:12]}...); it was changed after registration, so shipyard refuses to "
        "load it: restore the original file or register the model again"
    )
