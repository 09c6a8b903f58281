"""Calling a shipyard server from Python: retries, a circuit breaker and a safe fallback."""

from __future__ import annotations

from shipyard.client._client import AsyncClient, Client, Prediction
from shipyard.client._policy import CircuitBreaker, RetryPolicy

__all__ = ["AsyncClient", "CircuitBreaker", "Client", "Prediction", "RetryPolicy"]
