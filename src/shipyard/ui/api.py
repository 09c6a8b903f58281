"""The dashboard's routes under `/ui`: server-rendered pages, their forms, and the JSON the
live page polls.

Every page goes through the same authorisation step as the API (`Guard.admit`: scope, model
binding, rate limit), with the key taken from a signed session cookie instead of a header
(`shipyard.access.Sessions`). Every form is typed (a pydantic model over the urlencoded body,
bounded in size), carries the session's CSRF token, and must come from this server's own pages
(`Origin`). Pages answer with a strict Content-Security-Policy: scripts and styles only from
`/ui/static`, which ships inside the package.
"""

# no `from __future__ import annotations`: FastAPI reads the annotations of routes defined
# inside the router factory, which name its local dependencies

import hashlib
import hmac
import pathlib
import time
from collections.abc import Callable
from datetime import UTC, datetime
from importlib import resources
from typing import Annotated, Any, Literal, TypeVar
from urllib.parse import parse_qs, quote, urlsplit

import anyio
from fastapi import APIRouter, Depends, Path, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from shipyard.access import (
    ANONYMOUS,
    SESSION_COOKIE,
    ApiKey,
    Caller,
    KeyStore,
    Sessions,
    client_key,
    parse_rate,
)
from shipyard.access.api import Guard
from shipyard.core import errors as e
from shipyard.core.api import JSONBytes, ModelName
from shipyard.monitoring import MAX_PERIODS, ReportProcess
from shipyard.registry import Registry
from shipyard.retraining import decide_by_person
from shipyard.serving import metrics as m
from shipyard.ui._render import render
from shipyard.ui._views import Views

__all__ = ["error_page", "router", "static_dir"]

FORM_BYTES = 16 * 1024
LIVE_SECONDS = 2
_CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
)
_HEADERS = {
    "Content-Security-Policy": _CSP,
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}
_FLASH = {
    "approved": ("The candidate was approved and promoted.", "ok"),
    "rejected": ("The candidate was rejected and rolled back.", "warning"),
    "monitored": ("Monitoring ran: a new snapshot is stored and the alert rules evaluated.", "ok"),
    "revoked": ("The key was revoked; servers refuse it within their refresh interval.", "ok"),
}
_WINDOW = r"^\s*\d{1,7}\s*[mhdwMHDW]\s*$"
_MODEL = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$"
_PRINTABLE = r"^[^\x00-\x1f\x7f]*$"
_RATE = r"^\s*\d{1,9}(\.\d{1,6})?\s*/\s*(s|sec|second|m|min|minute|h|hour)\s*$"
MAX_RATE = 1_000_000.0  # requests per second, as /v1/keys allows

Form = TypeVar("Form", bound=BaseModel)


def static_dir() -> pathlib.Path:
    """The dashboard's CSS, JavaScript and chart library, inside the package."""
    return pathlib.Path(str(resources.files("shipyard.ui") / "static"))


# -- forms ------------------------------------------------------------------------------------


class _Posted(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    csrf: str = Field(default="", max_length=128, pattern=r"^[A-Za-z0-9_-]*$")


class SignIn(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    key: str = Field(min_length=1, max_length=256)
    next: str = Field(default="/ui/models", max_length=512)


class Decide(_Posted):
    version: int = Field(ge=1, le=2**31 - 1)
    verdict: Literal["approve", "reject"]


class RunMonitoring(_Posted):
    window: str = Field(default="1d", max_length=16, pattern=_WINDOW)
    periods: int = Field(default=7, ge=1, le=MAX_PERIODS)


class NewKeyForm(_Posted):
    name: str = Field(default="", max_length=256, pattern=_PRINTABLE)
    scope: Literal["predict", "read", "write", "admin"]
    model: str = Field(default="", max_length=128, pattern=r"^$|" + _MODEL)
    rate: str = Field(default="", max_length=32, pattern=r"^$|" + _RATE)


async def _form(request: Request, model: type[Form]) -> Form:
    """The urlencoded body of `request` as `model`: bounded, one value per field, typed."""
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind != "application/x-www-form-urlencoded":
        raise e.UnsupportedMediaType(
            "the dashboard's forms send application/x-www-form-urlencoded; use the /v1 API for JSON"
        )
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > FORM_BYTES:
            raise e.PayloadTooLarge(f"a dashboard form is at most {FORM_BYTES} bytes")
    try:
        fields = parse_qs(body.decode("utf-8"), keep_blank_values=True, max_num_fields=20)
    except (UnicodeDecodeError, ValueError):
        raise e.MalformedRequest("the form is not valid UTF-8 urlencoded data") from None
    if any(len(values) > 1 for values in fields.values()):
        raise e.MalformedRequest("a form field was sent more than once")
    try:
        return model.model_validate({k: v[0] for k, v in fields.items()})
    except ValidationError as error:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in d['loc'])}: {d['msg']}" for d in error.errors()
        )
        raise e.MalformedRequest(f"the form is not valid: {problems}"[:1000]) from None


