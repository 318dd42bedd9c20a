"""The transport contract over aiohttp websockets: one frame per binary message.

This is how the daemon can carry the peer protocol on its HTTP port: mount
`websocket_handler(node.handle_channel)` on a route (``GET /peer``, say) and give its nodes
`WebSocketTransport` to dial ``ws://host:port/peer``. `WebSocketTransport.serve` runs a small
aiohttp site of its own, for standalone use and for the conformance suite.

TLS: a transport given an ``ssl`` context dials ``wss://`` addresses only, with that context
(which verifies the server's certificate unless the caller made it not to); one without dials
``ws://`` only. Addresses come from peers, so a transport that refused neither would let any
peer move a link to plain text by advertising ``ws://``. The server side is the application's
own site (its ``ssl_context``), or ``server_ssl`` for `serve`.

aiohttp enforces the frame limit on receipt (``max_msg_size``): an oversized message makes it
close the websocket with code 1009, which becomes `RemoteProtocolError` here. A text message
is a protocol error too: frames are binary.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl as _ssl
from collections.abc import AsyncIterator, Awaitable, Callable

import aiohttp
from aiohttp import web

from ._codec import DEFAULT_MAX_FRAME
from ._errors import ChannelClosed, ConnectError, LocalProtocolError, RemoteProtocolError
from ._transport import Channel, ChannelHandler, run_handler, split_address

__all__ = ["WebSocketChannel", "WebSocketTransport", "websocket_handler"]

_MESSAGE_TOO_BIG = 1009
_CLOSE_TIMEOUT = 1.0  # how long a close waits for the other end's close frame


class WebSocketChannel:
    """A channel over a client or server aiohttp websocket.

    Args:
        ws: an open websocket, created with ``max_msg_size`` set to the frame limit.
        max_frame: the frame limit.
        session: a client session to close with the channel (client side only).
    """

    def __init__(
        self,
        ws: web.WebSocketResponse | aiohttp.ClientWebSocketResponse,
        max_frame: int = DEFAULT_MAX_FRAME,
        session: aiohttp.ClientSession | None = None,
    ) -> None:
        self.max_frame = max_frame
        self._ws = ws
        self._session = session
        self._closed = False

    async def send(self, frame: bytes) -> None:
        if len(frame) > self.max_frame:
            raise LocalProtocolError(
                f"frame of {len(frame)} bytes is over the {self.max_frame}-byte limit"
            )
        if self._closed or self._ws.closed:
            raise ChannelClosed("channel is closed")
        try:
            await self._ws.send_bytes(frame)
        except (ConnectionError, RuntimeError, aiohttp.ClientError) as exc:
            await self.aclose()
            raise ChannelClosed(f"send failed: {exc!r}") from None

    async def receive(self) -> bytes:
        if self._closed:
            raise ChannelClosed("channel is closed")
        msg = await self._ws.receive()
        if msg.type is aiohttp.WSMsgType.BINARY:
            data: bytes = msg.data
            if len(data) <= self.max_frame:
                return data
            await self.aclose()
            raise RemoteProtocolError(f"peer sent a {len(data)}-byte frame")
        too_big = self._ws.close_code == _MESSAGE_TOO_BIG or (
            msg.type is aiohttp.WSMsgType.ERROR
            and getattr(msg.data, "code", None) == _MESSAGE_TOO_BIG
        )
        await self.aclose()
        if too_big:
            raise RemoteProtocolError(f"peer sent a frame over the {self.max_frame}-byte limit")
        if msg.type is aiohttp.WSMsgType.TEXT:
            raise RemoteProtocolError("peer sent a text message; frames are binary")
        raise ChannelClosed(f"websocket ended ({msg.type.name})")

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            with contextlib.suppress(ConnectionError, RuntimeError, aiohttp.ClientError):
                await self._ws.close()
        finally:  # even when cancelled mid-close: a session left open leaks its connector
            if self._session is not None:
                await asyncio.shield(self._session.close())


def websocket_handler(
    handler: ChannelHandler, max_frame: int = DEFAULT_MAX_FRAME
) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    """An aiohttp request handler that upgrades to a websocket and serves it as a channel."""

    async def handle(request: web.Request) -> web.StreamResponse:
        ws = web.WebSocketResponse(
            max_msg_size=max_frame + 1, autoping=True, timeout=_CLOSE_TIMEOUT
        )
        await ws.prepare(request)
        await run_handler(handler, WebSocketChannel(ws, max_frame))
        return ws

    return handle


class WebSocketTransport:
    """Frames over websockets, addressed as ``ws://host:port/path`` (``wss://`` with ``ssl``).

    Args:
        max_frame: the frame size limit, both ways.
        connect_timeout: limit on the HTTP upgrade (the TLS handshake included).
        path: the route `serve` answers on.
        ssl: the client context of TLS links: with it the transport dials ``wss://``
            addresses only, without it ``ws://`` only. ``ssl.create_default_context()``
            verifies peers against the system's trust store; ``cafile=`` for a private CA.
        server_ssl: the server context `serve` listens with, given with ``ssl`` (a transport
            with ``ssl`` alone dials but cannot `serve`).
    """

    def __init__(
        self,
        max_frame: int = DEFAULT_MAX_FRAME,
        connect_timeout: float = 5.0,
        path: str = "/membership",
        *,
        ssl: _ssl.SSLContext | None = None,
        server_ssl: _ssl.SSLContext | None = None,
    ) -> None:
        self.max_frame = max_frame
        self.connect_timeout = connect_timeout
        self.path = path
        self.ssl = ssl
        self.server_ssl = server_ssl
        self.scheme = "wss" if ssl is not None else "ws"

    async def connect(self, address: str) -> Channel:
        split_address(address, self.scheme)
        session = aiohttp.ClientSession()
        try:
            async with asyncio.timeout(self.connect_timeout):
                ws = await session.ws_connect(
                    address,
                    max_msg_size=self.max_frame + 1,  # aiohttp refuses len >= limit
                    timeout=aiohttp.ClientWSTimeout(ws_close=_CLOSE_TIMEOUT),
                    autoping=True,
                    ssl=self.ssl if self.ssl is not None else True,
                )
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            await session.close()
            raise ConnectError(f"cannot connect to {address}: {exc!r}") from None
        return WebSocketChannel(ws, self.max_frame, session)

    @contextlib.asynccontextmanager
    async def serve(self, address: str, handler: ChannelHandler) -> AsyncIterator[str]:
        host, port = split_address(address, self.scheme)
        if (self.ssl is None) != (self.server_ssl is None):
            raise LocalProtocolError("serve needs both ssl and server_ssl, or neither")
        app = web.Application()
        app.router.add_get(self.path, websocket_handler(handler, self.max_frame))
        runner = web.AppRunner(app, handle_signals=False, shutdown_timeout=0.5)
        await runner.setup()
        try:
            await web.TCPSite(runner, host, port, ssl_context=self.server_ssl).start()
            bound = runner.addresses[0][1]
            yield f"{self.scheme}://{host}:{bound}{self.path}"
        finally:
            await runner.cleanup()
