"""The device half of a hybrid client: simple predictions on the edge, the rest on the server.

An exported model (`shipyard export --target edge`) answers every row first. A row it is sure
of (the probability of the class it chose is at least `defer_below`) is answered there; the
others go to the server in one call. A regressor has no such measure: the edge answers all of
its rows. When the server cannot answer (down, out of time, circuit open), the edge's own answer
stands for the deferred rows too, marked as such, which is the point of having it.

Every edge answer gets a prediction id and waits in `pending` until it is uploaded to
`POST /v1/logs/upload` (the client does that every `upload_every` answers, on `flush_edge()` and
on `close()`), so the server logs and monitors it like its own (`source = edge`). Uploading is
safe to repeat: ids the server has seen count as duplicates. A failed upload keeps the rows.
"""

from __future__ import annotations

import socket
import threading
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from shipyard.core.errors import InvalidInput

__all__ = ["Edge"]

MAX_PENDING = 100_000  # answers kept for upload while the server is away


class Edge:
    """An exported model on this device, and its answers not yet uploaded."""

    def __init__(self, folder: str | Path, defer_below: float, device_id: str | None) -> None:
        from shipyard.optimize import EdgeModel

        if not 0.0 < defer_below <= 1.0:
            raise InvalidInput(f"defer_below must be in (0, 1], got {defer_below}")
        self.model = EdgeModel(folder)
        self.defer_below = defer_below
        self.device_id = device_id or socket.gethostname()
        self._pending: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        self.dropped = 0  # answers lost because more than MAX_PENDING waited

    def serves(self, model: str, version: int | None) -> bool:
        return model == self.model.name and version in (None, self.model.version)

    def answer(self, rows: list[dict[str, Any]]) -> tuple[list[dict[str, Any]] | None, list[int]]:
        """The edge's answers (None when it cannot read the rows: the server will say why) and
        the positions of the rows to defer to the server."""
        try:
            answers = self.model.predict(rows)
        except ValueError:
            return None, list(range(len(rows)))
        deferred = []
        for index, answer in enumerate(answers):
            confidence = self.model.confidence(answer)
            if confidence is not None and confidence < self.defer_below:
                deferred.append(index)
        return answers, deferred

    def keep(
        self, rows: list[dict[str, Any]], answers: Mapping[int, dict[str, Any]]
    ) -> dict[int, str]:
        """Give the edge answers at these positions ids and queue them for upload."""
        now = datetime.now(UTC)
        ids = {index: f"edge-{uuid.uuid4().hex}" for index in answers}
        entries = []
        for index, answer in answers.items():
            entry: dict[str, Any] = {"prediction_id": ids[index], "ts": now, "inputs": rows[index]}
            for key in ("score", "label", "value", "probabilities"):
                if key in answer:
                    entry[key] = answer[key]
            entries.append(entry)
        with self._lock:
            self._pending.extend(entries)
            overflow = len(self._pending) - MAX_PENDING
            if overflow > 0:
                del self._pending[:overflow]
                self.dropped += overflow
        return ids

    def pending(self) -> int:
        with self._lock:
            return len(self._pending)

    def take(self) -> list[dict[str, Any]]:
        with self._lock:
            taken, self._pending = self._pending, []
        return taken

    def give_back(self, entries: list[dict[str, Any]]) -> None:
        """Rows an upload did not deliver: first in line for the next one."""
        with self._lock:
            self._pending[:0] = entries
