"""`shipyard.Client` and `shipyard.AsyncClient`: call a shipyard server the way production
callers should: a time budget per call, retries only where they can help, a circuit breaker,
and a safe default when the service cannot answer in time.

    client = shipyard.Client("http://fraud-api:8000", api_key=KEY, timeout=0.5, retries=2,
                             fallback={"score": 0.0, "label": 0})
    answer = client.predict("fraud-detector", {"transaction_amount": 42.5, ...})
    if answer.fallback: ...   # the safe default, marked as such
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx

from shipyard.client._policy import RETRY_STATUSES, CircuitBreaker, RetryPolicy
from shipyard.core import errors as e
from shipyard.core.status import HTTP_STATUS
from shipyard.core.version import __version__

__all__ = ["AsyncClient", "Client", "Prediction"]

Fallback = Mapping[str, Any] | Callable[[list[dict[str, Any]]], list[dict[str, Any]]] | None
_MAX_DEADLINE_MS = 60_000.0  # servers refuse a longer X-Deadline-Ms with 400
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

    @property
    def first(self) -> dict[str, Any]:
        return self.predictions[0]


def _records(records: Mapping[str, Any] | Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    if isinstance(records, Mapping):
        return [dict(records)]
    return [dict(r) for r in records]


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
    ) -> None:
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
        return Prediction(
            model=str(body.get("model", model)),
            version=body.get("version"),
            predictions=list(body.get("predictions", [])),
            prediction_ids=list(body.get("prediction_ids", [])),
            variant=body.get("variant"),
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
        return Prediction(model, None, answers, fallback=True, reason=error.message)


class _Call:
    """One call's budget and retry decisions, shared by the sync and async clients."""

    def __init__(self, client: _Base) -> None:
        self.client = client
        self.deadline = time.monotonic() + client.timeout
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
        last, url, timeout = self.last, self.client.url, self.client.timeout
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
        self._http.close()

    def predict(
        self,
        model: str,
        records: Mapping[str, Any] | Sequence[Mapping[str, Any]],
        *,
        version: int | None = None,
        routing_key: str | None = None,
    ) -> Prediction:
        """Score one record (a dict) or many; see the class docs for retries and fallback."""
        rows = _records(records)
        try:
            body = self._call("POST", self._path(model, version), {"instances": rows}, routing_key)
        except e.ShipyardError as error:
            return self._fallback(model, rows, error)
        return self._answer(model, body)

    def feedback(self, labels: Mapping[str, Any] | Sequence[Mapping[str, Any]]) -> dict[str, Any]:
        """Send ground truth: `{"prediction_id": ..., "label": ...}` or a list of them."""
        payload = [dict(labels)] if isinstance(labels, Mapping) else [dict(x) for x in labels]
        result: dict[str, Any] = self._call("POST", "/v1/feedback", payload, None)
        return result

    def _call(self, method: str, path: str, payload: Any, routing_key: str | None) -> Any:
        call = _Call(self)
        while (remaining := call.begin()) is not None:
            try:
                response = self._http.request(
                    method, path, json=payload, headers=call.headers(routing_key), timeout=remaining
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
        await self._http.aclose()

    async def predict(
        self,
        model: str,
        records: Mapping[str, Any] | Sequence[Mapping[str, Any]],
        *,
        version: int | None = None,
        routing_key: str | None = None,
    ) -> Prediction:
        rows = _records(records)
        try:
            body = await self._call(
                "POST", self._path(model, version), {"instances": rows}, routing_key
            )
        except e.ShipyardError as error:
            return self._fallback(model, rows, error)
        return self._answer(model, body)

    async def feedback(
        self, labels: Mapping[str, Any] | Sequence[Mapping[str, Any]]
    ) -> dict[str, Any]:
        payload = [dict(labels)] if isinstance(labels, Mapping) else [dict(x) for x in labels]
        result: dict[str, Any] = await self._call("POST", "/v1/feedback", payload, None)
        return result

    async def _call(self, method: str, path: str, payload: Any, routing_key: str | None) -> Any:
        call = _Call(self)
        while (remaining := call.begin()) is not None:
            try:
                response = await self._http.request(
                    method, path, json=payload, headers=call.headers(routing_key), timeout=remaining
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
