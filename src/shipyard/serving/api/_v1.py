"""shipyard's own scoring API: `/v1/models/{name}/predict`, `/v1/feedback`, `/v1/serving`."""

# no `from __future__ import annotations`: FastAPI reads the annotations of routes defined
# inside the router factory, which name its local dependencies

from typing import Annotated, Any

from fastapi import APIRouter, Body, Depends, Request
from fastapi.responses import Response
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictFloat,
    StrictInt,
    TypeAdapter,
)

from shipyard.access.api import Caller, Guard
from shipyard.core import parse_version, validate_model_name
from shipyard.core.api import (
    GUARDED,
    DirectRoute,
    JSONRoute,
    ModelName,
    VersionPath,
    error_responses,
)
from shipyard.core.errors import MalformedRequest, ModelUnavailable
from shipyard.logstore import (
    LogReader,
    ResolvedFeedback,
    label_changes,
    parse_feedback,
    record_feedback,
    resolve_feedback,
    type_labels,
)
from shipyard.registry import PredictionResult, ServedModel
from shipyard.serving._service import PredictionService
from shipyard.serving._uploads import EdgeUploads
from shipyard.serving.api._io import HttpScoring, inline_schema

__all__ = ["FeedbackAnswer", "PredictRequest", "PredictResponse", "routers"]


class PredictRequest(BaseModel):
    """Records to score: one object of feature values each."""

    instances: list[dict[str, Any]] = Field(
        min_length=1,
        description="records: one object of feature values per row",
        examples=[[{"transaction_amount": 42.5, "merchant_category": "grocery"}]],
    )
    routing_key: str | None = Field(
        default=None,
        description="keeps a customer on one variant of a canary or A/B test (or send the "
        "X-Routing-Key header, or set the deployment's routing field)",
    )
    explain: bool = Field(
        default=False,
        description="also answer each record's explanation: every feature's contribution and "
        "the base value, adding up to the model's output in the space named (log-odds, margin, "
        "probability or value), and the method used (linear, tree-shap: exact; permutation: "
        "sampled, with each contribution's standard error)",
    )


class PredictResponse(BaseModel):
    model: str
    version: int = Field(description="the version that answered")
    variant: str = Field(description="primary, canary, ab, or pinned")
    predictions: list[dict[str, Any]] = Field(
        description="per record: score, label and threshold (binary); label, score and "
        "probabilities (multiclass); value (regression); and its explanation when asked for"
    )
    prediction_ids: list[str] = Field(description="send these back with labels (/v1/feedback)")


Label = StrictBool | StrictInt | StrictFloat | Annotated[str, Field(max_length=256)]


class FeedbackItem(BaseModel):
    model_config = ConfigDict(extra="forbid")

    prediction_id: str = Field(
        max_length=128, description="an id a prediction answered, or a device's uploaded one"
    )
    label: Label = Field(description="what actually happened (e.g. 1 for fraud)")


class FeedbackBatch(BaseModel):
    model_config = ConfigDict(extra="forbid")

    feedback: list[FeedbackItem] = Field(min_length=1, max_length=10_000)


FeedbackBody = (
    FeedbackItem
    | Annotated[list[FeedbackItem], Field(min_length=1, max_length=10_000)]
    | FeedbackBatch
)


_FEEDBACK_SCHEMA = inline_schema(TypeAdapter(FeedbackBody))


class FeedbackAnswer(BaseModel):
    accepted: int = Field(description="labels stored (verified or pending)")
    pending: list[str] = Field(
        description="ids not in the logs yet (another replica's spool); joined once they land"
    )
    unknown: list[dict[str, str]] = Field(description="ids refused, each with the reason")


class ServingState(BaseModel):
    ready: bool
    problems: list[str] = Field(description="why the server is not ready")
    degraded: list[str] = Field(
        description="ready, but serving from state older than usual (e.g. the database is away)"
    )
    models: dict[str, dict[str, Any]]


def _decode(body: Any, service: PredictionService) -> Any:
    if not isinstance(body, dict) or "instances" not in body:
        raise MalformedRequest(
            'send {"instances": [{...}, ...]}: a list of records, one object of feature values each'
        )
    records = body["instances"]
    if isinstance(records, list):
        service.check_batch(len(records))

    def decode(served: ServedModel) -> tuple[Any, int]:
        rows = service.with_features(served, records) if served.feature_refs else records
        return served.signature.validate_records(rows), len(records)

    return decode


def _explain(body: Any) -> bool:
    flag = body.get("explain", False)
    if not isinstance(flag, bool):
        raise MalformedRequest(f"'explain' must be true or false, got {str(flag)[:40]!r}")
    return flag


def _render(result: PredictionResult, served: ServedModel, body: Any) -> dict[str, Any]:
    return {
        "model": served.name,
        "version": served.version,
        "variant": result.variant,
        "predictions": result.records(),
        "prediction_ids": result.ids,
    }


