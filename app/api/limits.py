"""Request body limit enforced while the body arrives (pure ASGI, no buffering).

Starlette's multipart parser spools big files to disk, so an upload is never held whole in memory; this
middleware bounds what it may spool: a ``Content-Length`` over the limit is refused before a byte of the body
is read, and a body without one (chunked) is refused with 413 as soon as the received ``http.request`` bytes
pass the limit. The answer is JSON ``{"detail": "..."}`` naming the limit, like every other refusal.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


class RequestTooLargeError(Exception):
    """Raised from ``receive`` once the body passed the limit (the app's reading stops there)."""


def limit_message(limit: int) -> str:
    """The ``detail`` of a refused request body of more than ``limit`` bytes."""
    return (f"the request body is larger than the limit of {limit / (1024 * 1024):.1f} MB ({limit} bytes; "
            "RETNET_UPLOAD__MAX_REQUEST_BYTES)")


def declared_length(scope: Scope) -> int | None:
    """The request's ``Content-Length`` in bytes, None when absent or not a number."""
    for name, value in scope.get("headers") or ():
        if name.lower() == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


async def send_refusal(send: Send, limit: int) -> None:
    """Answer 413 with the JSON detail (and close the connection: the rest of the body is not read)."""
    body = json.dumps({"detail": limit_message(limit)}).encode()
    await send({"type": "http.response.start", "status": 413,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                            (b"connection", b"close")]})
    await send({"type": "http.response.body", "body": body})


class BodyLimitMiddleware:
    """Refuse HTTP requests whose body exceeds ``max_bytes`` (413), counting bytes as they are received."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = declared_length(scope)
        if declared is not None and declared > self.max_bytes:
            await send_refusal(send, self.max_bytes)
            return
        await _LimitedRequest(self.app, self.max_bytes)(scope, receive, send)


class _LimitedRequest:
    """One request under the limit: counts received bytes, swaps the app's answer for the 413 once refused."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.received = 0
        self.refused = False
        self.started = False

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def limited_receive() -> Message:
            if self.refused:
                raise RequestTooLargeError(limit_message(self.max_bytes))
            message = await receive()
            if message["type"] == "http.request":
                self.received += len(message.get("body", b""))
                if self.received > self.max_bytes:
                    self.refused = True
                    raise RequestTooLargeError(limit_message(self.max_bytes))
            return message

        async def guarded_send(message: Message) -> None:
            if self.refused and not self.started:
                return  # the app's answer to the error we raised ("error parsing the body"): ours goes out
            if message["type"] == "http.response.start":
                self.started = True
            await send(message)

        try:
            await self.app(scope, limited_receive, guarded_send)
        except Exception:
            if not self.refused or self.started:
                raise
        if self.refused and not self.started:
            await send_refusal(send, self.max_bytes)
