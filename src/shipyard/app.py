"""`create_app(settings)`: the one place the HTTP server is assembled.

The composition root: every service is built once here (constructors do no I/O), handed to
the router of each area, opened in the lifespan and closed after it. Routes never reach into
`app.state`; tests read `app.state.services` to look inside a running app.
"""

from __future__ import annotations

import asyncio
import functools
import gc
import logging
import os
import signal
import threading
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from importlib import resources
from typing import Any

import anyio
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.openapi.utils import get_openapi
from fastapi.responses import HTMLResponse, PlainTextResponse, RedirectResponse, Response
from fastapi.routing import APIRoute
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from shipyard.access import Authenticator, FailureThrottle, KeyStore, RateLimiter, Sessions
from shipyard.access import api as access_api
from shipyard.access.api import SCOPE_ATTRIBUTE, Guard
from shipyard.core import Settings, new_id
from shipyard.core import errors as e
from shipyard.core.api import JSONBytes, hide_paths
from shipyard.core.lifetime import watch_parent
from shipyard.core.logs import request_id
from shipyard.core.status import status_of
from shipyard.core.version import __version__
from shipyard.features import FeatureStore
from shipyard.features import api as features_api
from shipyard.logstore import LogWriter
from shipyard.monitoring import Monitor, ReportProcess
from shipyard.monitoring import api as monitoring_api
from shipyard.registry import Registry
from shipyard.registry import api as registry_api
from shipyard.retraining import api as retraining_api
from shipyard.serving import EdgeUploads, PredictionService
from shipyard.serving import api as serving_api
from shipyard.serving import metrics as m
from shipyard.tracking import Tracker
from shipyard.tracking import api as tracking_api
from shipyard.ui import api as ui_api
from shipyard.ui._views import Views

__all__ = ["Services", "build_services", "create_app", "factory"]

log = logging.getLogger("shipyard.app")

_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


@dataclass
class Services:
    """Everything the server's routes use, built once per app."""

    settings: Settings
    registry: Registry
    keys: KeyStore
    auth: Authenticator
    limiter: RateLimiter
    guard: Guard
    writer: LogWriter
    predictions: PredictionService
    monitor: Monitor
    reports: ReportProcess
    tracker: Tracker
    features: FeatureStore
    sessions: Sessions
    uploads: EdgeUploads


def build_services(settings: Settings) -> Services:
    """The server's services over `settings`; nothing connects until the lifespan opens them."""
    registry = Registry.from_settings(settings)
    keys = KeyStore(registry.database, actor=settings.actor)
    auth = Authenticator(
        keys if settings.auth == "on" else None,
        max_stale_seconds=settings.max_stale_seconds,
        snapshot=settings.refresh_seconds > 0,
    )
    shared = None
    if settings.redis_url:
        from shipyard.store.redis import RedisBuckets

        shared = RedisBuckets(settings.redis_url)
    limiter = RateLimiter(shared)
    throttle = FailureThrottle(settings.auth_failures_per_second, settings.auth_failure_burst)
    guard = Guard(auth, limiter, throttle)

    @functools.lru_cache(maxsize=1024)
    def types_of(name: str, version: int) -> dict[str, str]:
        # a version's signature never changes: asked once, so logs flush while the database is away
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
    features = FeatureStore(registry, settings)
    predictions = PredictionService(registry, settings, writer, auth=auth, features=features)
    monitor = Monitor.from_settings(settings, registry)
    tracker = Tracker(registry.database, registry.artifacts, actor=registry.actor)
    return Services(
        settings,
        registry,
        keys,
        auth,
        limiter,
        guard,
        writer,
        predictions,
        monitor,
        ReportProcess(settings),
        tracker,
        features,
        Sessions(
            auth,
            settings.session_secret,
            secret_file=settings.home / "session.secret",
            lifetime_seconds=settings.session_hours * 3600,
        ),
        EdgeUploads(registry),
    )


# -- errors: one shape everywhere -----------------------------------------------------------------


def _error_body(
    request: Request, error_type: str, message: str, details: Sequence[object]
) -> dict[str, object]:
    if request.url.path.startswith("/v2"):
        return {"error": message}  # the Open Inference Protocol's error shape
    body: dict[str, object] = {"type": error_type, "message": message}
    if details:
        body["details"] = list(details)
    return {"error": body}


