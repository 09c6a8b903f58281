"""`create_app(settings)`: the one place the HTTP server is assembled."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError

import shipyard
from shipyard.core import Settings
from shipyard.core import errors as e
from shipyard.registry import Registry
from shipyard.registry.api import router as registry_router
from shipyard.serving import PredictionService
from shipyard.serving.api import JSONBytes, v1_router, v2_router

__all__ = ["STATUS", "create_app", "factory", "status_for"]

log = logging.getLogger("shipyard.app")

# Each error a caller can cause has one status; the first matching class wins.
STATUS: list[tuple[type[e.ShipyardError], int]] = [
    (e.MalformedRequest, 400),
    (e.InvalidName, 400),
    (e.SchemaViolation, 422),
    (e.InvalidInput, 422),
    (e.NotFound, 404),
    (e.Conflict, 409),
    (e.PayloadTooLarge, 413),
    # the server's own state, not the caller's fault: "try again / elsewhere", never a bug
    (e.ArtifactCorrupted, 503),
    (e.ModelUnavailable, 503),
    (e.MissingDependency, 503),
    (e.SchemaOutdated, 503),
    (e.ConfigurationError, 503),
]


def status_for(error: e.ShipyardError) -> int:
    for cls, status in STATUS:
        if isinstance(error, cls):
            return status
    return 400


def _error_body(
    request: Request, error_type: str, message: str, details: list[object]
) -> dict[str, object]:
    if request.url.path.startswith("/v2"):
        return {"error": message}  # the Open Inference Protocol's error shape
    body: dict[str, object] = {"type": error_type, "message": message}
    if details:
        body["details"] = details
    return {"error": body}


async def _shipyard_error(request: Request, error: Exception) -> JSONBytes:
    assert isinstance(error, e.ShipyardError)
    status = status_for(error)
    if status >= 500:
        log.error("%s %s: %s", request.method, request.url.path, error.message)
    return JSONBytes(
        _error_body(request, type(error).__name__, error.message, list(error.details())),
        status_code=status,
    )


async def _validation_error(request: Request, error: Exception) -> JSONBytes:
    assert isinstance(error, RequestValidationError)
    details = [{"loc": list(d.get("loc", ())), "msg": d.get("msg", "")} for d in error.errors()]
    message = (
        "; ".join(f"{'.'.join(map(str, d['loc']))}: {d['msg']}" for d in details)
        or "invalid request"
    )
    return JSONBytes(
        _error_body(request, "MalformedRequest", message, list(details)), status_code=400
    )


async def _unexpected(request: Request, error: Exception) -> JSONBytes:
    log.exception("unhandled error on %s %s", request.method, request.url.path)
    return JSONBytes(
        _error_body(
            request,
            "InternalError",
            "internal error; this is a bug in shipyard, please report it",
            [],
        ),
        status_code=500,
    )


def create_app(settings: Settings | None = None) -> FastAPI:
    """The prediction server: registry reads, `/v1` predictions and the V2 inference protocol."""
    settings = settings or Settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        registry = Registry.from_settings(settings)
        await anyio.to_thread.run_sync(registry.database.open)
        service = PredictionService(registry, settings)
        app.state.settings = settings
        app.state.registry = registry
        app.state.predictions = service
        app.state.ready = False
        problems = await anyio.to_thread.run_sync(service.warm_up)
        app.state.ready = not problems
        loaded = ", ".join(
            f"{m.name}:{m.version} ({m.predictor.runtime})" for m in service.loaded()
        )
        log.info("serving %s", loaded or "no models yet (point an alias at a version)")
        try:
            yield
        finally:
            registry.close()

    app = FastAPI(
        title="shipyard",
        version=shipyard.__version__,
        description="Prediction API: shipyard's /v1 and the Open Inference Protocol (KServe V2) under /v2.",
        lifespan=lifespan,
        default_response_class=JSONBytes,
        exception_handlers={
            e.ShipyardError: _shipyard_error,
            RequestValidationError: _validation_error,
            Exception: _unexpected,
        },
    )
    app.include_router(v1_router)
    app.include_router(registry_router)
    app.include_router(v2_router)
    return app


def factory() -> FastAPI:
    """Entry for `uvicorn --factory shipyard.app:factory` and multi-worker servers."""
    return create_app(Settings())
