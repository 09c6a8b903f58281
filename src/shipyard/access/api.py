"""HTTP face of access control: the one authorisation step every route goes through, and
`/v1/keys`.

Every route declares what it needs with `guard.require(scope, ..., touches=resolver)`:

    authenticate the key (a snapshot in memory; bad keys are budgeted per client)
      -> check its scope
      -> resolve the model(s) the call touches: the `{name}` in the path, and whatever the
         route's resolver finds (the model of a rule, of a prediction id, named in the body)
      -> check the key's model binding against each of them
      -> take a rate-limit token

and gets back the `Caller`, whose key listings use to show only what it may see. The scoring
routes, which skip FastAPI's dependency solving for speed, call the same `Guard.check`; the
gRPC methods the same `Authorizer` underneath.
"""

# no `from __future__ import annotations`: FastAPI reads the annotations of routes defined
# inside the router factory, which name its local dependencies

from collections.abc import Awaitable, Callable, Iterable
from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Path, Query, Request
from pydantic import BaseModel, ConfigDict, Field, StrictFloat, StrictInt

from shipyard.access._guard import Authorizer, Caller, client_key
from shipyard.access._keys import parse_rate
from shipyard.access._keystore import KeyStore
from shipyard.core.api import GUARDED, JSONRoute, error_responses

__all__ = ["Caller", "Guard", "KeyOut", "NewKey", "router"]

ModelTouches = Callable[..., Awaitable[Iterable[str]]]
SCOPE_ATTRIBUTE = "shipyard_scopes"  # set on each guard dependency; the OpenAPI document reads it


def _client(request: Request) -> str:
    return client_key(request.client.host if request.client is not None else None)


class Guard(Authorizer):
    """The authorisation step for HTTP: from a request's headers, and as a route dependency."""

    async def check(
        self, request: Request, needed: frozenset[str], models: Iterable[str | None] = ()
    ) -> Caller:
        """The whole step: who, which scope, which models, and a rate-limit token."""
        headers = request.headers
        key = await self.authenticate(
            headers.get("authorization"), headers.get("x-api-key"), _client(request)
        )
        request.state.key = key  # the error handler shows what this key may see
        return await self.admit(key, needed, models)

    def require(self, *scopes: str, touches: ModelTouches | None = None) -> Any:
        """A route dependency giving the `Caller`: a key with one of `scopes`, bound (if at all)
        to the model in the path and to every model `touches` resolves.

        `touches` is itself a dependency (it may take the route's body or parameters); it runs
        only once the key is authenticated and has the scope.
        """
        needed = frozenset(scopes)

        async def authorized(request: Request) -> Caller:
            return await self.check(request, needed, [request.path_params.get("name")])

        if touches is None:
            setattr(authorized, SCOPE_ATTRIBUTE, needed)
            return Depends(authorized)

        async def bound(
            caller: Annotated[Caller, Depends(authorized)],
            models: Annotated[Iterable[str], Depends(touches)],
        ) -> Caller:
            for model in models:  # found by the route, not named by the caller: not named back
                caller.key.check_model(model, reveal=False)
            return caller

        setattr(bound, SCOPE_ATTRIBUTE, needed)
        return Depends(bound)


# -- /v1/keys -----------------------------------------------------------------------------------

Scope = Literal["predict", "read", "write", "admin"]
_RATE_TEXT = r"^\s*\d{1,9}(\.\d{1,6})?\s*/\s*(s|sec|second|m|min|minute|h|hour)\s*$"
_PRINTABLE = r"^[^\x00-\x1f\x7f]*$"
_MODEL = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$"


class NewKey(BaseModel):
    """A key to create."""

    model_config = ConfigDict(extra="forbid")

    scope: Scope = Field(
        description="what the key may do: predict, read, write (and read) or admin"
    )
    model: str | None = Field(
        default=None, max_length=128, pattern=_MODEL, description="bind the key to one model"
    )
    rate: (
        Annotated[str, Field(max_length=32, pattern=_RATE_TEXT)]
        | Annotated[StrictFloat | StrictInt, Field(gt=0, le=1_000_000)]
        | None
    ) = Field(
        default=None,
        description="sustained rate: '100/s', '6000/min', '50/h', or requests per second",
        examples=["100/s"],
    )
    burst: Annotated[StrictInt, Field(ge=1, le=1_000_000)] | None = Field(
        default=None, description="requests allowed at once above the rate (needs a rate)"
    )
    name: str = Field(
        default="", max_length=256, pattern=_PRINTABLE, description="what the key is for"
    )
    feature_views: (
        list[Annotated[str, Field(max_length=63, pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")]] | None
    ) = Field(
        default=None,
        max_length=100,
        description="the feature views the key may read (all if absent)",
    )


class KeyOut(BaseModel):
    """A stored key, without its secret."""

    id: str
    name: str
    scope: Scope
    model: str | None
    rate_per_second: float | None
    burst: int | None
    created_at: datetime
    created_by: str
    revoked_at: datetime | None
    feature_views: list[str] | None = None


class KeyList(BaseModel):
    keys: list[KeyOut]


class KeyEnvelope(BaseModel):
    key: KeyOut


class CreatedKey(BaseModel):
    key: KeyOut
    token: str = Field(description="the key itself; shown this once, never stored")


KeyId = Annotated[str, Path(pattern=r"^[0-9a-f]{16}$", description="a key's 16-hex-digit id")]


def router(keys: KeyStore, guard: Guard) -> APIRouter:
    """`/v1/keys`: admin keys manage keys, never one that can do more than themselves."""
    api = APIRouter(
        prefix="/v1/keys",
        tags=["keys"],
        route_class=JSONRoute,
        responses=error_responses(*GUARDED, 404, 413, 415, 422),
    )
    admin = guard.require("admin")

    @api.get("", response_model=KeyList, summary="List API keys")
    def list_keys(
        caller: Annotated[Caller, admin],
        include_revoked: Annotated[bool, Query(description="list revoked keys too")] = False,
    ) -> dict[str, Any]:
        """Keys, oldest first; a key bound to a model sees the keys bound to that model."""
        found = keys.list_keys(include_revoked=include_revoked, by=caller.key)
        return {"keys": [k.to_dict() for k in found]}

    @api.post("", status_code=201, response_model=CreatedKey, summary="Create an API key")
    def create_key(body: NewKey, caller: Annotated[Caller, admin]) -> dict[str, Any]:
        """The new key's token is in the answer, once. The key can do at most what the
        calling key can: no wider scope, and the same model binding if the caller has one."""
        rate = parse_rate(body.rate) if isinstance(body.rate, str) else body.rate
        key, token = keys.acting_as(caller.actor).create(
            body.scope,
            model=body.model,
            rate_per_second=None if rate is None else float(rate),
            burst=body.burst,
            name=body.name,
            by=caller.key,
            feature_views=body.feature_views,
        )
        return {"key": key.to_dict(), "token": token}

    @api.delete("/{key_id}", response_model=KeyEnvelope, summary="Revoke an API key")
    def revoke_key(key_id: KeyId, caller: Annotated[Caller, admin]) -> dict[str, Any]:
        """Servers stop accepting the key within their refresh interval."""
        key = keys.acting_as(caller.actor).revoke(key_id, by=caller.key)
        return {"key": key.to_dict()}

    return api