async def _shipyard_error(request: Request, error: Exception) -> Response:
    assert isinstance(error, e.ShipyardError)
    status = status_of(error)
    path = request.url.path
    if (path == "/ui" or path.startswith("/ui/")) and not path.startswith("/ui/api/"):
        if status >= 500 and not isinstance(error, e.Overloaded | e.BackendUnavailable):
            log.error("%s %s: %s", request.method, path, error.message)
        if not (getattr(request.state, "key", None) and request.state.key.scope == "admin"):
            error.message = hide_paths(error.message)
        return ui_api.error_page(request, error, status)
    quiet = e.Overloaded | e.DeadlineExceeded | e.BackendUnavailable | e.ModelUnavailable
    if status >= 500 and not isinstance(error, quiet):  # those are logged where they happen
        log.error("%s %s: %s", request.method, request.url.path, error.message)
    headers = {}
    retry_after = getattr(error, "retry_after", None)
    if retry_after is not None:
        headers["Retry-After"] = str(max(1, round(retry_after)))
    if isinstance(error, e.Unauthenticated):
        headers["WWW-Authenticate"] = 'Bearer realm="shipyard"'
    if isinstance(error, e.MethodNotAllowed):
        headers["Allow"] = ", ".join(error.allowed)
    message, details = error.message, list(error.details())
    key = getattr(request.state, "key", None)
    if key is None or key.scope != "admin":
        # what lies where on the server is for admin keys; a key bound to one model does not
        # learn the others' names from a miss
        if key is not None and key.model is not None and isinstance(error, e.ModelNotFound):
            message = f"no model named {error.name!r}; this key is bound to {key.model!r}"
        message, details = hide_paths(message), hide_paths(details)
    body = _error_body(request, type(error).__name__, message, details)
    return JSONBytes(body, status_code=status, headers=headers)


async def _validation_error(request: Request, error: Exception) -> Response:
    assert isinstance(error, RequestValidationError)
    details = [
        {"loc": [str(part) for part in d.get("loc", ())], "msg": str(d.get("msg", ""))}
        for d in error.errors()
    ]
    message = "; ".join(f"{'.'.join(d['loc'])}: {d['msg']}" for d in details) or "invalid request"
    return await _shipyard_error(request, e.MalformedRequest(message[:2000], details))


def _allowed_methods(request: Request) -> list[str]:
    path = request.url.path
    methods: set[str] = set()
    for route in request.app.routes:
        regex = getattr(route, "path_regex", None)
        if regex is not None and regex.match(path) and getattr(route, "methods", None):
            methods |= set(route.methods)
    return sorted(methods)


async def _http_error(request: Request, error: Exception) -> Response:
    """The router's own refusals (no such route, wrong method) in the one error shape."""
    assert isinstance(error, StarletteHTTPException)
    problem: e.ShipyardError
    if error.status_code == 405:
        allowed = _allowed_methods(request)
        problem = e.MethodNotAllowed(
            f"{request.url.path} does not take {request.method[:16]}; it takes "
            f"{', '.join(allowed)} (see /docs)",
            allowed,
        )
    elif error.status_code == 404:
        problem = e.NotFound(f"no route {request.url.path[:200]}; the API is described at /docs")
    elif error.status_code == 413:
        problem = e.PayloadTooLarge("the request body is over this server's limit")
    else:
        problem = e.MalformedRequest(str(error.detail)[:500])
    response = await _shipyard_error(request, problem)
    if error.status_code not in (404, 405, 413):
        response.status_code = error.status_code if error.status_code < 500 else 400
    return response


async def _unexpected(request: Request, error: Exception) -> JSONBytes:
    log.exception("unhandled error on %s %s", request.method, request.url.path)
    body = _error_body(
        request, "InternalError", "internal error; this is a bug in shipyard, please report it", []
    )
    return JSONBytes(body, status_code=500)


# -- request context and metrics ----------------------------------------------------------------


