"""`shipyard.Client` and `shipyard.AsyncClient`: call a shipyard server the way production
callers should: a time budget per call, retries only where they can help, a circuit breaker,
and a safe default when the service cannot answer in time.

    client = shipyard.Client("http://fraud-api:8000", api_key=KEY, timeout=0.5, retries=2,
                             fallback={"score": 0.0, "label": 0})
    answer = client.predict("fraud-detector", {"transaction_amount": 42.5, ...})
    if answer.fallback: ...   # the safe default, marked as such

    # predictions a device made offline, uploaded later (safe to send again)
    client.upload_predictions("fraud-detector", 3, "till-17", rows)

    # hybrid: an exported model answers what it is sure of, the server the rest
    client = shipyard.Client(URL, api_key=KEY, edge="fraud-phone/", defer_below=0.8)
    client.predict("fraud-detector", rows).answered_by   # ["edge", "server", ...]
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import orjson

from shipyard.client._edge import Edge
from shipyard.client._policy import RETRY_STATUSES, CircuitBreaker, RetryPolicy
from shipyard.core import errors as e
from shipyard.core.status import HTTP_STATUS
from shipyard.core.version import __version__

__all__ = ["AsyncClient", "Client", "Prediction"]

log = logging.getLogger("shipyard.client")

Fallback = Mapping[str, Any] | Callable[[list[dict[str, Any]]], list[dict[str, Any]]] | None
_MAX_DEADLINE_MS = 60_000.0  # servers refuse a longer X-Deadline-Ms with 400
_UPLOAD_ROWS = 10_000  # the most predictions one `POST /v1/logs/upload` takes
_UPLOAD_TIMEOUT = 60.0  # seconds per upload call: an upload is background work, not a request
# every class of the tree, not only those in HTTP_STATUS: the server names the exact one
_ERRORS: dict[str, type[e.ShipyardError]] = {
    name: cls
    for name, cls in vars(e).items()
    if isinstance(cls, type) and issubclass(cls, e.ShipyardError)
}


@dataclass(frozen=True)
class Prediction:
    """A server's answer to one predict call, or the fallback (`fallback=True`)."""

    model: str
    version: int | None
    predictions: list[dict[str, Any]]
    prediction_ids: list[str] = field(default_factory=list)
    variant: str | None = None
    fallback: bool = False
    reason: str | None = None
    answered_by: list[str] = field(default_factory=list)
    """Per row, who answered: `server`, `edge` (a hybrid client's exported model) or
    `fallback`."""

    @property
    def first(self) -> dict[str, Any]:
        return self.predictions[0]