def _same_origin(request: Request) -> None:
    """Forms are posted by this server's pages only (`Origin`, else `Referer`, names it)."""
    origin = request.headers.get("origin") or request.headers.get("referer")
    if origin is None:
        return  # not a browser (curl, a test client): CSRF needs a browser carrying the cookie
    host = request.headers.get("host", "")
    try:
        netloc = urlsplit(origin).netloc
    except ValueError:
        netloc = None
    if origin == "null" or netloc != host:
        raise e.Forbidden("this form must be sent from the dashboard's own pages")


def _local(target: str) -> str:
    """Where to go after signing in: a dashboard path on this server, nothing else."""
    if not target.startswith("/ui") or target.startswith("//") or "\\" in target:
        return "/ui/models"
    return target


# -- pages --------------------------------------------------------------------------------------


def _page(template: str, code: int = 200, **context: Any) -> HTMLResponse:
    return HTMLResponse(render(template, **context), status_code=code, headers=_HEADERS)


def _see(url: str, response: Response | None = None) -> RedirectResponse:
    out = RedirectResponse(url, status_code=303, headers=_HEADERS)
    if response is not None:
        for name, value in response.headers.items():
            if name == "set-cookie":
                out.headers.append(name, value)
    return out


def error_page(request: Request, error: e.ShipyardError, status: int) -> Response:
    """What a page request gets for an error: a sign-in redirect when no session holds, else
    the error on a page (JSON under `/ui/api`)."""
    if isinstance(error, e.Unauthenticated) and request.method in ("GET", "HEAD"):
        target = quote(request.url.path + (f"?{request.url.query}" if request.url.query else ""))
        response = _see(f"/ui/login?next={target}" if len(target) <= 500 else "/ui/login")
        if request.cookies.get(SESSION_COOKIE):
            response.delete_cookie(SESSION_COOKIE, path="/ui")
        return response
    titles = {401: "Sign in needed", 403: "Not allowed", 404: "Not found", 409: "Conflict"}
    page = _page(
        "error.html.j2",
        status,
        status=status,
        title=titles.get(status, "Something is wrong with the request"),
        message=error.message,
        caller=getattr(request.state, "caller", None),
        csrf=getattr(request.state, "csrf", ""),
        auth_off=False,
        flash=None,
        section="",
    )
    retry_after = getattr(error, "retry_after", None)
    if retry_after is not None:
        page.headers["Retry-After"] = str(max(1, round(retry_after)))
    return page