class RequestContext:
    """Pure ASGI middleware: a request id on every request and response, request metrics, and
    (when asked for) one access-log line per request. Every metric label is from a closed set
    (route templates, known methods, status codes), whatever a caller sends."""

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
            method = scope["method"] if scope["method"] in _METHODS else "OTHER"
            elapsed = time.perf_counter() - started
            m.HTTP_REQUESTS.labels(template, method, str(status)).inc()
            m.HTTP_LATENCY.labels(template).observe(elapsed)
            if self.access_log:
                self.log.info(
                    "%s %s %s %.1f ms", method, scope["path"][:200], status, elapsed * 1e3,
                    extra={"request_id": rid, "status": status},
                )  # fmt: skip


async def _update_gauges(services: Services) -> None:
    written = 0
    failures = 0
    service, writer, limiter = services.predictions, services.writer, services.limiter
    while True:
        m.LOG_LAG.set(writer.lag_seconds)
        m.LOG_ROWS.inc(writer.rows_written - written)
        written = writer.rows_written
        m.LOG_FAILURES.inc(writer.failures - failures)
        failures = writer.failures
        m.MODELS_LOADED.set(len(service.loaded()))
        m.RATELIMIT_SHARED.set(1 if limiter.shared is not None and limiter.shared_up else 0)
        for (name, version), batcher in service.batchers().items():
            m.QUEUE_ROWS.labels(name, str(version)).set(batcher.queued_rows)
            sizes, batcher.stats.sizes = batcher.stats.sizes, []
            histogram = m.BATCH_ROWS.labels(name, str(version))
            for size in sizes:
                histogram.observe(size)
        await asyncio.sleep(1.0)


def _drain_on_sigterm(service: PredictionService, seconds: float) -> None:
    """SIGTERM first takes the server out of rotation: readiness answers 503 for `seconds`
    while requests are still answered, so a balancer (or Kubernetes, which sends SIGTERM as it
    removes the pod from its Service) stops sending new ones. Then uvicorn's own shutdown runs:
    it stops accepting and lets the requests in flight finish. A second SIGTERM skips the wait.
    """
    if seconds <= 0 or threading.current_thread() is not threading.main_thread():
        return
    stop = signal.getsignal(signal.SIGTERM)  # uvicorn's: set while it serves
    if not callable(stop):
        return

    def on_sigterm(sig: int, frame: Any) -> None:
        if service.draining:
            stop(sig, frame)
            return
        service.draining = True
        log.info("SIGTERM: not ready for %.3g s while still answering, then stopping", seconds)
        timer = threading.Timer(seconds, stop, args=(sig, None))
        timer.daemon = True
        timer.start()

    signal.signal(signal.SIGTERM, on_sigterm)


def _leave_with_supervisor() -> None:
    """A worker of `shipyard server --workers N` drains and exits if its supervisor dies."""
    supervisor = os.environ.get("SHIPYARD_SUPERVISOR_PID", "")
    if not supervisor.isdigit() or os.environ.get("SHIPYARD_WORKERS", "1") == "1":
        return

    def orphaned() -> None:
        log.warning("the server's supervisor process is gone; this worker stops")
        os.kill(os.getpid(), signal.SIGTERM)

    # it may have died while this worker was starting: then leave now
    watch_parent(int(supervisor), orphaned)


# -- the published API --------------------------------------------------------------------------

_SECURITY_SCHEMES = {
    "bearer": {
        "type": "http",
        "scheme": "bearer",
        "description": "`Authorization: Bearer <key>` (create one: `shipyard keys create`)",
    },
    "apiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key"},
}


def _scopes_of(route: APIRoute) -> list[str] | None:
    declared = (route.openapi_extra or {}).get("x-scopes")
    if declared is not None:
        return list(declared)
    stack = list(route.dependant.dependencies)
    while stack:
        dependant = stack.pop()
        scopes = getattr(dependant.call, SCOPE_ATTRIBUTE, None)
        if scopes is not None:
            return sorted(scopes)
        stack.extend(dependant.dependencies)
    return None


