"""Every value that crosses a protocol boundary: peers, wire messages and user events.

All are frozen: a core never mutates a message it received, and a message it put in its
outbox can be encoded later, or delivered to many simulated nodes, unchanged. The wire codec
lives apart, in `_codec.py`.

Three families of messages share one wire:

* HyParView (membership): `Join`, `ForwardJoin`, `Neighbor`, `NeighborReply`, `Disconnect`,
  `Shuffle`, `ShuffleReply`.
* Plumtree (broadcast) and direct delivery: `Gossip`, `IHave`, `Graft`, `Prune`, `Direct`.
* Link control, handled by the I/O adapter and never seen by a core: `Hello`, `Proof`,
  `Ping`.

Events are what a core tells its user: `NeighborUp`, `NeighborDown`, `BroadcastReceived`,
`DirectReceived`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple, TypeAlias

__all__ = [
    "BroadcastReceived",
    "CoreMessage",
    "Direct",
    "DirectReceived",
    "Disconnect",
    "Event",
    "ForwardJoin",
    "Gossip",
    "Graft",
    "Hello",
    "IHave",
    "Join",
    "LinkMessage",
    "Message",
    "Neighbor",
    "NeighborDown",
    "NeighborReply",
    "NeighborUp",
    "Peer",
    "Ping",
    "Proof",
    "Prune",
    "Shuffle",
    "ShuffleReply",
]


class Peer(NamedTuple):
    """A node as the overlay knows it: its id and the address it can be dialled at.

    Both fields make the identity: a node that comes back on another address is a new peer,
    and the old entry ages out of the views like any dead node's.
    """

    id: str
    """The node's name, unique in the cluster."""
    address: str
    """Where to dial it, as its transport understands it (``tcp://host:port``, ``ws://...``)."""

    def __str__(self) -> str:
        return f"{self.id}@{self.address}"


# --- HyParView -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Join:
    """A new node asks its contact to take it into the overlay."""


@dataclass(frozen=True, slots=True)
class ForwardJoin:
    """A random walk that announces `joiner`; it lands in a passive view at PRWL and an
    active view at 0."""

    joiner: Peer
    ttl: int


@dataclass(frozen=True, slots=True)
class Neighbor:
    """Ask the receiver to take the sender into its active view.

    A high-priority request (the sender has no neighbour at all, or is completing a join) is
    always accepted; a low-priority one only while the receiver's active view has room.
    """

    high_priority: bool


@dataclass(frozen=True, slots=True)
class NeighborReply:
    """The answer to `Neighbor`."""

    accepted: bool


@dataclass(frozen=True, slots=True)
class Disconnect:
    """The sender dropped the receiver from its active view (into its passive view)."""


@dataclass(frozen=True, slots=True)
class Shuffle:
    """A random walk carrying a sample of `origin`'s views, to refresh passive views."""

    origin: Peer
    nodes: tuple[Peer, ...]
    ttl: int


@dataclass(frozen=True, slots=True)
class ShuffleReply:
    """The walk's last node answers `origin` directly with a sample of its passive view."""

    nodes: tuple[Peer, ...]


# --- Plumtree and direct messages -------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Gossip:
    """A broadcast payload, eagerly pushed along the tree. `round` counts hops."""

    msg_id: int
    round: int
    origin: str
    payload: bytes


@dataclass(frozen=True, slots=True)
class IHave:
    """Lazy push: the sender has these messages, as ``(msg_id, round)`` pairs."""

    announcements: tuple[tuple[int, int], ...]


@dataclass(frozen=True, slots=True)
class Graft:
    """Ask for a missing message and put the link back on the tree."""

    msg_id: int
    round: int


@dataclass(frozen=True, slots=True)
class Prune:
    """A duplicate came over this link: take it off the tree (lazy from now on)."""


@dataclass(frozen=True, slots=True)
class Direct:
    """An application payload for this one neighbour (anti-entropy digests, deltas, ...)."""

    payload: bytes


# --- link control (I/O adapter only) ---------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Hello:
    """First frame on every connection, from both ends: who I am and my challenge."""

    peer: Peer
    nonce: bytes
    keyed: bool
    version: int


@dataclass(frozen=True, slots=True)
class Proof:
    """Second frame: the HMAC answer to the other end's challenge (empty when open)."""

    mac: bytes


@dataclass(frozen=True, slots=True)
class Ping:
    """Keepalive: any frame proves the link alive; this one is sent when there is no other."""


CoreMessage: TypeAlias = (
    Join
    | ForwardJoin
    | Neighbor
    | NeighborReply
    | Disconnect
    | Shuffle
    | ShuffleReply
    | Gossip
    | IHave
    | Graft
    | Prune
    | Direct
)
"""A message a protocol core sends and receives."""

LinkMessage: TypeAlias = Hello | Proof | Ping
"""A message the I/O adapter's link layer keeps to itself."""

Message: TypeAlias = CoreMessage | LinkMessage
"""Anything that goes in a frame."""


# --- events ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class NeighborUp:
    """`peer` joined this node's active view: direct messages to it are allowed now."""

    peer: Peer


@dataclass(frozen=True, slots=True)
class NeighborDown:
    """`peer` left the active view (disconnected, failed, or dropped for another)."""

    peer: Peer


@dataclass(frozen=True, slots=True)
class BroadcastReceived:
    """A broadcast from another node reached this one (once per message id)."""

    msg_id: int
    origin: str
    payload: bytes


@dataclass(frozen=True, slots=True)
class DirectReceived:
    """A neighbour sent this node a direct message."""

    src: Peer
    payload: bytes


Event: TypeAlias = NeighborUp | NeighborDown | BroadcastReceived | DirectReceived
"""What the overlay reports to its user."""
