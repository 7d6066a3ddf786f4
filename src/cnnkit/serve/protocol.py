"""uvicorn's h11 protocol with what it lacks against slow and greedy clients.

uvicorn times out an idle connection only between requests (``timeout_keep_alive``): a
client that sends one header byte a second keeps its connection, and its file
descriptor, for ever; 1,100 of them exhaust the common limit of 1,024 open files and
the server stops accepting anyone. uvicorn's ``limit_concurrency`` answers 503 once a
request has arrived, counting every open connection, slow ones included, so alone it
would turn the server away from everyone. On top of ``H11Protocol`` this adds:

- a header deadline: a request line and headers must arrive within
  ``header_timeout_s`` of the connection (or of the previous answer); then 408 and close;
- a body deadline: a request's body may pause at most ``body_timeout_s`` between two
  reads (nginx's ``client_body_timeout``); then 408 and close, and the app's read of it
  ends as a disconnect;
- a connection cap: a new connection over ``max_connections`` closes the oldest one
  that has not sent a whole request (a slow client's, or an idle keep-alive), so that
  ordinary requests keep getting through while slow clients come and go; past
  ``hard_limit`` (the room left in the open-file limit) even a new one is closed;
- 431 (not uvicorn's 400) when the request line and headers pass ``max_header_bytes``,
  counted as they arrive (h11's own limit, also set, sees only an incomplete head).
"""

from __future__ import annotations

import asyncio
import heapq
import json
import time
from typing import Any

import h11
import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol

# A connection this young is not closed for a newer one (unless the hard limit is passed):
# an ordinary client sends its request within milliseconds of connecting, and must not lose
# its connection to a burst of slow clients arriving in the same instant.
GRACE_S = 0.1
LINGER_S = 1.0  # after a final answer, how long what the client still sends is read and dropped
LINGER_BYTES = 16 << 20  # and how much of it
_STATUS = {408: b"Request Timeout", 431: b"Request Header Fields Too Large",
           503: b"Service Unavailable", 400: b"Bad Request"}


class _Connection(h11.Connection):
    """h11's connection, remembering the protocol error it raised (for its status hint)."""

    error: h11.RemoteProtocolError | None = None

    def next_event(self) -> Any:
        try:
            return super().next_event()
        except h11.RemoteProtocolError as exc:
            self.error = exc
            raise


