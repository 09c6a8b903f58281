"""Every error a user can cause, in one tree.

Messages say what was wrong and what to do next. The classes know nothing of HTTP or exit
codes: `shipyard.app` maps them to status codes in one handler, `shipyard.cli` to exit codes.

    ShipyardError
    ├── InvalidInput (ValueError)            bad data or arguments from the caller
    │   ├── InvalidName                      a model name, alias or reference that cannot be used
    │   ├── MalformedRequest                 a request body that is not what the endpoint takes
    │   ├── InvalidLabels                    ground truth that does not fit the model's output
    │   ├── SchemaViolation                  records that do not match the model's signature
    │   │   └── ModelOutputInvalid           rows the model answered with NaN or infinity
    │   ├── UnsupportedModel                 an object or file no flavour can package
    │   └── UserCodeFailed                   the user's own code (a training function) raised
    ├── UnsupportedMediaType                 a request body that is not JSON
    ├── NotFound (LookupError)
    │   ├── ModelNotFound
    │   ├── VersionNotFound
    │   └── AliasNotFound
    ├── MethodNotAllowed                     an HTTP method the route does not take
    ├── Conflict                             the request clashes with stored state
    │   └── VersionArchived
    ├── PayloadTooLarge                      a body or batch over the configured limit
    ├── Unauthenticated                      no API key, or one that is unknown or revoked
    ├── Forbidden (PermissionError)          a key without the scope or model the call needs
    ├── RateLimited                          a key (or a client failing to authenticate) over
    │                                        its rate limit (retry_after seconds)
    ├── Overloaded                           the server's queue is full (retry_after seconds)
    ├── DeadlineExceeded (TimeoutError)      the answer would come after the request's deadline
    ├── ServiceUnavailable (ConnectionError) a client could not get an answer from the server
    ├── BackendUnavailable                   a part the server needs is down (retry_after seconds)
    │   ├── DatabaseUnavailable              the metadata database does not answer
    │   ├── LogUnavailable                   the prediction log cannot be written (disk full)
    │   └── RedisUnavailable                 Redis does not answer (callers fall back)
    ├── ArtifactCorrupted                    a stored file whose SHA-256 no longer matches
    ├── ModelUnavailable                     a model that cannot be loaded right now
    ├── SchemaOutdated                       the metadata database needs `shipyard db upgrade`
    ├── ConfigurationError                   settings that cannot work together
    │   └── AddressInUse (OSError)           the port the server should listen on is taken
    └── MissingDependency (ImportError)      an optional extra that is not installed
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

__all__ = [
    "AddressInUse",
    "AliasNotFound",
    "ArtifactCorrupted",
    "BackendUnavailable",
    "ConfigurationError",
    "Conflict",
    "DatabaseUnavailable",
    "DeadlineExceeded",
    "Forbidden",
    "InvalidInput",
    "InvalidLabels",
    "InvalidName",
    "LogUnavailable",
    "MalformedRequest",
    "MethodNotAllowed",
    "MissingDependency",
    "ModelNotFound",
    "ModelOutputInvalid",
    "ModelUnavailable",
    "NotFound",
    "Overloaded",
    "PayloadTooLarge",
    "RateLimited",
    "RedisUnavailable",
    "SchemaOutdated",
    "SchemaViolation",
    "ServiceUnavailable",
    "ShipyardError",
    "Unauthenticated",
    "UnsupportedMediaType",
    "UnsupportedModel",
    "UserCodeFailed",
    "VersionArchived",
    "VersionNotFound",
    "missing_extra",
]


class ShipyardError(Exception):
    """Base of every error shipyard raises on purpose."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def details(self) -> list[dict[str, Any]]:
        """Structured details for machine readers (empty unless a subclass has some)."""
        return []


class InvalidInput(ShipyardError, ValueError):
    """The caller sent data or arguments that cannot be used."""


class InvalidName(InvalidInput):
    """A model name, version, alias or `name:version` reference is not well formed."""


class MalformedRequest(InvalidInput):
    """A request body or parameter is not valid JSON or lacks the shape the endpoint takes.

    Attributes:
        problems: one entry per problem, each with `loc` (where) and `msg` (what).
    """

    def __init__(self, message: str, problems: Sequence[dict[str, Any]] = ()) -> None:
        super().__init__(message)
        self.problems = list(problems)

    def details(self) -> list[dict[str, Any]]:
        return self.problems


class InvalidLabels(InvalidInput):
    """Ground truth that does not fit the model's output: a label that is not one of a
    classifier's classes, or not a number for a regressor.

    Attributes:
        problems: one entry per bad label, with `loc`, `prediction_id`, `label` and `msg`.
    """

    def __init__(self, message: str, problems: Sequence[dict[str, Any]]) -> None:
        super().__init__(message)
        self.problems = list(problems)

    def details(self) -> list[dict[str, Any]]:
        return self.problems


class SchemaViolation(InvalidInput):
    """Records do not match the model's input signature.

    Attributes:
        errors: one entry per problem, each with `loc` (record index and field) and `msg`.
    """

    def __init__(self, message: str, errors: Sequence[dict[str, Any]]) -> None:
        super().__init__(message)
        self.errors = list(errors)

    def details(self) -> list[dict[str, Any]]:
        return self.errors