def _records(records: Mapping[str, Any] | Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    if isinstance(records, Mapping):
        return [dict(records)]
    return [dict(r) for r in records]


def _body(rows: list[dict[str, Any]], explain: bool) -> dict[str, Any]:
    return {"instances": rows, "explain": True} if explain else {"instances": rows}


def _retry_after(response: httpx.Response) -> float | None:
    value = response.headers.get("retry-after")
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None


def _error(response: httpx.Response) -> e.ShipyardError:
    """The shipyard error a non-2xx answer stands for, with the server's message."""
    try:
        body = response.json()
    except ValueError:
        body = None
    error = body.get("error") if isinstance(body, dict) else None
    if isinstance(error, dict):
        message, kind = str(error.get("message", "")), str(error.get("type", ""))
    else:
        message, kind = str(error or response.text[:500]), ""
    cls = _ERRORS.get(kind) or next(
        (
            c
            for c, s in HTTP_STATUS.items()
            if s == response.status_code and c is not e.ShipyardError
        ),
        None,
    )
    message = message or f"HTTP {response.status_code}"
    if cls is e.SchemaViolation:
        details = error.get("details", []) if isinstance(error, dict) else []
        return e.SchemaViolation(message, details)
    if cls is not None and issubclass(cls, e.RateLimited | e.Overloaded | e.BackendUnavailable):
        return cls(message, retry_after=_retry_after(response) or 1.0)
    if cls is e.MethodNotAllowed:
        return e.MethodNotAllowed(message, response.headers.get("allow", "").split(", "))
    if cls is None or cls is e.ServiceUnavailable:
        return e.ServiceUnavailable(message, status=response.status_code)
    return cls(message)


def _jsonable(value: Any) -> Any:
    isoformat = getattr(value, "isoformat", None)  # pandas and numpy times
    if isoformat is not None:
        return isoformat()
    raise TypeError(f"cannot send a {type(value).__name__} as JSON")


def _upload_body(model: str, version: int, device_id: str, rows: Sequence[Any]) -> bytes:
    """An upload's JSON (datetimes as RFC 3339: give them a time zone; numpy values as numbers)."""
    body = {"model": model, "version": version, "device_id": device_id, "predictions": rows}
    return orjson.dumps(body, default=_jsonable, option=orjson.OPT_SERIALIZE_NUMPY)


def _upload_parts(rows: Sequence[Mapping[str, Any]]) -> list[list[dict[str, Any]]]:
    every = [dict(r) for r in rows]
    return [every[i : i + _UPLOAD_ROWS] for i in range(0, len(every), _UPLOAD_ROWS)]


def _add_answer(total: dict[str, Any], answer: Mapping[str, Any]) -> None:
    total["accepted"] += int(answer.get("accepted", 0))
    total["duplicates"] += int(answer.get("duplicates", 0))
    total["conflicts"] += list(answer.get("conflicts", []))


_AVAILABILITY = (e.ServiceUnavailable, e.DeadlineExceeded, e.Overloaded, e.RateLimited)
_EDGE_PART = 1000  # edge answers per upload call: a refused row costs at most this many again


def _upload_total(edge: Edge | None) -> dict[str, Any]:
    total: dict[str, Any] = {"accepted": 0, "duplicates": 0, "conflicts": [], "dropped": 0}
    if edge is not None:
        total.update(model=edge.model.name, version=edge.model.version)
    return total


class _EdgeFlush:
    """One upload of the edge's answers, in parts of `_EDGE_PART`: what is left to send, and
    the server's answers summed. The sync and async clients drive it alike."""

    def __init__(self, edge: Edge) -> None:
        self.edge = edge
        self.target = (edge.model.name, edge.model.version, edge.device_id)
        self.total = _upload_total(edge)
        entries = edge.take()
        self.parts = [entries[i : i + _EDGE_PART] for i in range(0, len(entries), _EDGE_PART)]

    def next(self) -> list[dict[str, Any]] | None:
        return self.parts[0] if self.parts else None

    def sent(self, answer: Mapping[str, Any]) -> None:
        _add_answer(self.total, answer)
        self.parts.pop(0)

    def refused(self, error: e.SchemaViolation) -> None:
        """Drop the rows the server named as invalid (they would block every later upload) and
        send the rest again; the error is raised again when it names none."""
        self.parts[0] = _without_refused(self.parts[0], error, self.total)
        if not self.parts[0]:
            self.parts.pop(0)

    def give_back(self) -> None:
        """What was not delivered waits for the next upload."""
        self.edge.give_back([entry for part in self.parts for entry in part])


def _without_refused(
    part: list[dict[str, Any]], error: e.SchemaViolation, total: dict[str, Any]
) -> list[dict[str, Any]]:
    """The part without the rows the server named as invalid; the error is raised again when
    it names none."""
    refused = {
        d["loc"][1]
        for d in error.details()
        if len(d.get("loc", [])) > 1
        and d["loc"][0] == "predictions"
        and isinstance(d["loc"][1], int)
    }
    if not refused:
        raise error
    log.warning("dropped %d edge answer(s) the server refuses: %s", len(refused), error.message)
    total["dropped"] += len(refused)
    return [entry for index, entry in enumerate(part) if index not in refused]


class _Base:
    def __init__(
        self,
        url: str,
        api_key: str | None = None,
        *,
        timeout: float = 0.5,
        retries: int = 2,
        backoff: float = 0.05,
        fallback: Fallback = None,
        breaker_threshold: int = 5,
        breaker_reset: float = 10.0,
        seed: int | None = None,
        edge: str | Path | None = None,
        defer_below: float = 0.8,
        device_id: str | None = None,
        upload_every: int = 1000,
    ) -> None:
        self.edge = Edge(edge, defer_below, device_id) if edge is not None else None
        self.upload_every = max(1, upload_every)
        self.url = url.rstrip("/")
        self.timeout = timeout
        self.policy = RetryPolicy(retries=retries, backoff=backoff)
        self.fallback = fallback
        self.breaker = CircuitBreaker(breaker_threshold, breaker_reset)
        self.headers = {"User-Agent": f"shipyard-client/{__version__}"}
        if api_key:
            self.headers["Authorization"] = f"Bearer {api_key}"
        self._rng = random.Random(seed)

    def _path(self, model: str, version: int | None) -> str:
        if version is None:
            return f"/v1/models/{model}/predict"
        return f"/v1/models/{model}/versions/{version}/predict"

    def _answer(self, model: str, body: dict[str, Any]) -> Prediction:
        predictions = list(body.get("predictions", []))
        return Prediction(
            model=str(body.get("model", model)),
            version=body.get("version"),
            predictions=predictions,
            prediction_ids=list(body.get("prediction_ids", [])),
            variant=body.get("variant"),
            answered_by=["server"] * len(predictions),
        )

    # -- hybrid: the edge answers what it is sure of -------------------------------------------

    def _at_edge(
        self, model: str, version: int | None, rows: list[dict[str, Any]]
    ) -> tuple[list[dict[str, Any]] | None, list[int]] | None:
        """The edge's answers and the rows it defers, when this client has an edge model for
        `model` (None: the server answers everything)."""
        if self.edge is None or not self.edge.serves(model, version):
            return None
        return self.edge.answer(rows)

    def _merged(
        self,
        model: str,
        rows: list[dict[str, Any]],
        edge_answers: list[dict[str, Any]] | None,
        deferred: list[int],
        server: Prediction | None,
        error: e.ShipyardError | None,
    ) -> Prediction:
        """One answer in the rows' order: the edge's where it was sure, the server's for the
        rows deferred to it, the edge's for those too when the server could not answer."""
        assert self.edge is not None
        if error is not None and not isinstance(error, _AVAILABILITY):
            raise error  # a refused key, an unknown version, bad rows: the caller must know
        if server is not None and (
            len(server.predictions) != len(deferred) or len(server.prediction_ids) != len(deferred)
        ):
            error = e.ServiceUnavailable(
                f"the server answered {len(server.predictions)} prediction(s) for "
                f"{len(deferred)} row(s)"
            )
            server = None
        if edge_answers is None:  # rows the edge cannot read: the server's answer, or its error
            if server is not None:
                return server
            assert error is not None
            return self._fallback(model, rows, error)
        at_server = set(deferred) if server is not None else set()
        local = {i: a for i, a in enumerate(edge_answers) if i not in at_server}
        ids = self.edge.keep(rows, local)
        from_server = (
            iter(zip(server.predictions, server.prediction_ids, strict=True))
            if server
            else iter(())
        )
        predictions, prediction_ids, answered_by = [], [], []
        for index in range(len(rows)):
            if index in local:
                predictions.append(local[index])
                prediction_ids.append(ids[index])
                answered_by.append("edge")
            else:
                answer, pid = next(from_server)
                predictions.append(answer)
                prediction_ids.append(pid)
                answered_by.append("server")
        reason = None
        if server is None and deferred:
            reason = (
                f"the server could not answer ({error.message if error else 'unknown'}); the edge "
                f"answered the {len(deferred)} row(s) it was less sure of too"
            )
        return Prediction(
            model=model,
            version=server.version if server is not None else self.edge.model.version,
            predictions=predictions,
            prediction_ids=prediction_ids,
            variant=server.variant if server is not None else "edge",
            reason=reason,
            answered_by=answered_by,
        )

    def _fallback(
        self, model: str, records: list[dict[str, Any]], error: e.ShipyardError
    ) -> Prediction:
        """The safe default when one is configured; else the error goes to the caller."""
        if self.fallback is None or not isinstance(
            error, e.ServiceUnavailable | e.DeadlineExceeded | e.Overloaded | e.RateLimited
        ):
            raise error
        if callable(self.fallback):
            answers = list(self.fallback(records))
        else:
            answers = [dict(self.fallback) for _ in records]
        return Prediction(
            model, None, answers, fallback=True, reason=error.message,
            answered_by=["fallback"] * len(answers),
        )  # fmt: skip

    def _flush_due(self) -> bool:
        """Whether a predict call should upload the edge's answers now: enough are waiting and
        the server has been answering (an open circuit means it has not)."""
        return (
            self.edge is not None
            and self.edge.pending() >= self.upload_every
            and self.breaker.state == "closed"
        )


class _Call:
    """One call's budget and retry decisions, shared by the sync and async clients."""

    def __init__(self, client: _Base, timeout: float | None = None) -> None:
        self.client = client
        self.timeout = client.timeout if timeout is None else timeout
        self.deadline = time.monotonic() + self.timeout
        self.attempt = -1
        self.last: e.ShipyardError | None = None
        self.status: int | None = None

    def begin(self) -> float | None:
        """The time left for the next attempt, or None when there is none to make."""
        # the breaker counts calls, not attempts: it is asked once, before the first one
        if self.attempt < 0 and not self.client.breaker.allow():
            raise e.ServiceUnavailable(
                f"the circuit to {self.client.url} is open after repeated failures; calls fail "
                f"fast for up to {self.client.breaker.reset_after:g} s"
            )
        self.attempt += 1
        remaining = self.deadline - time.monotonic()
        return remaining if remaining > 0 else None

    def failed(self, error: httpx.TransportError) -> float | None:
        """A connection error or timeout: the wait before a retry, or None to stop."""
        self.last = e.ServiceUnavailable(f"{type(error).__name__}: {error}")
        return self._wait(None)

    def answered(self, response: httpx.Response) -> tuple[bool, Any]:
        """(True, body) on success; (False, wait or None) when a retry may help; raises otherwise."""
        if response.status_code < 400:
            self.client.breaker.success()
            return True, response.json()
        self.last, self.status = _error(response), response.status_code
        if response.status_code not in RETRY_STATUSES:
            if response.status_code >= 500:
                self.client.breaker.failure()
            else:
                self.client.breaker.success()  # the server is fine; the request is wrong
            raise self.last
        return False, self._wait(_retry_after(response))

    def _wait(self, retry_after: float | None) -> float | None:
        if self.attempt >= self.client.policy.retries:
            return None
        wait = self.client.policy.wait(self.attempt, retry_after, self.client._rng)
        return wait if time.monotonic() + wait < self.deadline else None

    def give_up(self) -> e.ShipyardError:
        """Count the failed call and say why: only retryable failures get here."""
        # a key over its rate limit says nothing of the server's health
        if not isinstance(self.last, e.RateLimited):
            self.client.breaker.failure()
        last, url, timeout = self.last, self.client.url, self.timeout
        return e.ServiceUnavailable(
            f"no answer from {url} within {timeout:g} s after {self.attempt + 1} attempt(s)"
            + (f": {last.message}" if last else ""),
            status=self.status,
        )

    def headers(self, routing_key: str | None) -> dict[str, str]:
        left_ms = min(_MAX_DEADLINE_MS, (self.deadline - time.monotonic()) * 1e3)
        headers = {"X-Deadline-Ms": f"{max(1.0, left_ms):.0f}"}
        if routing_key is not None:
            headers["X-Routing-Key"] = routing_key
        return headers

    def request(self, payload: Any, routing_key: str | None) -> dict[str, Any]:
        """httpx's arguments for `payload` (bytes: JSON already)."""
        headers = self.headers(routing_key)
        if isinstance(payload, bytes):
            headers["Content-Type"] = "application/json"
            return {"content": payload, "headers": headers}
        return {"json": payload, "headers": headers}


class Client(_Base):
    """A synchronous client. Arguments as `AsyncClient`; use it as a context manager or `close()`.

    Args:
        url: the server, e.g. `http://127.0.0.1:8000`.
        api_key: sent as `Authorization: Bearer <key>`.
        timeout: seconds a whole call may take, retries included.
        retries: more attempts after the first, on connection errors, 429, 502, 503 and 504
            (never on other 4xx), with exponential backoff and jitter, honouring `Retry-After`.
        backoff: the first retry's maximum wait in seconds; it doubles per attempt.
        fallback: the safe default when no answer comes in time or the circuit is open: a dict
            (copied per record) or a function of the records; the answer is marked `fallback`.
            Without one, `ServiceUnavailable` is raised.
        breaker_threshold: failed calls in a row that open the circuit.
        breaker_reset: seconds the circuit stays open before one trial call.
        transport: an httpx transport (e.g. `httpx.MockTransport` in tests).
        edge: the folder of an edge export (`shipyard export --target edge`) of a model this
            client calls: a hybrid client. The exported model answers each row first; rows it
            is less sure of than `defer_below` (the probability of the class it chose; a
            regressor's rows are always answered there) go to the server, and when the server
            cannot answer, the edge's answer stands. `Prediction.answered_by` says which did.
            Edge answers are uploaded to `POST /v1/logs/upload` as `device_id` (default: the
            host name) every `upload_every` answers, on `flush_edge()` and on `close()`.
    """

    def __init__(
        self,
        url: str,
        api_key: str | None = None,
        *,
        transport: httpx.BaseTransport | None = None,
        **options: Any,
    ) -> None:
        super().__init__(url, api_key, **options)
        self._http = httpx.Client(base_url=self.url, headers=self.headers, transport=transport)

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Upload what the edge answered (if the server takes it), then close."""
        try:
            if self.edge is not None and self.edge.pending():
                self.flush_edge()
        except e.ShipyardError as error:
            left = self.edge.pending() if self.edge is not None else 0
            log.warning("%d edge answer(s) were not uploaded: %s", left, error.message)
        finally:
            self._http.close()

    def predict(
        self,
        model: str,
        records: Mapping[str, Any] | Sequence[Mapping[str, Any]],
        *,
        version: int | None = None,
        routing_key: str | None = None,
        explain: bool = False,
    ) -> Prediction:
        """Score one record (a dict) or many; see the class docs for retries and fallback.
        `explain`: each prediction also carries its `explanation` (every feature's contribution
        and the base value, adding up to the model's output); the server answers these, never
        an edge model, and a fallback answer has none."""
        rows = _records(records)
        hybrid = None if explain else self._at_edge(model, version, rows)
        if hybrid is not None:
            return self._hybrid(model, version, rows, routing_key, *hybrid)
        try:
            body = self._call("POST", self._path(model, version), _body(rows, explain), routing_key)
        except e.ShipyardError as error:
            return self._fallback(model, rows, error)
        return self._answer(model, body)

    def _hybrid(
        self,
        model: str,
        version: int | None,
        rows: list[dict[str, Any]],
        routing_key: str | None,
        edge_answers: list[dict[str, Any]] | None,
        deferred: list[int],
    ) -> Prediction:
        server = error = None
        if deferred:
            sent = [rows[i] for i in deferred]
            try:
                body = self._call(
                    "POST", self._path(model, version), {"instances": sent}, routing_key
                )
                server = self._answer(model, body)
            except e.ShipyardError as failed:
                error = failed
        answer = self._merged(model, rows, edge_answers, deferred, server, error)
        if self._flush_due():
            # within this call's own time budget; what is not delivered waits for the next
            with contextlib.suppress(e.ShipyardError):
                self.flush_edge(timeout=self.timeout)
        return answer

    def flush_edge(self, *, timeout: float = _UPLOAD_TIMEOUT) -> dict[str, Any]:
        """Upload the edge's answers not yet uploaded (`POST /v1/logs/upload`). Answers the
        server refuses as invalid are dropped (with a warning, counted in `dropped`); answers
        an upload does not deliver otherwise are kept for the next one and the error raised."""
        if self.edge is None:
            return _upload_total(None)
        flush = _EdgeFlush(self.edge)
        try:
            while (part := flush.next()) is not None:
                try:
                    answer = self.upload_predictions(*flush.target, part, timeout=timeout)
                except e.SchemaViolation as error:
                    flush.refused(error)
                else:
                    flush.sent(answer)
        except BaseException:
            flush.give_back()
            raise
        return flush.total

    def feedback(self, labels: Mapping[str, Any] | Sequence[Mapping[str, Any]]) -> dict[str, Any]:
        """Send ground truth: `{"prediction_id": ..., "label": ...}` or a list of them."""
        payload = [dict(labels)] if isinstance(labels, Mapping) else [dict(x) for x in labels]
        result: dict[str, Any] = self._call("POST", "/v1/feedback", payload, None)
        return result

    def upload_predictions(
        self,
        model: str,
        version: int,
        device_id: str,
        rows: Sequence[Mapping[str, Any]],
        *,
        timeout: float = _UPLOAD_TIMEOUT,
    ) -> dict[str, Any]:
        """Upload predictions a device made offline (`POST /v1/logs/upload`), to be logged and
        monitored like the server's own.

        Args:
            rows: one dict per prediction: `prediction_id` (the device's, unique per model),
                `ts` (a datetime with a time zone, or RFC 3339 text), `inputs` (the version's
                signature columns) and the output (`score` for a binary model, `probabilities`
                for a multiclass one, `value` for a regressor; `label` if you like).
            timeout: seconds each call of the upload may take, retries included.

        Sent in calls of at most 10,000 predictions (fewer when the server finds a call too
        large). Sending them again is safe: predictions uploaded before count as duplicates.

        Returns:
            The server's answers summed: `accepted`, `duplicates`, `conflicts` (ids another
            device uploaded first), `model`, `version`.
        """
        total: dict[str, Any] = {"accepted": 0, "duplicates": 0, "conflicts": []}
        total.update(model=model, version=version)
        parts = _upload_parts(rows)
        while parts:
            part = parts.pop(0)
            body = _upload_body(model, version, device_id, part)
            try:
                answer = self._call("POST", "/v1/logs/upload", body, None, timeout=timeout)
            except e.PayloadTooLarge:
                if len(part) == 1:
                    raise
                half = len(part) // 2
                parts[:0] = [part[:half], part[half:]]
                continue
            _add_answer(total, answer)
        return total

    def _call(
        self,
        method: str,
        path: str,
        payload: Any,
        routing_key: str | None,
        *,
        timeout: float | None = None,
    ) -> Any:
        call = _Call(self, timeout)
        while (remaining := call.begin()) is not None:
            try:
                response = self._http.request(
                    method, path, timeout=remaining, **call.request(payload, routing_key)
                )
            except httpx.TransportError as error:
                wait = call.failed(error)
            else:
                done, value = call.answered(response)
                if done:
                    return value
                wait = value
            if wait is None:
                break
            time.sleep(wait)
        raise call.give_up()


class AsyncClient(_Base):
    """The asyncio twin of `Client` (same arguments, `await` the calls)."""

    def __init__(
        self,
        url: str,
        api_key: str | None = None,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
        **options: Any,
    ) -> None:
        super().__init__(url, api_key, **options)
        self._http = httpx.AsyncClient(base_url=self.url, headers=self.headers, transport=transport)

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        """As `Client.close`."""
        try:
            if self.edge is not None and self.edge.pending():
                await self.flush_edge()
        except e.ShipyardError as error:
            left = self.edge.pending() if self.edge is not None else 0
            log.warning("%d edge answer(s) were not uploaded: %s", left, error.message)
        finally:
            await self._http.aclose()

    async def predict(
        self,
        model: str,
        records: Mapping[str, Any] | Sequence[Mapping[str, Any]],
        *,
        version: int | None = None,
        routing_key: str | None = None,
        explain: bool = False,
    ) -> Prediction:
        """As `Client.predict`."""
        rows = _records(records)
        hybrid = None if explain else self._at_edge(model, version, rows)
        if hybrid is not None:
            edge_answers, deferred = hybrid
            server = error = None
            if deferred:
                sent = [rows[i] for i in deferred]
                try:
                    body = await self._call(
                        "POST", self._path(model, version), {"instances": sent}, routing_key
                    )
                    server = self._answer(model, body)
                except e.ShipyardError as failed:
                    error = failed
            answer = self._merged(model, rows, edge_answers, deferred, server, error)
            if self._flush_due():
                with contextlib.suppress(e.ShipyardError):  # kept for the next upload
                    await self.flush_edge(timeout=self.timeout)
            return answer
        try:
            body = await self._call(
                "POST", self._path(model, version), _body(rows, explain), routing_key
            )
        except e.ShipyardError as error:
            return self._fallback(model, rows, error)
        return self._answer(model, body)

    async def flush_edge(self, *, timeout: float = _UPLOAD_TIMEOUT) -> dict[str, Any]:
        """As `Client.flush_edge`."""
        if self.edge is None:
            return _upload_total(None)
        flush = _EdgeFlush(self.edge)
        try:
            while (part := flush.next()) is not None:
                try:
                    answer = await self.upload_predictions(*flush.target, part, timeout=timeout)
                except e.SchemaViolation as error:
                    flush.refused(error)
                else:
                    flush.sent(answer)
        except BaseException:
            flush.give_back()
            raise
        return flush.total

    async def feedback(
        self, labels: Mapping[str, Any] | Sequence[Mapping[str, Any]]
    ) -> dict[str, Any]:
        payload = [dict(labels)] if isinstance(labels, Mapping) else [dict(x) for x in labels]
        result: dict[str, Any] = await self._call("POST", "/v1/feedback", payload, None)
        return result

    async def upload_predictions(
        self,
        model: str,
        version: int,
        device_id: str,
        rows: Sequence[Mapping[str, Any]],
        *,
        timeout: float = _UPLOAD_TIMEOUT,
    ) -> dict[str, Any]:
        """As `Client.upload_predictions`."""
        total: dict[str, Any] = {"accepted": 0, "duplicates": 0, "conflicts": []}
        total.update(model=model, version=version)
        parts = _upload_parts(rows)
        while parts:
            part = parts.pop(0)
            body = _upload_body(model, version, device_id, part)
            try:
                answer = await self._call("POST", "/v1/logs/upload", body, None, timeout=timeout)
            except e.PayloadTooLarge:
                if len(part) == 1:
                    raise
                half = len(part) // 2
                parts[:0] = [part[:half], part[half:]]
                continue
            _add_answer(total, answer)
        return total

    async def _call(
        self,
        method: str,
        path: str,
        payload: Any,
        routing_key: str | None,
        *,
        timeout: float | None = None,
    ) -> Any:
        call = _Call(self, timeout)
        while (remaining := call.begin()) is not None:
            try:
                response = await self._http.request(
                    method, path, timeout=remaining, **call.request(payload, routing_key)
                )
            except httpx.TransportError as error:
                wait = call.failed(error)
            else:
                done, value = call.answered(response)
                if done:
                    return value
                wait = value
            if wait is None:
                break
            await asyncio.sleep(wait)
        raise call.give_up()
