"""The membership layer's exceptions: one root, local and remote faults kept apart.

`LocalProtocolError` means this process asked for something the protocol does not allow
(send a frame over the size limit, a direct message to a peer that is not a neighbour).
`RemoteProtocolError` means a peer sent something we refuse (garbage, an oversized frame, a
failed handshake): the I/O adapter closes that one connection and nothing else.
`TransportError` covers connections that cannot be made or have gone away. Errors of the
underlying libraries (`OSError`, aiohttp's, msgpack's) are translated into these at the I/O
boundary only, in the transport modules and the codec.
"""

from __future__ import annotations

__all__ = [
    "AuthenticationError",
    "ChannelClosed",
    "ConnectError",
    "LocalProtocolError",
    "MembershipError",
    "NotNeighborError",
    "RemoteProtocolError",
    "TransportError",
]


class MembershipError(Exception):
    """Root of every exception raised by `membership`."""


class LocalProtocolError(MembershipError):
    """This node tried something the protocol forbids; the connection is still usable."""


class NotNeighborError(LocalProtocolError):
    """A direct message was addressed to a peer outside the active view."""


class RemoteProtocolError(MembershipError):
    """A peer broke the protocol (garbage, oversized frame, bad handshake)."""


class AuthenticationError(RemoteProtocolError):
    """A peer failed the cluster-key challenge (wrong key, no key, or a replayed proof)."""


class TransportError(MembershipError):
    """A connection could not be made or is gone."""


class ConnectError(TransportError):
    """Dialling an address failed (refused, unreachable, timed out)."""


class ChannelClosed(TransportError):
    """The channel was closed, by either side, or the connection broke."""