class ModelOutputInvalid(SchemaViolation):
    """The model answered some rows with NaN or infinity (usually inputs far outside the
    training range); those rows get no prediction, never a default label."""


class UnsupportedModel(InvalidInput):
    """No flavour knows how to package this object or file."""


class UserCodeFailed(InvalidInput):
    """Code the user handed shipyard (a training function) raised an exception.

    The message names the function, the exception and the line of the user's code it came
    from; the exception itself is the `__cause__`, for a traceback on request (`--debug`).
    """

    @classmethod
    def raised(cls, what: str, entrypoint: str, error: BaseException) -> UserCodeFailed:
        """The error for `error`, raised by the user's `what` (e.g. "training function")."""
        where = _user_frame(error)
        text = str(error).strip() or "(no message)"
        return cls(
            f"your {what} `{entrypoint}` raised {type(error).__name__}: {text}"
            + (f" ({where})" if where else "")
        )


def _user_frame(error: BaseException) -> str | None:
    """`file:line` of the innermost frame of the traceback outside installed packages and the
    standard library (the user's own line), else of the innermost frame."""
    import sysconfig
    import traceback

    frames = traceback.extract_tb(error.__traceback__)
    if not frames:
        return None
    paths = sysconfig.get_paths()
    libraries = tuple(
        {paths[k] for k in ("stdlib", "platstdlib", "purelib", "platlib")}
        | {str(Path(__file__).resolve().parents[1])}  # shipyard's own package
    )
    own = [f for f in frames if not f.filename.startswith(libraries)]
    frame = (own or frames)[-1]
    return f"{frame.filename}:{frame.lineno}"


class UnsupportedMediaType(ShipyardError):
    """A request body sent with a Content-Type other than JSON."""


class NotFound(ShipyardError, LookupError):
    """Something the caller named does not exist."""


class ModelNotFound(NotFound):
    """No model is registered under that name (`name`, when the raiser knows it)."""

    def __init__(self, message: str, name: str | None = None) -> None:
        super().__init__(message)
        self.name = name


class VersionNotFound(NotFound):
    """The model exists but not at that version."""


class AliasNotFound(NotFound):
    """The model has no version under that alias."""


class MethodNotAllowed(ShipyardError):
    """The route exists but not for this HTTP method; `allowed` lists the methods it takes."""

    def __init__(self, message: str, allowed: Sequence[str]) -> None:
        super().__init__(message)
        self.allowed = list(allowed)


class Conflict(ShipyardError):
    """The request clashes with the stored state."""


class VersionArchived(Conflict):
    """The version is archived and cannot serve or take aliases."""


class PayloadTooLarge(ShipyardError):
    """A request body or batch is over the configured limit."""


class Unauthenticated(ShipyardError):
    """The call needs an API key and has none, or an unknown, malformed or revoked one."""


class Forbidden(ShipyardError, PermissionError):
    """The key is valid but lacks the scope, or is bound to another model."""


class RateLimited(ShipyardError):
    """The key is over its rate limit; `retry_after` says in how many seconds a call fits."""

    def __init__(self, message: str, retry_after: float) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class Overloaded(ShipyardError):
    """The server's queue is full; it refuses at once instead of queueing without limit."""

    def __init__(self, message: str, retry_after: float = 1.0) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class DeadlineExceeded(ShipyardError, TimeoutError):
    """The answer could not be ready within the request's deadline."""


class ServiceUnavailable(ShipyardError, ConnectionError):
    """The server could not be reached, kept failing, or did not answer in time (client side).

    Attributes:
        status: the last HTTP status seen, if any answer came at all.
    """

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class BackendUnavailable(ShipyardError):
    """A part the server relies on does not answer; `retry_after` says when to try again."""

    def __init__(self, message: str, retry_after: float = 5.0) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class DatabaseUnavailable(BackendUnavailable):
    """The metadata database refuses connections or dropped them."""


class LogUnavailable(BackendUnavailable):
    """The prediction log cannot be written (e.g. the spool's disk is full), so the server
    refuses predictions it could not record instead of answering them unlogged."""


class RedisUnavailable(BackendUnavailable):
    """Redis did not answer; rate limits fall back to this process."""


class ArtifactCorrupted(ShipyardError):
    """A stored file no longer matches the SHA-256 recorded when it was written."""


class ModelUnavailable(ShipyardError):
    """A model version cannot be loaded (its runtime failed or a dependency is missing)."""


class SchemaOutdated(ShipyardError):
    """The metadata database is behind this version of shipyard."""


class ConfigurationError(ShipyardError):
    """Settings that cannot work, e.g. an unreachable database URL."""


class AddressInUse(ConfigurationError, OSError):
    """The host and port the server should listen on are taken, or cannot be bound."""


class MissingDependency(ShipyardError, ImportError):
    """An optional extra is needed for this and is not installed."""


def missing_extra(package: str, extra: str, purpose: str) -> MissingDependency:
    """The error for an optional dependency that is not installed.

    Example:
        `raise missing_extra("lightgbm", "lightgbm", "LightGBM models") from None`
    """
    return MissingDependency(
        f"{purpose} need the '{package}' package, which is not installed; "
        f"install it with: pip install 'shipyard[{extra}]'"
    )
