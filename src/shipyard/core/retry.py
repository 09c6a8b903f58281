"""How shipyard tries again: the one retry policy of the Python client's calls and of alert
webhooks (exponential backoff with full jitter, capped; `Retry-After` wins when a server
sends one)."""

from __future__ import annotations

import random
from dataclasses import dataclass

__all__ = ["RetryPolicy"]


@dataclass(frozen=True)
class RetryPolicy:
    """`retries` more attempts after the first, waiting `backoff * 2**attempt` with full jitter
    (a random wait between 0 and that, at most `max_backoff`), or what `Retry-After` asks for."""

    retries: int = 2
    backoff: float = 0.05
    max_backoff: float = 2.0

    @property
    def attempts(self) -> int:
        """The first attempt and the retries."""
        return self.retries + 1

    def wait(self, attempt: int, retry_after: float | None, rng: random.Random) -> float:
        """Seconds to wait before retry number `attempt + 1` (0 before the first retry)."""
        if retry_after is not None:
            return retry_after
        return rng.uniform(0, min(self.max_backoff, self.backoff * 2**attempt))