class GuardedH11Protocol(H11Protocol):
    """``H11Protocol`` with a header deadline, a connection cap that evicts slow clients,
    and 431 for headers over the limit (see the module's docstring)."""

    def __init__(self, *args: Any, max_header_bytes: int, header_timeout_s: float,
                 max_connections: int, hard_limit: int, body_timeout_s: float = 30.0,
                 **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.conn = _Connection(h11.SERVER, max_header_bytes)
        self.max_header_bytes = max_header_bytes
        self.header_timeout_s = header_timeout_s
        self.body_timeout_s = body_timeout_s
        self.max_connections = max_connections
        self.hard_limit = max(hard_limit, max_connections)
        self._deadline: asyncio.TimerHandle | None = None
        self._since = time.monotonic()  # when the request being read began
        self._head_bytes = 0  # bytes of the request line and headers received so far
        self._tail = b""  # the last bytes of them, to find their end across reads
        self._answered = 0  # requests answered on this connection
        self._discarded: int | None = None  # bytes read and dropped after a final answer

    # Connection lifetime

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._start_head()
        if len(self.connections) > self.max_connections:
            self._evict()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_deadline()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._discarded is not None:  # answered already; lingering before the close
            self._discarded += len(data)
            if self._discarded > LINGER_BYTES:
                self.transport.close()
            return
        if self.conn.their_state is h11.IDLE and not self._head_fits(data):
            self._reply(431, f"The request's line and headers are larger than this server "
                             f"accepts ({self.max_header_bytes // 1024} KiB); send fewer or "
                             "shorter headers.")
            return
        super().data_received(data)
        if self.conn.their_state is not h11.IDLE:
            self._cancel_deadline()  # the request line and headers are in
            if self.conn.their_state is h11.SEND_BODY and not self.transport.is_closing():
                self._deadline = self.loop.call_later(self.body_timeout_s, self._body_stalled)

    def on_response_complete(self) -> None:
        self._answered += 1
        super().on_response_complete()
        if not self.transport.is_closing() and self.conn.their_state is h11.IDLE:
            self._start_head()

    def _head_fits(self, data: bytes) -> bool:
        """Count the request line and headers as they arrive; False once they pass the
        limit. h11's own limit holds only while a head is incomplete in its buffer: a 60 KB
        head that arrives in one read would pass it."""
        seen = self._tail + data
        end = seen.find(b"\r\n\r\n")
        size = self._head_bytes + (len(data) if end < 0 else end + 4 - len(self._tail))
        self._head_bytes, self._tail = size, seen[-3:]
        return size <= self.max_header_bytes

    # The header deadline

    def _start_head(self) -> None:
        self._cancel_deadline()
        self._since = time.monotonic()
        self._head_bytes, self._tail = 0, b""
        self._deadline = self.loop.call_later(self.header_timeout_s, self._too_slow)

    def _cancel_deadline(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _too_slow(self) -> None:
        self._deadline = None
        if self.transport.is_closing() or self.conn.their_state is not h11.IDLE:
            return
        if self._head_bytes:
            self._reply(408, f"The request's line and headers did not arrive within "
                             f"{self.header_timeout_s:g} s; send them at once.")
        else:  # an idle connection: closed without a word, as keep-alive does
            self.transport.close()

    def _body_stalled(self) -> None:
        """No part of the body for ``body_timeout_s``. Reading paused by the server itself
        (the app has not taken what came) is not the client's stall: wait again."""
        self._deadline = None
        if self.transport.is_closing() or self.conn.their_state is not h11.SEND_BODY:
            return
        if self.flow.read_paused:
            self._deadline = self.loop.call_later(self.body_timeout_s, self._body_stalled)
            return
        if self.cycle is not None and self.cycle.response_started:
            self.transport.close()
            return
        self._reply(408, f"The request's body paused for more than {self.body_timeout_s:g} s; "
                         "send it at once.")

    # The connection cap

    @property
    def _evictable(self) -> bool:
        """Still reading a request (its head, or its body while the app waits for it), or
        lingering after an answer."""
        return (not self.transport.is_closing() and
                (self._discarded is not None or
                 self.conn.their_state in (h11.IDLE, h11.SEND_BODY)))

    def _evict(self) -> None:
        """Close the connections that have been reading a request longest (lingering ones
        first, then heads, then bodies) until at most ``max_connections`` are open; one younger than
        :data:`GRACE_S` only while ``hard_limit`` is reached. None is closed that has a
        whole request in the app."""
        now = time.monotonic()
        excess = len(self.connections) - self.max_connections
        victims = heapq.nsmallest(excess, (c for c in self.connections if c is not self and
                                           isinstance(c, GuardedH11Protocol) and c._evictable),
                                  key=lambda c: (c._discarded is None,
                                                 c.conn.their_state is not h11.IDLE, c._since))
        for victim in victims:
            if now - victim._since < GRACE_S and len(self.connections) < self.hard_limit:
                return
            victim._close_evicted()

    def _close_evicted(self) -> None:
        """503 to a connection that was sending (or about to send) a request; an idle
        keep-alive between requests, or one whose body the app is reading, is closed."""
        self._cancel_deadline()
        if self._discarded is None and self.conn.their_state is h11.IDLE and (
                self._head_bytes or not self._answered):
            self._reply(503, "The server has too many connections open; this one was the "
                             "slowest to send its request. Retry in a moment.",
                        [(b"retry-after", b"1")], linger=False)  # its file is needed now
        else:
            self.transport.close()
        self.connections.discard(self)  # counted out now, not when the loop gets to it

    # Answers outside the app

    def send_400_response(self, msg: str) -> None:
        error = self.conn.error
        if error is not None and error.error_status_hint == 431:
            self._reply(431, f"The request's line and headers are larger than this server "
                             f"accepts ({self.max_header_bytes // 1024} KiB); send "
                             "fewer or shorter headers.")
            return
        super().send_400_response(msg)

    def _reply(self, status: int, detail: str,
               headers: list[tuple[bytes, bytes]] | None = None, linger: bool = True
               ) -> None:
        """An answer written straight to the socket (h11 has no request to answer), then
        the connection closed: at once, or after lingering (:meth:`_linger`)."""
        body = json.dumps({"detail": detail}).encode()
        head = [f"HTTP/1.1 {status} ".encode() + _STATUS.get(status, b""),
                b"content-type: application/json", b"connection: close",
                b"content-length: " + str(len(body)).encode(),
                *(name + b": " + value for name, value in headers or [])]
        self.transport.write(b"\r\n".join(head) + b"\r\n\r\n" + body)
        if linger and self.transport.can_write_eof():
            self._linger()
        else:
            self.transport.close()

    def _linger(self) -> None:
        """Send the end of the stream, then discard what the client still sends for up to
        :data:`LINGER_S` (or :data:`LINGER_BYTES`) before closing: a socket closed with
        unread data sends a reset, which throws away the answer the client has not read
        yet (it would see "connection reset" instead of 431)."""
        self._cancel_deadline()
        self._discarded = 0
        self.transport.write_eof()
        self.loop.call_later(LINGER_S, self.transport.close)


class DeepQueueServer(uvicorn.Server):
    """uvicorn's server whose kernel queue of connections waiting to be accepted is
    ``listen_queue`` deep, while asyncio still accepts ``backlog`` per loop tick.

    asyncio uses one number for both; a short queue drops the SYNs of ordinary clients
    while slow ones churn (each drop costs the client a 1 s, then 3 s, retransmission),
    and a long batch opens more files at once than the protocol can yet turn away.
    """

    def __init__(self, config: uvicorn.Config, listen_queue: int) -> None:
        super().__init__(config)
        self.listen_queue = listen_queue

    async def startup(self, sockets: list[Any] | None = None) -> None:
        await super().startup(sockets)
        for server in getattr(self, "servers", []):
            for sock in server.sockets:
                try:
                    listening = sock.dup()  # the same socket: listen() again resizes its queue
                    listening.listen(self.listen_queue)
                    listening.close()
                except OSError:
                    pass
