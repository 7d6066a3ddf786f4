"""What keeps a cnnkit web app up under hostile clients: one place for every web app.

``protect(app, host, limits)`` adds the Host check (Starlette's TrustedHostMiddleware,
against DNS rebinding); ``uvicorn_config(app, host, port, limits)`` configures uvicorn
on h11 (:mod:`cnnkit.serve.protocol`, with a header size limit, a header timeout and a
connection cap), its ``limit_concurrency``, ``timeout_keep_alive`` and
``h11_max_incomplete_event_size``; ``uvicorn_server(config)`` runs it with a deep
queue of connections to accept. ``cnnkit serve`` uses all three; so must any other app
(the studio). docs/robustness.md lists the hazards and what answers each.
"""

from __future__ import annotations

import contextlib
import functools
import ipaddress
import json
import os
import socket
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from starlette.middleware.trustedhost import TrustedHostMiddleware

from cnnkit.base import log
from cnnkit.base.errors import CnnkitError

if TYPE_CHECKING:
    import uvicorn
    from starlette.applications import Starlette
    from starlette.types import ASGIApp, Receive, Scope, Send

LOOPBACK = ("127.0.0.1", "localhost", "[::1]")
WILDCARD = ("0.0.0.0", "::", "")
FD_RESERVE = 64  # open files kept free beyond those open at start (models, logs, static files)
BACKLOG = 64  # connections the kernel queues for accept (uvicorn's default: 2048)
# asyncio accepts up to a backlog of connections per loop tick, and a connection's
# protocol (which can close it) starts two ticks later: this many backlogs of files are
# kept for connections that are open but not yet counted.
ACCEPT_TICKS = 4
LISTEN_QUEUE = 1024  # the kernel's queue of connections waiting to be accepted


@dataclass(frozen=True)
class HttpLimits:
    """What one client may take of the server: header bytes, time and connections."""

    max_header_bytes: int = 16 * 1024  # request line and headers; beyond: 431
    header_timeout_s: float = 10.0  # to send a whole request line and headers; then 408
    body_timeout_s: float = 30.0  # a request body may pause this long between reads; then 408
    keep_alive_s: int = 5  # an idle connection between requests is closed after this
    max_connections: int = 1000  # open at once (fewer if the open-file limit is lower)
    allowed_hosts: tuple[str, ...] = ()  # Host names accepted beyond the bind address's own

    def __post_init__(self) -> None:
        if self.max_connections < 2:
            raise CnnkitError(f"--max-connections must be at least 2. Received: "
                              f"{self.max_connections}")
        if not self.header_timeout_s > 0:
            raise CnnkitError(f"--header-timeout must be more than 0 seconds. Received: "
                              f"{self.header_timeout_s}")
        if not self.body_timeout_s > 0:
            raise CnnkitError(f"--body-timeout must be more than 0 seconds. Received: "
                              f"{self.body_timeout_s}")
        if self.max_header_bytes < 1024:
            raise CnnkitError(f"The header limit must be at least 1 KiB. Received: "
                              f"{self.max_header_bytes} bytes")
        for name in self.allowed_hosts:
            if not name or "*" in name[1:] or (name.startswith("*") and
                                               not name.startswith("*.") and name != "*"):
                raise CnnkitError(f"--allowed-host takes a host name ('cnnkit.internal'), "
                                  "'*.example.com' for its subdomains, or '*' for any. "
                                  f"Received: {name!r}")


def trusted_hosts(bind: str, extra: Sequence[str] = ()) -> list[str]:
    """The Host header values a server bound to ``bind`` answers: the bind address, this
    machine's loopback names when it listens there, its name and addresses when it listens
    on every interface, and ``extra``."""
    hosts: list[str] = []
    if bind in WILDCARD:
        name = socket.gethostname()
        hosts += [*LOOPBACK, name.lower(), *_addresses(name)]
    else:
        hosts.append(_bracketed(bind))
        if _is_loopback(bind):
            hosts += LOOPBACK
    hosts += [h.lower() for h in extra]
    return list(dict.fromkeys(hosts))


def _addresses(name: str) -> list[str]:
    """This machine's addresses that ``name`` resolves to, and the one it reaches out from."""
    found = []
    with contextlib.suppress(OSError):
        found += [info[4][0] for info in socket.getaddrinfo(name, None)]
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe, \
            contextlib.suppress(OSError):
        probe.connect(("192.0.2.1", 9))  # no packet is sent: it only picks a route
        found.append(probe.getsockname()[0])
    return [_bracketed(a.split("%")[0]) for a in found]


def _bracketed(address: str) -> str:
    return f"[{address}]" if ":" in address and not address.startswith("[") else address


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


