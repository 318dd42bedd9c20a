"""HyParView partial mesh, Plumtree broadcast, discovery and a simulator (issue 5)."""

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
from ._messages import (
    BroadcastReceived,
    DirectReceived,
    Event,
    NeighborDown,
    NeighborUp,
    Peer,
)
from ._overlay import Overlay
from ._plumtree import Plumtree

__all__ = [
    "AuthenticationError",
    "BroadcastReceived",
    "ChannelClosed",
    "ConnectError",
    "DirectReceived",
    "Event",
    "HyParView",
    "HyParViewConfig",
    "LocalProtocolError",
    "MembershipError",
    "NeighborDown",
    "NeighborUp",
    "NodeConfig",
    "NotNeighborError",
    "Overlay",
    "Peer",
    "Plumtree",
    "PlumtreeConfig",
    "RemoteProtocolError",
    "TransportError",
]
