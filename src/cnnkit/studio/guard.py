"""Who may call the studio: its API key (header or cookie) on every route but the page's
own files, and the same-origin mark on every request that changes something, which
another web site's form or script cannot send (no cross-site writes)."""

from __future__ import annotations

import hmac
import json
from typing import Any

KEY_COOKIE = "cnnkit_studio_key"
PUBLIC = ("/", "/favicon.ico", "/health")


class StudioGuard:
    """The key (header or cookie) on every route but the page's files, and the
    same-origin mark on every request that changes something."""

    def __init__(self, app: Any, *, api_key: str | None) -> None:
        self.app = app
        self.key = api_key.encode() if api_key else None

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope["path"]
        headers = {k.decode("latin-1").lower(): v.decode("latin-1")
                   for k, v in scope.get("headers", ())}
        if self.key is not None and path not in PUBLIC and not path.startswith("/static/") \
                and not self._authorised(headers):
            await _answer(send, 401, "This studio needs its API key: enter it on the page, or "
                          "send 'Authorization: Bearer <key>' (the key given to cnnkit studio "
                          "with --api-key or CNNKIT_API_KEY).")
            return
        if scope["method"] not in ("GET", "HEAD", "OPTIONS"):
            origin = headers.get("origin")
            host = headers.get("host", "")
            if headers.get("x-studio") != "1" or (
                    origin is not None and origin.split("://", 1)[-1] != host):
                await _answer(send, 403, "Changes are accepted from the studio's own page "
                              "only (the X-Studio: 1 header, from its origin).")
                return
        await self.app(scope, receive, send)

    def _authorised(self, headers: dict[str, str]) -> bool:
        scheme, _, token = headers.get("authorization", "").partition(" ")
        if scheme.lower() == "bearer" and hmac.compare_digest(token.strip().encode(),
                                                               self.key or b""):
            return True
        for part in headers.get("cookie", "").split(";"):
            name, _, value = part.strip().partition("=")
            if name == KEY_COOKIE:
                from urllib.parse import unquote

                return hmac.compare_digest(unquote(value).encode(), self.key or b"")
        return False


async def _answer(send: Any, status: int, detail: str) -> None:
    body = json.dumps({"detail": detail}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"),
                            (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})