def _openapi(app: FastAPI) -> dict[str, Any]:
    """The OpenAPI document, with who may call what: security schemes, and per operation
    the scopes it needs (in its description and as `x-scopes`)."""
    if app.openapi_schema is not None:
        return app.openapi_schema
    document = get_openapi(
        title=app.title, version=app.version, description=app.description, routes=app.routes
    )
    document.setdefault("components", {})["securitySchemes"] = _SECURITY_SCHEMES
    paths = document.get("paths", {})
    for route in app.routes:
        if not isinstance(route, APIRoute) or not route.include_in_schema:
            continue
        scopes = _scopes_of(route)
        for method in route.methods or ():
            operation = paths.get(route.path_format, {}).get(method.lower())
            if operation is None:
                continue
            for status, response in list(operation.get("responses", {}).items()):
                if status == "422" and "HTTPValidationError" in str(response):
                    del operation["responses"][status]  # ours are 400 MalformedRequest
                    continue
                content = response.get("content", {})
                if status >= "400" and "application/json" not in content and content:
                    # errors are JSON whatever the route answers when it succeeds (HTML, text)
                    response["content"] = {"application/json": next(iter(content.values()))}
            if scopes is None:
                operation["security"] = []
                continue
            operation["security"] = [{"bearer": []}, {"apiKey": []}]
            operation["x-scopes"] = scopes
            needs = " or ".join(f"`{s}`" for s in scopes)
            operation["description"] = (
                f"{operation.get('description', '')}\n\nNeeds an API key with scope {needs} "
                "(an admin key may do everything); a key bound to a model may only touch it."
            ).strip()
    for name in ("HTTPValidationError", "ValidationError"):
        document.get("components", {}).get("schemas", {}).pop(name, None)
    app.openapi_schema = document
    return document


def _docs(app: FastAPI) -> None:
    """`/docs` (Swagger UI) and `/redoc` from assets shipped with the package: no CDN."""
    assets = resources.files("fastapi_offline") / "static"
    app.mount("/docs/assets", StaticFiles(directory=str(assets)), name="docs-assets")

    @app.get("/docs", include_in_schema=False)
    async def swagger() -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url="/openapi.json",
            title="shipyard API",
            swagger_js_url="/docs/assets/swagger-ui-bundle.js",
            swagger_css_url="/docs/assets/swagger-ui.css",
            swagger_favicon_url="/docs/assets/favicon.png",
        )

    @app.get("/redoc", include_in_schema=False)
    async def redoc() -> HTMLResponse:
        return get_redoc_html(
            openapi_url="/openapi.json",
            title="shipyard API",
            redoc_js_url="/docs/assets/redoc.standalone.js",
            redoc_favicon_url="/docs/assets/favicon.png",
            with_google_fonts=False,
        )


# -- the app --------------------------------------------------------------------------------------


