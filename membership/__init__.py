"""HyParView partial mesh, Plumtree broadcast, zeroconf discovery and a simulator.

A library: it knows nothing of wasm, HTTP or the CRDT store. The daemon runs one `Node`::

    async with Node(NodeConfig("n1", listen="tcp://0.0.0.0:7946",
                               advertise="tcp://10.0.0.5:7946",
                               join=("tcp://10.0.0.2:7946",), cluster_key=b"secret")) as node:
        events = node.events()
        node.broadcast(b"record")              # to every node (Plumtree)
        async for event in events:
            match event:
                case NeighborUp(peer):         # start anti-entropy with peer
                    node.send(peer, b"digest") # to that neighbour only
                case DirectReceived(peer, payload): ...
                case BroadcastReceived(msg_id, origin, payload): ...
                case NeighborDown(peer): ...

`node.active_view()`, `node.passive_view()` and `node.status()` feed ``/status``. The pure
protocol cores (`Overlay` = `HyParView` + `Plumtree`) run the same in the simulator
(``python -m membership.sim``). See docs/membership.md.
"""

from typing import TYPE_CHECKING, Any

from ._config import HyParViewConfig, NodeConfig, PlumtreeConfig
from ._errors import (
    AuthenticationError,
    ChannelClosed,
    ConnectError,
    LocalProtocolError,
    MembershipError,
    NotNeighborError,
    RemoteProtocolError,
    TransportError,
)
from ._hyparview import HyParView
from ._memory import MemoryTransport
from ._messages import (
    BroadcastReceived,
    DirectReceived,
    Event,
    NeighborDown,
    NeighborUp,
    Peer,
)
from ._node import Node
from ._overlay import Overlay
from ._plumtree import Plumtree
from ._subscription import Subscription
from ._transport import Channel, ChannelHandler, TcpTransport, Transport

if TYPE_CHECKING:
    from ._websocket import WebSocketChannel, WebSocketTransport, websocket_handler

_LAZY = {"WebSocketChannel", "WebSocketTransport", "websocket_handler"}


def __getattr__(name: str) -> Any:
    # aiohttp costs most of the import time: load the websocket transport on first use only.
    if name in _LAZY:
        from . import _websocket

        return getattr(_websocket, name)
    raise AttributeError(f"module 'membership' has no attribute {name!r}")


__all__ = [
    "AuthenticationError",
    "BroadcastReceived",
    "Channel",
    "ChannelClosed",
    "ChannelHandler",
    "ConnectError",
    "DirectReceived",
    "Event",
    "HyParView",
    "HyParViewConfig",
    "LocalProtocolError",
    "MembershipError",
    "MemoryTransport",
    "NeighborDown",
    "NeighborUp",
    "Node",
    "NodeConfig",
    "NotNeighborError",
    "Overlay",
    "Peer",
    "Plumtree",
    "PlumtreeConfig",
    "RemoteProtocolError",
    "Subscription",
    "TcpTransport",
    "Transport",
    "TransportError",
    "WebSocketChannel",
    "WebSocketTransport",
    "websocket_handler",
]