def router(
    views: Views,
    guard: Guard,
    sessions: Sessions,
    keys: KeyStore,
    registry: Registry,
    reports: ReportProcess,
) -> APIRouter:
    """The dashboard over the server's services."""
    api = APIRouter(prefix="/ui", include_in_schema=False)
    auth_off = not guard.auth.enabled

    def csrf_of(request: Request) -> str:
        if auth_off:  # no session: one token per server (every worker derives the same)
            return hmac.new(sessions.secret, b"csrf.anonymous", hashlib.sha256).hexdigest()
        return sessions.csrf_token(request.cookies.get(SESSION_COOKIE, ""))

    def session_key(request: Request) -> ApiKey:
        """The key of the request's session; an unknown key id counts as a failed sign-in
        (budgeted per client, like bad API keys) before the database is asked about it."""
        cookie = request.cookies.get(SESSION_COOKIE)
        client = client_key(request.client.host if request.client is not None else None)
        key_id = sessions.key_id(cookie)
        if key_id is not None and not guard.auth.in_snapshot(key_id):
            guard.throttle.check(client)
        try:
            return sessions.key_of(cookie)
        except e.Unauthenticated:
            if cookie:
                guard.throttle.failed(client)
            raise

    def page(*scopes: str) -> Any:
        """The authorisation step of a page: the session's key, with one of `scopes`, bound
        (if at all) to the model in the path, within its rate limit."""
        needed = frozenset(scopes)

        async def authorized(request: Request) -> Caller:
            if auth_off:
                key = ANONYMOUS
            else:
                key = await anyio.to_thread.run_sync(session_key, request)
            request.state.key = key
            caller = await guard.admit(key, needed, [request.path_params.get("name")])
            request.state.caller = caller
            request.state.csrf = await anyio.to_thread.run_sync(csrf_of, request)
            return caller

        return Depends(authorized)

    async def checked(request: Request, posted: _Posted) -> None:
        """A form from this server's pages, with its session's CSRF token."""
        _same_origin(request)
        if auth_off:
            expected = await anyio.to_thread.run_sync(csrf_of, request)
            if not posted.csrf or not hmac.compare_digest(expected.encode(), posted.csrf.encode()):
                raise e.Forbidden("the form's security token is missing; reload the page")
            return
        cookie = request.cookies.get(SESSION_COOKIE, "")
        await anyio.to_thread.run_sync(sessions.check_csrf, cookie, posted.csrf)

    def context(request: Request, section: str, **values: Any) -> dict[str, Any]:
        flash = _FLASH.get(request.query_params.get("flash", ""))
        return {
            "caller": request.state.caller,
            "csrf": request.state.csrf,
            "auth_off": auth_off,
            "section": section,
            "flash": flash[0] if flash else None,
            "flash_kind": flash[1] if flash else None,
            **values,
        }

    read, write, admin = page("read"), page("write"), page("admin")

    async def in_thread(call: Callable[[], Any]) -> Any:
        return await anyio.to_thread.run_sync(call)

    # -- signing in and out ---------------------------------------------------------------------

    @api.get("/login")
    def login_page(next: Annotated[str, Query(max_length=512)] = "/ui/models") -> HTMLResponse:
        return _page(
            "login.html.j2", caller=None, csrf="", auth_off=auth_off, flash=None,
            next=_local(next), error=None,
        )  # fmt: skip

    @api.post("/login")
    async def login(request: Request) -> Response:
        _same_origin(request)
        form = await _form(request, SignIn)
        target = _local(form.next)
        if auth_off:
            return _see(target)
        host = request.client.host if request.client is not None else None
        try:
            key = await guard.authenticate(f"Bearer {form.key}", None, client_key(host))
            key.check(frozenset({"read"}))
            cookie = await anyio.to_thread.run_sync(sessions.sign_in, key, form.key)
        except (e.Unauthenticated, e.Forbidden) as error:
            status = 401 if isinstance(error, e.Unauthenticated) else 403
            message = error.message
            if isinstance(error, e.Forbidden):
                message = (
                    f"API key {key.id} has scope {key.scope!r}; the dashboard needs read, write "
                    "or admin (create one with `shipyard keys create --scope read`)"
                )
            return _page(
                "login.html.j2", status, caller=None, csrf="", auth_off=False, flash=None,
                next=target, error=message,
            )  # fmt: skip
        response = _see(target)
        response.set_cookie(
            SESSION_COOKIE,
            cookie,
            max_age=int(sessions.lifetime_seconds),
            path="/ui",
            httponly=True,
            samesite="strict",
            secure=request.url.scheme == "https"
            or request.headers.get("x-forwarded-proto") == "https",
        )
        return response

    @api.post("/logout")
    async def logout(request: Request, caller: Annotated[Caller, read]) -> Response:
        """Signs the key out everywhere: its sessions issued until now end on every server
        (from their next refresh of the keys), not only this browser's."""
        await checked(request, await _form(request, _Posted))
        if not auth_off:
            ended = datetime.now(UTC)
            await in_thread(lambda: keys.acting_as(caller.actor).end_sessions(caller.key.id, ended))
            await in_thread(lambda: guard.auth.reload(caller.key.id))  # this server: at once
        response = _see("/ui/login")
        response.delete_cookie(SESSION_COOKIE, path="/ui")
        return response

    # -- models -----------------------------------------------------------------------------------

    @api.get("")
    def home() -> Response:
        return _see("/ui/models")

    @api.get("/models")
    async def models(request: Request, caller: Annotated[Caller, read]) -> HTMLResponse:
        rows = await in_thread(lambda: views.models(caller))
        return _page("models.html.j2", **context(request, "models", models=rows))

    @api.get("/models/{name}")
    async def model(
        request: Request, name: ModelName, caller: Annotated[Caller, read]
    ) -> HTMLResponse:
        found = caller.shown(await in_thread(lambda: views.model(name, caller)))
        return _page("model.html.j2", **context(request, "models", **found))

    @api.get("/models/{name}/compare")
    async def compare(
        request: Request,
        name: ModelName,
        caller: Annotated[Caller, read],
        a: Annotated[int, Query(ge=1, le=2**31 - 1)],
        b: Annotated[int, Query(ge=1, le=2**31 - 1)],
    ) -> HTMLResponse:
        found = caller.shown(await in_thread(lambda: views.compare(name, a, b, caller)))
        return _page("compare.html.j2", **context(request, "models", **found))

    # -- monitoring -------------------------------------------------------------------------------

    @api.get("/models/{name}/monitoring")
    async def monitoring(
        request: Request,
        name: ModelName,
        caller: Annotated[Caller, read],
        window: Annotated[str | None, Query(max_length=16, pattern=_WINDOW)] = None,
        periods: Annotated[int | None, Query(ge=1, le=MAX_PERIODS)] = None,
        version: Annotated[int | None, Query(ge=1, le=2**31 - 1)] = None,
    ) -> HTMLResponse:
        found = await in_thread(
            lambda: views.monitoring(name, window.strip() if window else None, periods, version)
        )
        may_write = caller.key.allows(frozenset({"write"}), name)
        return _page(
            "monitoring.html.j2", **context(request, "models", may_write=may_write, **found)
        )

    @api.post("/models/{name}/monitoring")
    async def run_monitoring(
        request: Request, name: ModelName, caller: Annotated[Caller, write]
    ) -> Response:
        form = await _form(request, RunMonitoring)
        await checked(request, form)
        window = form.window.strip()
        await in_thread(
            lambda: reports.report(name, window, form.periods, record=True, actor=caller.actor)
        )
        return _see(
            f"/ui/models/{quote(name)}/monitoring?window={window}&periods={form.periods}"
            "&flash=monitored"
        )

    # -- retraining -------------------------------------------------------------------------------

    @api.get("/models/{name}/retraining")
    async def retraining(
        request: Request, name: ModelName, caller: Annotated[Caller, read]
    ) -> HTMLResponse:
        found = caller.shown(await in_thread(lambda: views.retraining(name, caller)))
        may_write = caller.key.allows(frozenset({"write"}), name)
        return _page(
            "retraining.html.j2", **context(request, "models", may_write=may_write, **found)
        )

    @api.post("/models/{name}/retraining/decide")
    async def decide(
        request: Request, name: ModelName, caller: Annotated[Caller, write]
    ) -> Response:
        form = await _form(request, Decide)
        await checked(request, form)
        acting = registry.acting_as(caller.actor)
        await in_thread(lambda: decide_by_person(acting, name, form.version, form.verdict))
        flash = "approved" if form.verdict == "approve" else "rejected"
        return _see(f"/ui/models/{quote(name)}/retraining?flash={flash}")

    # -- runs -------------------------------------------------------------------------------------

    @api.get("/runs")
    async def runs(
        request: Request,
        caller: Annotated[Caller, read],
        experiment: Annotated[str, Query(max_length=256)] = "",
        q: Annotated[str, Query(max_length=100)] = "",
    ) -> HTMLResponse:
        found = caller.shown(await in_thread(lambda: views.runs(experiment or None, caller)))
        if q:
            needle = q.lower()
            found["runs"] = [
                r
                for r in found["runs"]
                if needle in f"{r['id']} {r.get('name') or ''} {r['params']} {r['tags']}".lower()
            ]
        return _page("runs.html.j2", **context(request, "runs", q=q, **found))

    @api.get("/runs/compare")
    async def compare_runs(
        request: Request,
        caller: Annotated[Caller, read],
        run: Annotated[
            list[Annotated[str, Field(max_length=64, pattern=r"^[A-Za-z0-9_-]{1,64}$")]],
            Query(min_length=1, max_length=10),
        ],
    ) -> HTMLResponse:
        found = caller.shown(await in_thread(lambda: views.compare_runs(run, caller)))
        return _page(
            "runs_compare.html.j2",
            **context(request, "runs", compared=found, records=found["records"]),
        )

    # -- live -------------------------------------------------------------------------------------

    @api.get("/live")
    async def live(
        request: Request,
        caller: Annotated[Caller, read],
        model: Annotated[str | None, Query(max_length=128, pattern=_MODEL)] = None,
    ) -> HTMLResponse:
        caller.only(model)
        return _page("live.html.j2", **context(request, "live", model=model, every=LIVE_SECONDS))

    @api.get("/api/live")
    async def live_sample(
        caller: Annotated[Caller, read],
        model: Annotated[str | None, Query(max_length=128, pattern=_MODEL)] = None,
    ) -> JSONBytes:
        only = caller.only(model)
        series = [s for s in m.live_sample() if only is None or s["model"] == only]
        series = [s for s in series if caller.may_see(s["model"])]
        return JSONBytes(
            {"at": time.time(), "series": series}, headers={"Cache-Control": "no-store"}
        )

    @api.get("/api/models/{name}/deployment")
    async def deployment(name: ModelName, caller: Annotated[Caller, read]) -> JSONBytes:
        """The model's traffic split as it stands (the model page watches it)."""
        found = await in_thread(lambda: registry.deployment(name))
        body = {"variants": [], "revision": None} if found is None else found.to_dict()
        return JSONBytes(body, headers={"Cache-Control": "no-store"})

    # -- keys -------------------------------------------------------------------------------------

    def keys_page(
        request: Request, caller: Caller, show_revoked: bool, created: str | None
    ) -> HTMLResponse:
        found = keys.list_keys(include_revoked=show_revoked, by=caller.key)
        return _page(
            "keys.html.j2",
            **context(
                request, "keys", keys=[k.to_dict() for k in found], created=created,
                show_revoked=show_revoked,
            ),
        )  # fmt: skip

    @api.get("/keys")
    async def keys_list(
        request: Request,
        caller: Annotated[Caller, admin],
        revoked: Annotated[bool, Query()] = False,
    ) -> HTMLResponse:
        return await in_thread(lambda: keys_page(request, caller, revoked, None))  # type: ignore[no-any-return]

    @api.post("/keys")
    async def keys_create(request: Request, caller: Annotated[Caller, admin]) -> HTMLResponse:
        form = await _form(request, NewKeyForm)
        await checked(request, form)
        rate = parse_rate(form.rate) if form.rate else None
        if rate is not None and not 0 < rate <= MAX_RATE:
            raise e.InvalidInput(f"rate: at most {MAX_RATE:,.0f} requests per second, above 0")

        def create() -> HTMLResponse:
            _, token = keys.acting_as(caller.actor).create(
                form.scope,
                model=form.model or None,
                rate_per_second=rate,
                name=form.name,
                by=caller.key,
            )
            return keys_page(request, caller, False, token)

        return await in_thread(create)  # type: ignore[no-any-return]

    @api.post("/keys/{key_id}/revoke")
    async def keys_revoke(
        request: Request,
        key_id: Annotated[str, Path(pattern=r"^[0-9a-f]{16}$")],
        caller: Annotated[Caller, admin],
    ) -> Response:
        await checked(request, await _form(request, _Posted))
        await in_thread(lambda: keys.acting_as(caller.actor).revoke(key_id, by=caller.key))
        return _see("/ui/keys?flash=revoked")

    return api