def create_app(settings: Settings | None = None) -> FastAPI:
    """The prediction server: `/v1` (predict, feedback, registry, keys, monitoring, runs,
    jobs), `/v2` (Open Inference Protocol), `/metrics`, `/docs`."""
    settings = settings or Settings()
    services = build_services(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        registry = services.registry
        await anyio.to_thread.run_sync(registry.database.open)
        if settings.auth == "off":
            log.warning(
                "AUTHENTICATION IS OFF (SHIPYARD_AUTH=off): anyone who can reach this server can "
                "score, read and change every model; never run it like this in production"
            )
        shared_database = not settings.resolved_database_url.startswith("sqlite")
        if settings.auth == "on" and settings.session_secret is None and shared_database:
            log.warning(
                "SHIPYARD_SESSION_SECRET is not set: dashboard sessions are signed with a secret "
                "kept in %s, so a session signed in on this machine is not valid on another "
                "replica; set the same secret on every replica",
                settings.home / "session.secret",
            )
        if services.limiter.shared is None and os.environ.get("SHIPYARD_WORKERS", "1") != "1":
            log.warning(
                "rate limits are kept per worker process; set SHIPYARD_REDIS_URL to share them "
                "across workers and replicas"
            )
        abandoned = await anyio.to_thread.run_sync(registry.clean_up_abandoned)
        if abandoned:
            log.warning("removed registrations that never finished: %s", ", ".join(abandoned))
        await anyio.to_thread.run_sync(services.writer.start)
        await services.predictions.start()
        grpc_server = None
        if settings.grpc_port is not None:
            from shipyard.serving import GrpcServer

            grpc_server = GrpcServer(
                services.predictions, services.guard, settings.grpc_host, settings.grpc_port
            )
            await grpc_server.start()
        _leave_with_supervisor()
        _drain_on_sigterm(services.predictions, settings.drain_seconds)
        # everything loaded so far (libraries, models) lives as long as the server: moving it out
        # of the collector's view keeps full collections short, and with them the tail latency
        gc.collect()
        gc.freeze()
        gauges = asyncio.get_running_loop().create_task(_update_gauges(services))
        loaded = ", ".join(
            f"{s.name}:{s.version} ({s.predictor.runtime})" for s in services.predictions.loaded()
        )
        log.info(
            "serving %s", loaded or "no models yet (deploy a version or point an alias at one)"
        )
        try:
            yield
        finally:
            gauges.cancel()
            if grpc_server is not None:
                await grpc_server.stop()
            services.reports.close()
            services.features.close()
            await services.predictions.stop()
            await anyio.to_thread.run_sync(services.writer.close)
            if services.limiter.shared is not None:
                await services.limiter.shared.close()
            registry.close()

    app = FastAPI(
        title="shipyard",
        version=__version__,
        description=(
            "Prediction API: shipyard's /v1 and the Open Inference Protocol (KServe V2) under /v2. "
            "Send an API key as `Authorization: Bearer <key>` or `X-API-Key`. Errors answer "
            '`{"error": {"type", "message", "details"}}` (under /v2: `{"error": "..."}`).'
        ),
        lifespan=lifespan,
        default_response_class=JSONBytes,
        docs_url=None,
        redoc_url=None,
        exception_handlers={
            e.ShipyardError: _shipyard_error,
            RequestValidationError: _validation_error,
            StarletteHTTPException: _http_error,
            Exception: _unexpected,
        },
    )
    app.state.services = services
    guard = services.guard

    def runs_of(model: str) -> set[str]:
        return {v.run_id for v in services.registry.list_versions(model) if v.run_id}

    for router in (
        *serving_api.routers(services.predictions, guard, services.uploads),
        registry_api.router(services.registry, guard),
        access_api.router(services.keys, guard),
        monitoring_api.router(services.monitor, guard, services.reports),
        tracking_api.router(services.tracker, guard, runs_of),
        retraining_api.router(services.registry, guard),
        features_api.router(services.features, guard),
        ui_api.router(
            Views(
                services.registry,
                services.monitor,
                services.tracker,
                services.keys,
                services.reports.report,
            ),
            guard,
            services.sessions,
            services.keys,
            services.registry,
            services.reports,
        ),
    ):
        # each router's routes carry their full paths, tags and responses already; adding them
        # as they are keeps `app.routes` the flat list of every route (for the OpenAPI document
        # and the `Allow` header), whatever FastAPI's include_router does with them
        app.router.routes.extend(router.routes)

    @app.get(
        "/metrics",
        tags=["observability"],
        summary="Prometheus metrics",
        response_class=PlainTextResponse,
        responses={200: {"content": {"text/plain": {"schema": {"type": "string"}}}}},
    )
    async def metrics() -> Response:
        body, content_type = m.render()
        return Response(body, media_type=content_type)

    app.mount("/ui/static", StaticFiles(directory=str(ui_api.static_dir())), name="ui-static")

    @app.get("/", include_in_schema=False)
    async def root() -> RedirectResponse:
        return RedirectResponse("/ui", status_code=307)

    _docs(app)
    app.openapi = lambda: _openapi(app)  # type: ignore[method-assign]
    app.add_middleware(RequestContext, access_log=settings.access_log)
    return app


def factory() -> FastAPI:
    """Entry for `uvicorn --factory shipyard.app:factory` and multi-worker servers."""
    settings = Settings()
    from shipyard.core.logs import configure_logging

    configure_logging(settings.log_format, os.environ.get("SHIPYARD_LOG_LEVEL", "info"))
    limit_native_threads(settings.predict_threads)
    return create_app(settings)


def limit_native_threads(threads: int) -> None:
    """Let native libraries use `threads` threads per model call in this serving process.
    Requests are small and many: with a thread per core, OpenMP's and BLAS's threads spin
    against the other workers' and the logging's, and a 10-row call took up to 1 s on a busy
    2-core machine instead of 150 ms at one thread (measured). The variables are read when a
    library loads (OpenMP loads with the first model); BLAS, loaded with numpy, is set here."""
    from threadpoolctl import threadpool_limits

    for variable in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[variable] = str(threads)
    threadpool_limits(limits=threads, user_api="blas")
