"""Pieces of authentication: the bearer token of a request, per-key rate limits (token buckets)."""

from __future__ import annotations

import threading
import time

from fastapi import Request


class RateLimiter:
    """Token buckets per key: ``rate`` requests per minute, bursts up to the same number (per API process)."""

    def __init__(self) -> None:
        self._buckets: dict[str, tuple[float, float]] = {}
        self._lock = threading.Lock()

    def take(self, key: str, rate_per_minute: int) -> float:
        """Take one token; 0 when allowed, else the seconds until the next token."""
        now = time.monotonic()
        per_s = rate_per_minute / 60.0
        with self._lock:
            tokens, at = self._buckets.get(key, (float(rate_per_minute), now))
            tokens = min(float(rate_per_minute), tokens + (now - at) * per_s)
            if tokens >= 1.0:
                self._buckets[key] = (tokens - 1.0, now)
                return 0.0
            self._buckets[key] = (tokens, now)
            return (1.0 - tokens) / per_s


def bearer_token(request: Request) -> str | None:
    header = request.headers.get("authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "bearer" or not value.strip():
        return None
    return value.strip()
