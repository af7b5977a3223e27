"""When to retry a request and how long to wait first (pure functions, no I/O).

Transient failures are retried: no answer at all (connection refused or reset, a timeout), 429 (a rate limit
or a job quota) and 502/503/504 (a proxy or a dependency of the service is down). The wait is the answer's
``Retry-After`` when it has one (seconds or an HTTP date), else exponential backoff with full jitter.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime

#: HTTP statuses worth another attempt.
RETRY_STATUSES = frozenset({429, 502, 503, 504})


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how patiently to retry.

    Parameters
    ----------
    retries
        Further attempts after the first one (0: never retry).
    backoff_s
        First backoff in s without ``Retry-After``; doubles each attempt (full jitter: a uniform draw below it).
    max_backoff_s
        Cap of the backoff in s.
    max_retry_after_s
        Cap of an honoured ``Retry-After`` in s (a longer one is waited for this long, then retried).
    """

    retries: int = 5
    backoff_s: float = 0.5
    max_backoff_s: float = 30.0
    max_retry_after_s: float = 120.0

    def delay(self, attempt: int, retry_after: float | None, rng: random.Random | None = None) -> float:
        """Seconds to wait before retry number ``attempt`` (1-based), given the answer's ``Retry-After``."""
        if retry_after is not None:
            return min(max(retry_after, 0.0), self.max_retry_after_s)
        ceiling = min(self.backoff_s * 2 ** (attempt - 1), self.max_backoff_s)
        return (rng or random).uniform(ceiling / 2, ceiling)


def parse_retry_after(value: str | None, now: datetime | None = None) -> float | None:
    """A ``Retry-After`` header in s: delta-seconds (``"5"``, ``"1.5"``) or an HTTP date; None when absent/invalid.

    >>> parse_retry_after("3")
    3.0
    >>> parse_retry_after("Wed, 21 Oct 2015 07:28:05 GMT", now=datetime(2015, 10, 21, 7, 28, tzinfo=UTC))
    5.0
    >>> parse_retry_after("soon") is None
    True
    """
    if value is None or not value.strip():
        return None
    text = value.strip()
    try:
        seconds = float(text)
    except ValueError:
        try:
            when = parsedate_to_datetime(text)
        except (TypeError, ValueError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        seconds = (when - (now or datetime.now(UTC))).total_seconds()
    if seconds != seconds or seconds in (float("inf"), float("-inf")):  # NaN, inf
        return None
    return max(seconds, 0.0)


def should_retry(status_code: int | None) -> bool:
    """True for no answer (None) and the transient statuses of :data:`RETRY_STATUSES`."""
    return status_code is None or status_code in RETRY_STATUSES
