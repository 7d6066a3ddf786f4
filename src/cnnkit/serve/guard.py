"""ASGI middleware in front of every route: the bearer token and the request-size limit.

Both answer before a route runs and before a body is read into memory: a request whose
``Content-Length`` is over the limit gets 413 at once; a body that arrives in chunks
without one is counted as it comes and cut off at the limit.
"""

from __future__ import annotations

import hmac
import json
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

# Open without the key: liveness, and the page's own files (they hold no model data; the
# page asks for the key when the API answers 401).
PUBLIC_PATHS = ("/health", "/", "/favicon.ico")
PUBLIC_PREFIXES = ("/static/",)


class BodyTooLarge(Exception):
    """A body without ``Content-Length`` grew past the limit while it was read."""


class Guard:
    def __init__(self, app: ASGIApp, *, max_body_bytes: int, api_key: str | None,
                 too_large: str | None = None) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes
        self.too_large = too_large  # the 413's advice (serve's: its --max-request-mb)
        self.api_key = api_key.encode() if api_key else None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if self.api_key is not None and not _public(scope["path"]) \
                and not self._authorised(scope):
            await _error(send, 401, "Missing or wrong API key: send the header "
                         "'Authorization: Bearer <key>' with the key the server was started "
                         "with (--api-key or CNNKIT_API_KEY).",
                         [(b"www-authenticate", b"Bearer")])
            return
        length = _header(scope, b"content-length")
        limit = self.max_body_bytes
        if length is not None and (not length.isdigit() or int(length) > limit):
            await _error(send, 413, _too_large(limit, self.too_large))
            return
        seen = 0
        started = False

        async def counted_receive() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    raise BodyTooLarge(_too_large(limit, self.too_large))
            return message

        async def tracked_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counted_receive, tracked_send)
        except BodyTooLarge:
            if not started:
                await _error(send, 413, _too_large(limit, self.too_large))

    def _authorised(self, scope: Scope) -> bool:
        value = _header(scope, b"authorization") or ""
        scheme, _, token = value.partition(" ")
        return scheme.lower() == "bearer" and hmac.compare_digest(
            token.strip().encode(), self.api_key or b"")


def _public(path: str) -> bool:
    return path in PUBLIC_PATHS or path.startswith(PUBLIC_PREFIXES)


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", ()):
        if key.lower() == name:
            return value.decode("latin-1")
    return None


def _too_large(limit: int, advice: str | None = None) -> str:
    return advice or (f"The request is larger than this server accepts "
                      f"({limit / 2**20:.1f} MiB); send smaller or fewer images, or start "
                      "the server with a larger --max-request-mb.")


async def _error(send: Send, status: int, message: str,
                 headers: list[tuple[bytes, bytes]] | None = None) -> None:
    body = json.dumps({"detail": message}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"),
                            (b"content-length", str(len(body)).encode()),
                            (b"connection", b"close"), *(headers or [])]})
    await send({"type": "http.response.body", "body": body})
