"""Slow and greedy clients: a deadline for request headers, and connections per client address.

aiohttp has no read timeout on a request's headers: a client that sends one byte every few
seconds holds a connection (and its buffers) for as long as it likes, and a few hundred such
clients hold the port. :class:`ConnectionGuard` wraps the server's protocol factory:

* **Header deadline**: a new connection must bring a complete request line and headers within
  ``header_timeout`` seconds, and so must a kept-alive one from the first byte of its next
  request; else the connection is aborted. "Complete" is when the application starts handling
  the request (``request_started``, called by a middleware). A kept-alive connection with no
  byte pending is left to aiohttp's keep-alive timeout (``keepalive_timeout`` of the runner).
* **Connections per client address**: past ``max_per_client`` open connections from one IP
  address, a new one is answered ``503`` and closed at once.

Bodies are bounded by the handlers that read them (``api.py``, ``--body-timeout``), since only
they know where a body ends.
"""

from __future__ import annotations

import asyncio
import logging
import weakref
from collections.abc import Callable
from typing import Any, cast

from aiohttp import web

__all__ = ["ConnectionGuard", "GuardedRunner", "request_finished", "request_started"]

log = logging.getLogger(__name__)

_REFUSED = (
    b"HTTP/1.1 503 Service Unavailable\r\n"
    b"Content-Type: application/json\r\n"
    b"Connection: close\r\n"
    b"Retry-After: 1\r\n"
)
_REFUSED_BODY = b'{"error": "overloaded", "message": "too many connections from this address"}'

_CONNECTIONS: weakref.WeakKeyDictionary[Any, _Connection] = weakref.WeakKeyDictionary()
"""The guarded connection of each transport, for the middleware's notifications."""


def request_started(transport: Any) -> None:
    """The application started handling a request on ``transport``: its headers are in."""
    conn = _CONNECTIONS.get(transport) if transport is not None else None
    if conn is not None:
        conn.started()


def request_finished(transport: Any) -> None:
    """The application answered the request on ``transport``."""
    conn = _CONNECTIONS.get(transport) if transport is not None else None
    if conn is not None:
        conn.finished()


class ConnectionGuard:
    """A protocol factory for ``loop.create_server`` around another one (aiohttp's server).

    Args:
        factory: the wrapped protocol factory.
        header_timeout: seconds from the first byte of a request to the end of its headers;
            0 turns the deadline off.
        max_per_client: open connections allowed per client IP address; 0: no cap.
    """

    def __init__(
        self,
        factory: Callable[[], asyncio.Protocol],
        *,
        header_timeout: float,
        max_per_client: int,
    ) -> None:
        self._factory = factory
        self.header_timeout = header_timeout
        self.max_per_client = max_per_client
        self.per_client: dict[str, int] = {}
        """Open connections per client address."""
        self.timed_out = 0
        """Connections closed for headers that came too slowly, so far."""
        self.refused = 0
        """Connections refused for the per-address cap, so far."""

    def __call__(self) -> asyncio.Protocol:
        return _Connection(self, self._factory())


class _Connection(asyncio.Protocol):
    """One connection: forwards everything to the wrapped protocol, and keeps the deadline."""

    def __init__(self, guard: ConnectionGuard, inner: asyncio.Protocol) -> None:
        self._guard = guard
        self._inner = inner
        self._transport: asyncio.Transport | None = None
        self._client: str | None = None
        self._refused = False
        self._timer: asyncio.TimerHandle | None = None
        self._in_request = False
        self._pending = False
        """Bytes arrived while a request was being handled (the next one, pipelined)."""

    # -- protocol ---------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        transport = cast(asyncio.Transport, transport)
        self._transport = transport
        peer = transport.get_extra_info("peername")
        client = str(peer[0]) if isinstance(peer, tuple) and peer else None
        guard = self._guard
        if (
            client is not None
            and guard.max_per_client > 0
            and guard.per_client.get(client, 0) >= guard.max_per_client
        ):
            self._refused = True
            guard.refused += 1
            if guard.refused == 1 or guard.refused % 1000 == 0:
                log.warning(
                    "refused a connection from %s: %d open already (--max-client-conns);"
                    " %d refused so far",
                    client,
                    guard.max_per_client,
                    guard.refused,
                )
            length = f"Content-Length: {len(_REFUSED_BODY)}\r\n\r\n".encode()
            transport.write(_REFUSED + length + _REFUSED_BODY)
            transport.close()
            return
        if client is not None:
            self._client = client
            guard.per_client[client] = guard.per_client.get(client, 0) + 1
        _CONNECTIONS[transport] = self
        self._inner.connection_made(transport)
        self._arm()  # the first request's headers are on the clock from the start

    def data_received(self, data: bytes) -> None:
        if self._refused:
            return
        if self._in_request:
            self._pending = True
        elif self._timer is None:
            self._arm()
        self._inner.data_received(data)

    def eof_received(self) -> bool | None:
        if self._refused:
            return None
        return self._inner.eof_received()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        if self._refused:
            return
        if self._client is not None:
            left = self._guard.per_client.get(self._client, 1) - 1
            if left > 0:
                self._guard.per_client[self._client] = left
            else:
                self._guard.per_client.pop(self._client, None)
        self._inner.connection_lost(exc)

    def pause_writing(self) -> None:
        self._inner.pause_writing()

    def resume_writing(self) -> None:
        self._inner.resume_writing()

    # -- requests ---------------------------------------------------------------------------

    def started(self) -> None:
        self._in_request = True
        self._pending = False
        self._disarm()

    def finished(self) -> None:
        self._in_request = False
        if self._pending:  # part of the next request is in: its headers are on the clock
            self._pending = False
            self._arm()

    def _arm(self) -> None:
        if self._guard.header_timeout <= 0 or self._timer is not None:
            return
        loop = asyncio.get_running_loop()
        self._timer = loop.call_later(self._guard.header_timeout, self._expired)

    def _disarm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _expired(self) -> None:
        self._timer = None
        if self._in_request or self._transport is None:
            return
        self._guard.timed_out += 1
        # No answer: a client this slow is not reading one either; abort frees it at once.
        self._transport.abort()


class GuardedRunner(web.AppRunner):
    """An ``AppRunner`` whose sites accept connections through one :class:`ConnectionGuard`.

    Args:
        app: the application.
        header_timeout: see :class:`ConnectionGuard`.
        max_client_conns: ``max_per_client`` of :class:`ConnectionGuard`.
        **kwargs: as for ``AppRunner``.
    """

    def __init__(
        self, app: web.Application, *, header_timeout: float, max_client_conns: int, **kwargs: Any
    ) -> None:
        super().__init__(app, **kwargs)
        self._guard_args = (header_timeout, max_client_conns)
        self.guard: ConnectionGuard | None = None

    @property
    def server(self) -> Any:
        """The sites' protocol factory: the guard around aiohttp's server (after setup)."""
        server = super().server
        if server is None:
            return None
        if self.guard is None:
            timeout, cap = self._guard_args
            self.guard = ConnectionGuard(server, header_timeout=timeout, max_per_client=cap)
        return self.guard
