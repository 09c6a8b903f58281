"""The one table from error classes to HTTP status codes, read by the app's exception handler,
the server's metrics and the Python client. The error classes themselves know nothing of HTTP.
"""

from __future__ import annotations

from shipyard.core import errors as e

__all__ = ["HTTP_STATUS", "status_of"]

# the first matching class wins, so subclasses come before their parents
HTTP_STATUS: list[tuple[type[e.ShipyardError], int]] = [
    (e.MalformedRequest, 400),
    (e.InvalidName, 400),
    (e.SchemaViolation, 422),
    (e.InvalidInput, 422),
    (e.Unauthenticated, 401),
    (e.Forbidden, 403),
    (e.NotFound, 404),
    (e.Conflict, 409),
    (e.PayloadTooLarge, 413),
    (e.RateLimited, 429),
    # deliberate back-pressure, not bugs: the caller should retry (Retry-After says when)
    (e.Overloaded, 503),
    (e.DeadlineExceeded, 504),
    (e.ServiceUnavailable, 503),
    # the server's own state, not the caller's fault: "try again / elsewhere", never a bug
    (e.ArtifactCorrupted, 503),
    (e.ModelUnavailable, 503),
    (e.MissingDependency, 503),
    (e.SchemaOutdated, 503),
    (e.ConfigurationError, 503),
]


def status_of(error: e.ShipyardError) -> int:
    for cls, status in HTTP_STATUS:
        if isinstance(error, cls):
            return status
    return 400
