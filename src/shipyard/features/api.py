"""/v1/features: feature views (read) and online features for clients that want them without
a prediction. A key limited to some feature views (`keys create --features`) reads only those."""

# no `from __future__ import annotations`: FastAPI reads the annotations of routes defined
# inside `router()` at runtime

from datetime import datetime
from typing import Annotated, Any

import anyio
from fastapi import APIRouter, Path, Query
from pydantic import BaseModel, ConfigDict, Field, StrictInt, StrictStr
from sqlalchemy.engine import make_url

from shipyard.access.api import Caller, Guard
from shipyard.core.api import GUARDED, JSONRoute, error_responses
from shipyard.features._definitions import parse_refs
from shipyard.features._repository import StoredView
from shipyard.features._store import FeatureStore

__all__ = ["OnlineRequest", "OnlineResponse", "router"]

_REF = r"^[A-Za-z_][A-Za-z0-9_]{0,62}(@v?\d{1,9})?:([A-Za-z_][A-Za-z0-9_]{0,62}|\*)$"
_NAME = r"^[A-Za-z_][A-Za-z0-9_]{0,62}$"
KeyValue = (
    Annotated[StrictInt, Field(ge=-(2**63), le=2**63 - 1)]
    | Annotated[StrictStr, Field(max_length=256)]
)
ViewName = Annotated[str, Path(max_length=63, pattern=_NAME)]


class OnlineRequest(BaseModel):
    """Entity rows (their join keys) and the features to read for each."""

    model_config = ConfigDict(extra="forbid")

    features: list[Annotated[str, Field(max_length=140, pattern=_REF)]] = Field(
        min_length=1,
        max_length=200,
        description="view:feature, view@VERSION:feature or view:* (every feature)",
        examples=[["customer_stats:customer_avg_transaction_amount_30d"]],
    )
    entities: list[
        Annotated[dict[Annotated[str, Field(max_length=63)], KeyValue], Field(max_length=16)]
    ] = Field(
        min_length=1,
        max_length=1000,
        description="one object of join keys per entity row",
        examples=[[{"customer_id": 42, "merchant_id": 7}]],
    )
    full_names: bool = Field(default=False, description="name features view__feature")


class OnlineRow(BaseModel):
    values: dict[str, Any] = Field(description="feature -> value (null when missing or stale)")
    status: dict[str, str] = Field(description="view -> ok, missing or stale")
    event_times: dict[str, datetime | None] = Field(description="view -> time of its value")


class OnlineResponse(BaseModel):
    views: dict[str, int] = Field(description="the version of each view read")
    results: list[OnlineRow]
    missing: dict[str, int]
    stale: dict[str, int]


class ViewOut(BaseModel):
    name: str
    version: int
    spec: dict[str, Any]
    fingerprint: str
    created_at: datetime | None
    created_by: str


class ViewList(BaseModel):
    views: list[ViewOut]


def public(view: StoredView, caller: Caller) -> dict[str, Any]:
    """A stored view as `caller` sees it: a SQL source's URL never with its password, and
    for keys other than admin, file paths (sources, transforms) without their folders."""
    spec = dict(view["spec"])
    source = dict(spec.get("source") or {})
    if source.get("kind") == "sql":
        source["url"] = make_url(source["url"]).render_as_string(hide_password=True)
    spec["source"] = source
    return {**view, "spec": caller.shown(spec)}


def router(store: FeatureStore, guard: Guard) -> APIRouter:
    api = APIRouter(
        prefix="/v1/features",
        tags=["features"],
        route_class=JSONRoute,
        responses=error_responses(*GUARDED, 404, 422),
    )
    readers = guard.require("predict", "read")

    @api.post(
        "/online",
        response_model=OnlineResponse,
        responses=error_responses(413, 415),
        summary="Online features of entity rows",
    )
    async def online(body: OnlineRequest, caller: Annotated[Caller, readers]) -> dict[str, Any]:
        """Each entity row's features from the online store, as of now: a value older than
        its view's TTL is null and reported as stale."""
        caller.key.check_views(view for view, _, _ in parse_refs(body.features))
        result = await anyio.to_thread.run_sync(
            lambda: store.get_online(body.entities, body.features, full_names=body.full_names)
        )
        return {
            "views": result.views,
            "results": [
                {"values": v, "status": s, "event_times": t}
                for v, s, t in zip(result.values, result.status, result.event_times, strict=True)
            ],
            "missing": result.missing,
            "stale": result.stale,
        }

    @api.get("/views", response_model=ViewList, summary="Feature views (latest versions)")
    def views(caller: Annotated[Caller, readers]) -> dict[str, Any]:
        """The views this key may read (a SQL source's database password is not shown)."""
        readable = [v for v in store.views() if caller.key.may_read_view(v["name"])]
        return {"views": [public(v, caller) for v in readable]}

    @api.get("/views/{view}", response_model=ViewOut, summary="One feature view")
    def view(
        view: ViewName,
        caller: Annotated[Caller, readers],
        version: Annotated[int | None, Query(ge=1, le=1_000_000_000)] = None,
    ) -> Any:
        caller.key.check_views([view])
        return public(store.view(view, version), caller)

    return api