class TrustedHosts:
    """Starlette's ``TrustedHostMiddleware`` decides; a refusal says what to do."""

    def __init__(self, app: ASGIApp, allowed_hosts: Sequence[str]) -> None:
        self.app = app
        self.allowed_hosts = list(allowed_hosts)
        self._check = TrustedHostMiddleware(_mark_trusted, allowed_hosts=self.allowed_hosts,
                                            www_redirect=False)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        await self._check(scope, receive, _discard)
        if scope.pop(_TRUSTED, False):
            await self.app(scope, receive, send)
            return
        host = dict(scope.get("headers", ())).get(b"host", b"").decode("latin-1")
        shown = ", ".join(self.allowed_hosts[:6]) + (", ..." if len(self.allowed_hosts) > 6
                                                     else "")
        if scope["type"] == "websocket":
            await send({"type": "websocket.close", "code": 1008})
            return
        await send_json(send, 400, f"This server does not answer for the host "
                        f"{log.cut(host, 80)!r} (it answers for {shown}). Use one of those "
                        "addresses, or start it with --allowed-host NAME to add the name.")


_TRUSTED = "cnnkit.trusted_host"


async def _mark_trusted(scope: Scope, receive: Receive, send: Send) -> None:
    scope[_TRUSTED] = True


async def _discard(message: Any) -> None:
    return None


async def send_json(send: Send, status: int, detail: str,
                    headers: Sequence[tuple[bytes, bytes]] = ()) -> None:
    """One JSON error answer, ``{"detail": ...}``, that closes the connection."""
    body = json.dumps({"detail": detail}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"),
                            (b"content-length", str(len(body)).encode()),
                            (b"connection", b"close"), *headers]})
    await send({"type": "http.response.body", "body": body})


def protect(app: Starlette, host: str, limits: HttpLimits) -> list[str]:
    """Add the Host check to ``app`` (outermost, so it runs first); returns the hosts."""
    hosts = trusted_hosts(host, limits.allowed_hosts)
    if "*" not in hosts:
        app.add_middleware(TrustedHosts, allowed_hosts=hosts)
    return hosts


def connection_cap(requested: int, backlog: int = BACKLOG) -> int:
    """``requested`` connections, or fewer so that they fit the open-file limit (raised to
    its hard ceiling first where that allows more). Room is kept for the files open now,
    :data:`FD_RESERVE` more, and :data:`ACCEPT_TICKS` backlogs of connections accepted
    before any of them can be turned away."""
    try:
        import resource
    except ImportError:  # Windows: no such limit
        return requested
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    spare = _open_files() + FD_RESERVE + ACCEPT_TICKS * backlog
    if soft != resource.RLIM_INFINITY and soft < requested + spare:
        raised = requested + spare if hard == resource.RLIM_INFINITY else \
            min(requested + spare, hard)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (raised, hard))
            soft = raised
        except (ValueError, OSError):
            pass
    if soft == resource.RLIM_INFINITY:
        return requested
    return max(2, min(requested, soft - spare))


def _open_files() -> int:
    try:
        return len(os.listdir("/proc/self/fd"))
    except OSError:
        return 32


def uvicorn_config(app: ASGIApp, host: str, port: int, limits: HttpLimits,
                   **kwargs: Any) -> uvicorn.Config:
    """A uvicorn configuration with ``limits``: h11 (whose header limit holds; httptools,
    uvicorn's default when installed, has none), cnnkit's protocol on top of it (header
    and body timeouts, 431, connection cap), uvicorn's keep-alive timeout and concurrency limit.
    ``kwargs`` go to ``uvicorn.Config`` (log level, graceful shutdown, ...)."""
    import uvicorn

    from cnnkit.serve.protocol import GuardedH11Protocol

    kwargs.setdefault("backlog", BACKLOG)
    cap = connection_cap(limits.max_connections, kwargs["backlog"])
    if cap < limits.max_connections:
        log.info(f"at most {cap} connections at once: the open-file limit (ulimit -n) "
                 "leaves no room for more")
    kwargs.setdefault("ws", "none")  # no route speaks WebSocket
    # uvicorn's limit_concurrency counts every open connection, slow ones too: at the cap it
    # would answer 503 to everyone while slow clients wait out their grace. It guards the
    # hard limit, where the open files run out; the protocol keeps below the cap itself.
    hard = cap + kwargs["backlog"]
    return uvicorn.Config(
        app, host=host, port=port,
        http=functools.partial(GuardedH11Protocol, max_header_bytes=limits.max_header_bytes,
                               header_timeout_s=limits.header_timeout_s,
                               body_timeout_s=limits.body_timeout_s, max_connections=cap,
                               hard_limit=hard),
        h11_max_incomplete_event_size=limits.max_header_bytes,
        timeout_keep_alive=limits.keep_alive_s,
        limit_concurrency=hard, **kwargs)


def uvicorn_server(config: uvicorn.Config) -> uvicorn.Server:
    """A uvicorn server for ``config`` (from :func:`uvicorn_config`) whose kernel queue of
    connections is :data:`LISTEN_QUEUE` deep while asyncio accepts a backlog at a time."""
    from cnnkit.serve.protocol import DeepQueueServer

    return DeepQueueServer(config, max(LISTEN_QUEUE, config.backlog))
