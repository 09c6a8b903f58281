"""`create_app(settings)`: the one place the HTTP server is assembled."""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from shipyard.access import Authenticator, KeyStore, RateLimiter
from shipyard.access.api import router as keys_router
from shipyard.core import Settings, new_id
from shipyard.core import errors as e
from shipyard.core.logs import request_id
from shipyard.core.status import status_of
from shipyard.core.version import __version__
from shipyard.logstore import LogWriter
from shipyard.monitoring import Monitor
from shipyard.monitoring.api import router as monitoring_router
from shipyard.registry import Registry
from shipyard.registry.api import router as registry_router
from shipyard.retraining.api import router as retraining_router
from shipyard.serving import PredictionService
from shipyard.serving import metrics as m
from shipyard.serving.api import JSONBytes, scoring_router, v1_router, v2_router
from shipyard.tracking.api import router as tracking_router

__all__ = ["create_app", "factory"]

log = logging.getLogger("shipyard.app")


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
    status = status_of(error)
    if status >= 500 and not isinstance(error, e.Overloaded | e.DeadlineExceeded):
        log.error("%s %s: %s", request.method, request.url.path, error.message)
    headers = {}
    retry_after = getattr(error, "retry_after", None)
    if retry_after is not None:
        headers["Retry-After"] = str(max(1, round(retry_after)))
    if isinstance(error, e.Unauthenticated):
        headers["WWW-Authenticate"] = 'Bearer realm="shipyard"'
    body = _error_body(request, type(error).__name__, error.message, list(error.details()))
    return JSONBytes(body, status_code=status, headers=headers)


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
    body = _error_body(
        request, "InternalError", "internal error; this is a bug in shipyard, please report it", []
    )
    return JSONBytes(body, status_code=500)


class RequestContext:
    """Pure ASGI middleware: a request id on every request and response, request metrics, and
    (when asked for) one access-log line per request."""

    def __init__(self, app: ASGIApp, access_log: bool = False) -> None:
        self.app = app
        self.access_log = access_log
        self.log = logging.getLogger("shipyard.access_log")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        rid = None
        for name, value in scope["headers"]:
            if name == b"x-request-id":
                rid = value.decode("latin-1")[:128]
                break
        rid = rid or new_id()
        scope.setdefault("state", {})["request_id"] = rid
        token = request_id.set(rid)
        status = 500

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message.setdefault("headers", []).append((b"x-request-id", rid.encode("latin-1")))
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            request_id.reset(token)
            route = scope.get("route")
            template = getattr(route, "path", "unmatched")
            elapsed = time.perf_counter() - started
            m.HTTP_REQUESTS.labels(template, scope["method"], str(status)).inc()
            m.HTTP_LATENCY.labels(template).observe(elapsed)
            if self.access_log:
                self.log.info(
                    "%s %s %s %.1f ms", scope["method"], scope["path"], status, elapsed * 1e3,
                    extra={"request_id": rid, "status": status},
                )  # fmt: skip


async def _update_gauges(
    service: PredictionService, writer: LogWriter, limiter: RateLimiter
) -> None:
    written = 0
    while True:
        m.LOG_LAG.set(writer.lag_seconds)
        m.LOG_ROWS.inc(writer.rows_written - written)
        written = writer.rows_written
        m.MODELS_LOADED.set(len(service.loaded()))
        m.RATELIMIT_SHARED.set(1 if limiter.shared is not None and limiter.shared_up else 0)
        for (name, version), batcher in service.batchers().items():
            m.QUEUE_ROWS.labels(name, str(version)).set(batcher.queued_rows)
            sizes, batcher.stats.sizes = batcher.stats.sizes, []
            histogram = m.BATCH_ROWS.labels(name, str(version))
            for size in sizes:
                histogram.observe(size)
        await asyncio.sleep(1.0)


