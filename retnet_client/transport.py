"""HTTP with retries: one ``httpx.Client``, transient failures retried under a :class:`RetryPolicy`.

A submission carries one ``Idempotency-Key`` over all its attempts, so a retry after a lost answer returns the
job the first attempt created instead of creating a second one. The one exception: an answer that names a job
which already *failed* for a transient reason (``POST /predict``'s 503 with ``job_id``) gets a fresh key, since
asking again with the old one would only return that failed job.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable, Mapping
from typing import Any

import httpx

from retnet_client.errors import RetNetError, detail_of
from retnet_client.retry import RetryPolicy, parse_retry_after, should_retry

log = logging.getLogger("retnet_client")

#: Builds the multipart ``files`` of one attempt (file objects rewound: each attempt sends the same bytes).
FilesFactory = Callable[[], list[tuple[str, tuple[str, Any, str]]]]


def new_idempotency_key() -> str:
    """A fresh ``Idempotency-Key``: one per logical submission (uuid4)."""
    return str(uuid.uuid4())


def json_or_none(response: httpx.Response) -> Any:
    """The JSON body of an answer, None when it has none."""
    try:
        return response.json()
    except ValueError:
        return None


def error_from_response(response: httpx.Response) -> RetNetError:
    """A :class:`RetNetError` with the answer's status and ``detail`` (read before the answer is closed)."""
    body = json_or_none(response)
    text = response.text.strip()
    fallback = text[:300] if text else response.reason_phrase or "error"
    return RetNetError(detail_of(body, fallback), status_code=response.status_code, body=body,
                       method=response.request.method, url=str(response.request.url))


class Transport:
    """Requests to one service, with retries, an API key and a default timeout (s)."""

    def __init__(self, url: str, *, api_key: str | None = None, timeout: float = 60.0,
                 policy: RetryPolicy | None = None, sleep: Callable[[float], None] = time.sleep,
                 http: httpx.Client | None = None) -> None:
        headers = {"Accept": "application/json", "User-Agent": "retnet-client"}
        if api_key:
            headers["Authorization"] = f"Bearer {api_key}"
        self.url = url.rstrip("/")
        self.policy = policy or RetryPolicy()
        self._sleep = sleep
        self._http = http or httpx.Client(base_url=self.url, timeout=timeout, headers=headers)
        if http is not None:
            self._http.headers.update(headers)

    def close(self) -> None:
        """Close the connection pool."""
        self._http.close()

    def request(self, method: str, path: str, *, params: Mapping[str, Any] | None = None,
                data: Mapping[str, Any] | None = None, files: FilesFactory | None = None,
                idempotency_key: str | None = None, timeout: float | None = None,
                stream: bool = False, json: Any = None) -> httpx.Response:
        """Send a request, retrying transient failures; return the (2xx/3xx) answer or raise :class:`RetNetError`.

        With ``stream=True`` the body is not read: the caller iterates it and closes the answer.
        """
        key = idempotency_key
        retries = self.policy.retries
        for attempt in range(retries + 1):
            headers = {"Idempotency-Key": key} if key else {}
            request = self._http.build_request(
                method, path, params=params, data=data, files=files() if files else None, headers=headers, json=json,
                timeout=timeout if timeout is not None else httpx.USE_CLIENT_DEFAULT)
            try:
                response = self._http.send(request, stream=stream)
            except (httpx.UnsupportedProtocol, httpx.InvalidURL) as exc:
                raise RetNetError(f"invalid service URL {self.url!r}: {exc}", method=method, url=str(request.url)
                                  ) from exc
            except httpx.TransportError as exc:
                if attempt == retries:
                    raise RetNetError(f"cannot reach the service at {self.url} ({type(exc).__name__}: {exc}) "
                                      f"after {attempt + 1} attempt(s)", method=method, url=str(request.url)) from exc
                reason, retry_after = type(exc).__name__, None
            else:
                if response.status_code < 400:
                    return response
                if stream:
                    response.read()
                    response.close()
                error = error_from_response(response)
                if not should_retry(response.status_code) or attempt == retries:
                    raise error
                reason = f"HTTP {response.status_code}: {error.detail}"
                retry_after = parse_retry_after(response.headers.get("Retry-After"))
                if key and error.job_id:  # that job is final (failed): asking again must create a new one
                    key = new_idempotency_key()
            wait = self.policy.delay(attempt + 1, retry_after)
            log.warning("%s %s: %s; retry %d of %d in %.1f s", method, path, reason, attempt + 1, retries, wait)
            self._sleep(wait)
        raise AssertionError("unreachable")  # pragma: no cover
