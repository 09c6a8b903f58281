"""The one table from error classes to HTTP status codes, read by the app's exception handler,
the server's metrics and the Python client. The error classes themselves know nothing of HTTP.

Every class of the tree has its own row (a test walks the tree), so a new error class cannot
silently fall through to a default.
"""

from __future__ import annotations

from shipyard.core import errors as e

__all__ = ["HTTP_STATUS", "status_of"]

HTTP_STATUS: dict[type[e.ShipyardError], int] = {
    e.ShipyardError: 500,  # raised bare only by a bug
    e.InvalidInput: 422,
    e.InvalidName: 400,
    e.MalformedRequest: 400,
    e.SchemaViolation: 422,
    e.InvalidLabels: 422,
    e.ModelOutputInvalid: 422,
    e.UnsupportedModel: 422,
    e.UserCodeFailed: 422,
    e.UnsupportedMediaType: 415,
    e.NotFound: 404,
    e.ModelNotFound: 404,
    e.VersionNotFound: 404,
    e.AliasNotFound: 404,
    e.MethodNotAllowed: 405,
    e.Conflict: 409,
    e.VersionArchived: 409,
    e.PayloadTooLarge: 413,
    e.Unauthenticated: 401,
    e.Forbidden: 403,
    e.RateLimited: 429,
    # deliberate back-pressure, not bugs: the caller should retry (Retry-After says when)
    e.Overloaded: 503,
    e.DeadlineExceeded: 504,
    e.ServiceUnavailable: 503,
    e.BackendUnavailable: 503,
    e.DatabaseUnavailable: 503,
    e.LogUnavailable: 503,
    e.RedisUnavailable: 503,
    # the server's own state, not the caller's fault: "try again / elsewhere", never a bug
    e.ArtifactCorrupted: 503,
    e.ModelUnavailable: 503,
    e.MissingDependency: 503,
    e.SchemaOutdated: 503,
    e.ConfigurationError: 503,
    e.AddressInUse: 503,
}


def status_of(error: e.ShipyardError) -> int:
    """The status of the nearest class in `error`'s ancestry that has a row."""
    for cls in type(error).__mro__:
        status = HTTP_STATUS.get(cls)
        if status is not None:
            return status
    return 500