_PREDICT_DOCS = {
    "requestBody": {
        "required": True,
        "content": {"application/json": {"schema": inline_schema(PredictRequest)}},
    },
    "x-scopes": ["predict"],
}
_SCORING_ERRORS = error_responses(*GUARDED, 404, 413, 415, 422, 504)


def routers(service: PredictionService, guard: Guard, uploads: EdgeUploads) -> list[APIRouter]:
    """`/v1` scoring (direct routes, off FastAPI's dependency solving) and the rest of `/v1`."""
    scoring = HttpScoring(service, guard)
    direct = APIRouter(tags=["predict"], route_class=DirectRoute)

    @direct.post(
        "/v1/models/{name}/predict",
        openapi_extra=_PREDICT_DOCS,
        response_model=PredictResponse,
        responses=_SCORING_ERRORS,
        summary="Score records on the serving deployment",
    )
    async def predict(request: Request, name: ModelName) -> Response:
        """Score one or many records; the deployment decides which version answers."""
        validate_model_name(name)
        return await scoring.serve(
            request, name, None, _decode, _render, records=True, explain=_explain
        )

    @direct.post(
        "/v1/models/{name}/versions/{version}/predict",
        openapi_extra=_PREDICT_DOCS,
        response_model=PredictResponse,
        responses=_SCORING_ERRORS,
        summary="Score records on a pinned version",
    )
    async def predict_version(request: Request, name: ModelName, version: VersionPath) -> Response:
        """Score one or many records with a specific version."""
        validate_model_name(name)
        pinned = parse_version(str(version))
        return await scoring.serve(
            request, name, pinned, _decode, _render, records=True, explain=_explain
        )

    feedback_route = type(
        "FeedbackRoute", (JSONRoute,), {"body_limit": service.settings.max_body_bytes}
    )
    v1 = APIRouter(prefix="/v1", tags=["predict"], route_class=feedback_route)

    def resolved(body: Annotated[Any, Body()]) -> ResolvedFeedback:
        # typed and bounded by parse_feedback, whose messages say what to send (pydantic's
        # for a three-way union do not); the schema it checks is FeedbackBody, documented
        writer = service.writer
        if writer is None:
            raise ModelUnavailable(
                "this server does not keep prediction logs, so it cannot take labels"
            )
        pairs = parse_feedback(body)
        return resolve_feedback(pairs, writer, LogReader(writer.store), uploaded=uploads.find)

    async def touched(
        feedback: Annotated[ResolvedFeedback, Depends(resolved)],
    ) -> set[str]:
        return feedback.models

    @v1.post(
        "/feedback",
        openapi_extra={
            "requestBody": {
                "required": True,
                "content": {"application/json": {"schema": _FEEDBACK_SCHEMA}},
            }
        },
        response_model=FeedbackAnswer,
        responses=error_responses(*GUARDED, 413, 415, 422),
        summary="Ground truth for earlier predictions",
        description="Each label is checked against the output of the version that made the "
        "prediction (a class the model knows, a number for a regressor): one that does not fit "
        "answers 422 naming every bad label, and nothing of the request is stored. A label "
        "that replaces a different earlier one is recorded in the audit trail.",
    )
    def feedback(
        caller: Annotated[Caller, guard.require("predict", "write", touches=touched)],
        labels: Annotated[ResolvedFeedback, Depends(resolved)],
    ) -> dict[str, Any]:
        """Labels for prediction ids; ids that are not logged predictions are reported back,
        not dropped silently. A key bound to a model labels only that model's predictions."""
        assert service.writer is not None
        labels = type_labels(labels, service.output_of)
        changes = label_changes(labels, LogReader(service.writer.store))
        if changes:
            service.audit_label_changes(changes, caller.actor)
        result = record_feedback(
            labels, service.writer, key_id=caller.key.id, bound_to=caller.key.model
        )
        return result.to_dict()

    @v1.get(
        "/serving",
        response_model=ServingState,
        responses=error_responses(*GUARDED),
        summary="What this server process serves now (plan, loaded versions)",
    )
    def serving(caller: Annotated[Caller, guard.require("read")]) -> dict[str, Any]:
        """The deployment revision each model the key may see serves in this process, and
        whether it is all loaded."""
        loaded = {(s.name, s.version): s.predictor.runtime for s in service.loaded()}
        models = {
            name: {
                **plan.to_dict(),
                "loaded": {str(v.version): loaded.get((name, v.version)) for v in plan.variants},
            }
            for name, plan in sorted(service.plans.items())
            if caller.may_see(name)
        }
        readiness = service.readiness()
        return caller.shown(  # type: ignore[no-any-return]
            {
                "ready": readiness.ready,
                "problems": [p for p in readiness.problems if _visible(p, caller, service)],
                "degraded": readiness.degraded,
                "models": models,
            }
        )

    return [direct, v1]


def _visible(problem: str, caller: Caller, service: PredictionService) -> bool:
    """Problems of other models are not for a key bound to one."""
    mine = caller.key.model
    if mine is None or problem.startswith(f"{mine}:"):
        return True
    return not any(problem.startswith(f"{name}:") for name in service.known | set(service.plans))
