"""Errors of the RetNet client: one exception type carrying the HTTP status and the API's ``detail``."""

from __future__ import annotations

from typing import Any


class RetNetError(Exception):
    """A request the service refused or could not answer.

    Attributes
    ----------
    status_code
        HTTP status of the answer; None when no answer came (connection refused, timed out).
    detail
        The API's JSON ``detail`` (a sentence naming what was wrong), or what went wrong on the way.
    body
        The whole JSON body of the answer when it had one (e.g. ``job_id``/``item_id`` of a failed prediction).
    method, url
        The request that failed.
    """

    def __init__(self, detail: str, *, status_code: int | None = None, body: Any = None,
                 method: str | None = None, url: str | None = None) -> None:
        self.detail = detail
        self.status_code = status_code
        self.body = body
        self.method = method
        self.url = url
        super().__init__(str(self))

    @property
    def job_id(self) -> str | None:
        """The job the error is about, when the API named one."""
        return self.body.get("job_id") if isinstance(self.body, dict) else None

    def __str__(self) -> str:
        where = f" ({self.method} {self.url})" if self.method and self.url else ""
        if self.status_code is None:
            return f"{self.detail}{where}"
        return f"HTTP {self.status_code}: {self.detail}{where}"


class JobFailedError(RetNetError):
    """A job (or the one structure of a prediction) ended ``failed`` or ``cancelled``; ``job`` is its last state."""

    def __init__(self, detail: str, *, job: dict[str, Any] | None = None, body: Any = None) -> None:
        self.job = job or {}
        super().__init__(detail, body=body if body is not None else {"job_id": self.job.get("id")})


class WaitTimeoutError(RetNetError, TimeoutError):
    """A job was not final within the time allowed; it keeps running on the service (``job`` is its last state)."""

    def __init__(self, detail: str, *, job: dict[str, Any]) -> None:
        self.job = job
        super().__init__(detail, body={"job_id": job.get("id")})


def detail_of(body: Any, fallback: str) -> str:
    """The ``detail`` sentence of an error body (a string, or FastAPI's list of errors), else ``fallback``."""
    if isinstance(body, dict):
        detail = body.get("detail")
        if isinstance(detail, str) and detail:
            return detail
        if isinstance(detail, list) and detail:
            return "; ".join(str(d.get("msg", d)) if isinstance(d, dict) else str(d) for d in detail)
    return fallback
