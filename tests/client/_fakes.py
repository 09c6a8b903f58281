"""A scripted fake shipyard server for `httpx.MockTransport`: the client is what is tested."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

import httpx

Answer = Callable[[httpx.Request], httpx.Response]

PREDICTED: dict[str, Any] = {
    "model": "fraud-detector",
    "version": 3,
    "variant": "candidate",
    "predictions": [{"score": 0.91, "label": 1, "threshold": 0.5}],
    "prediction_ids": ["018f3a2b4c5d0123456789abcdef0123"],
}


def answer(status: int = 200, body: Any = None, headers: dict[str, str] | None = None) -> Answer:
    """An HTTP answer with a JSON body (the prediction above by default)."""
    payload = PREDICTED if body is None and status < 400 else body
    return lambda request: httpx.Response(status, json=payload, headers=headers)


def error(
    status: int,
    kind: str,
    message: str = "",
    details: Sequence[dict[str, Any]] = (),
    headers: dict[str, str] | None = None,
) -> Answer:
    """A shipyard error answer: `{"error": {"type", "message", "details"}}`."""
    body = {"error": {"type": kind, "message": message or f"{kind} from the fake", "details": []}}
    body["error"]["details"] = list(details)
    return answer(status, body, headers)


def refused(request: httpx.Request) -> httpx.Response:
    raise httpx.ConnectError("[Errno 111] Connection refused", request=request)


def read_timeout(request: httpx.Request) -> httpx.Response:
    raise httpx.ReadTimeout("timed out", request=request)


class FakeServer:
    """Answers in the given order (the last one repeats) and keeps every request it saw."""

    def __init__(self, *answers: Answer) -> None:
        self.answers = list(answers) or [answer()]
        self.requests: list[httpx.Request] = []
        self.times: list[float] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        self.times.append(time.monotonic())
        return self.answers[min(len(self.requests), len(self.answers)) - 1](request)

    @property
    def transport(self) -> httpx.MockTransport:
        return httpx.MockTransport(self)

    @property
    def count(self) -> int:
        return len(self.requests)

    def gaps(self) -> list[float]:
        """Seconds between consecutive requests."""
        return [b - a for a, b in zip(self.times, self.times[1:], strict=False)]

    def header(self, name: str) -> list[str | None]:
        return [r.headers.get(name) for r in self.requests]