def create_app(settings: Settings | None = None) -> FastAPI:
    """The prediction server: `/v1` (predict, feedback, registry, keys), `/v2`, `/metrics`."""
    settings = settings or Settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        registry = Registry.from_settings(settings)
        await anyio.to_thread.run_sync(registry.database.open)
        keys = KeyStore(registry.database, actor=settings.actor)
        if settings.auth == "off":
            log.warning(
                "AUTHENTICATION IS OFF (SHIPYARD_AUTH=off): anyone who can reach this server can "
                "score, read and change every model; never run it like this in production"
            )
        auth = Authenticator(keys if settings.auth == "on" else None, ttl=settings.refresh_seconds)
        shared = None
        if settings.redis_url:
            from shipyard.store.redis import RedisBuckets

            shared = RedisBuckets(settings.redis_url)
        limiter = RateLimiter(shared)
        if shared is None and os.environ.get("SHIPYARD_WORKERS", "1") != "1":
            log.warning(
                "rate limits are kept per worker process; set SHIPYARD_REDIS_URL to share them "
                "across workers and replicas"
            )

        def types_of(name: str, version: int) -> dict[str, str]:
            return {c.name: c.type for c in registry.get_version(name, version).signature.columns}

        writer = LogWriter(
            settings.resolved_spool_dir,
            registry.artifacts,
            types_of=types_of,
            flush_seconds=settings.log_flush_seconds,
            segment_rows=settings.log_segment_rows,
            fsync_seconds=settings.log_fsync_seconds,
            flush_in=settings.log_flush_in,
        )
        await anyio.to_thread.run_sync(writer.start)
        service = PredictionService(registry, settings, writer)
        app.state.settings = settings
        app.state.registry = registry
        app.state.keys = keys
        app.state.auth = auth
        app.state.limiter = limiter
        app.state.predictions = service
        app.state.monitor = Monitor.from_settings(settings, registry)
        await service.start()
        app.state.ready = True
        # everything loaded so far (libraries, models) lives as long as the server: moving it out
        # of the collector's view keeps full collections short, and with them the tail latency
        gc.collect()
        gc.freeze()
        gauges = asyncio.get_running_loop().create_task(_update_gauges(service, writer, limiter))
        loaded = ", ".join(
            f"{s.name}:{s.version} ({s.predictor.runtime})" for s in service.loaded()
        )
        log.info(
            "serving %s", loaded or "no models yet (deploy a version or point an alias at one)"
        )
        try:
            yield
        finally:
            app.state.ready = False
            gauges.cancel()
            await service.stop()
            await anyio.to_thread.run_sync(writer.close)
            if shared is not None:
                await shared.close()
            registry.close()

    app = FastAPI(
        title="shipyard",
        version=__version__,
        description=(
            "Prediction API: shipyard's /v1 and the Open Inference Protocol (KServe V2) under /v2. "
            "Send an API key as `Authorization: Bearer <key>` or `X-API-Key`."
        ),
        lifespan=lifespan,
        default_response_class=JSONBytes,
        exception_handlers={
            e.ShipyardError: _shipyard_error,
            RequestValidationError: _validation_error,
            Exception: _unexpected,
        },
    )
    app.include_router(scoring_router)
    app.include_router(v1_router)
    app.include_router(registry_router)
    app.include_router(keys_router)
    app.include_router(monitoring_router)
    app.include_router(tracking_router)
    app.include_router(retraining_router)
    app.include_router(v2_router)

    @app.get("/metrics", tags=["observability"], summary="Prometheus metrics")
    async def metrics() -> Response:
        body, content_type = m.render()
        return Response(body, media_type=content_type)

    app.add_middleware(RequestContext, access_log=settings.access_log)
    return app


def factory() -> FastAPI:
    """Entry for `uvicorn --factory shipyard.app:factory` and multi-worker servers."""
    settings = Settings()
    from shipyard.core.logs import configure_logging

    configure_logging(settings.log_format, os.environ.get("SHIPYARD_LOG_LEVEL", "info"))
    return create_app(settings)
