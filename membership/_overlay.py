"""The overlay: HyParView, Plumtree and direct messages composed into one pure core.

This is the object the I/O adapter (`Node`) and the simulator both drive. It routes each
message to the layer that owns it by type. HyParView tells Plumtree of every neighbour change
as it happens (Plumtree is its `NeighborObserver`), so a broadcast sent in reaction to a
`NeighborUp` event already uses the new link. The layers append to one shared outbox and one
shared event list, in the order things happened.

`tick(now, membership=False)` and `next_deadline(membership=False)` run only the broadcast
layer's timers: the simulator uses them to broadcast "with no membership cycle in between",
as in the paper's experiment, while failures revealed by a send are still repaired at once.
"""

from __future__ import annotations

import random
from collections.abc import Callable

from ._config import HyParViewConfig, PlumtreeConfig
from ._errors import NotNeighborError
from ._hyparview import HyParView
from ._messages import (
    CoreMessage,
    Direct,
    DirectReceived,
    Disconnect,
    ForwardJoin,
    Gossip,
    Graft,
    IHave,
    Join,
    Neighbor,
    NeighborReply,
    Peer,
    Prune,
    Shuffle,
    ShuffleReply,
)
from ._outputs import Outputs
from ._plumtree import Plumtree

__all__ = ["Overlay"]

_MEMBERSHIP = (Join, ForwardJoin, Neighbor, NeighborReply, Disconnect, Shuffle, ShuffleReply)
_BROADCAST = (Gossip, IHave, Graft, Prune)


class Overlay(Outputs):
    """One node's protocol state: membership, broadcast and direct messages.

    Args:
        me: this node.
        rng: the only source of randomness (seed it to replay a run).
        now: the current time, in seconds on any monotonic clock.
        hyparview: membership parameters.
        plumtree: broadcast parameters.
    """

    def __init__(
        self,
        me: Peer,
        rng: random.Random,
        now: float = 0.0,
        *,
        hyparview: HyParViewConfig | None = None,
        plumtree: PlumtreeConfig | None = None,
    ) -> None:
        self.me = me
        super().__init__()
        self.broadcaster = Plumtree(
            me, plumtree or PlumtreeConfig(), rng, outbox=self._outbox, events=self._events
        )
        self.membership = HyParView(
            me,
            hyparview or HyParViewConfig(),
            rng,
            now,
            observer=self.broadcaster,
            outbox=self._outbox,
            events=self._events,
        )
        self._routes: dict[type, Callable[[Peer, CoreMessage, float], None]] = {
            **{t: self.membership.on_message for t in _MEMBERSHIP},
            **{t: self.broadcaster.on_message for t in _BROADCAST},
            Direct: self._on_direct,
        }

    # --- views ---------------------------------------------------------------------------

    def active_view(self) -> tuple[Peer, ...]:
        """Current neighbours (connected, symmetric), in the order they came."""
        return tuple(self.membership.active)

    def passive_view(self) -> tuple[Peer, ...]:
        """Known peers held in reserve."""
        return tuple(self.membership.passive)

    def is_neighbor(self, peer: Peer) -> bool:
        """Whether `peer` is in the active view."""
        return peer in self.membership.active

    # --- user actions --------------------------------------------------------------------

    def join(self, contact: Peer, now: float) -> None:
        """Join the overlay through `contact` (see `HyParView.join`)."""
        self.membership.join(contact, now)

    def add_contact(self, contact: Peer, now: float) -> None:
        """Offer a discovered peer (joined through if this node is isolated)."""
        self.membership.add_contact(contact, now)

    def broadcast(self, payload: bytes, now: float) -> int:
        """Send `payload` to every node of the overlay; returns the message id."""
        return self.broadcaster.broadcast(payload, now)

    def send_direct(self, peer: Peer, payload: bytes) -> None:
        """Queue `payload` for neighbour `peer` alone.

        Raises:
            NotNeighborError: `peer` is not in the active view.
        """
        if peer not in self.membership.active:
            raise NotNeighborError(f"{peer} is not a neighbour of {self.me}")
        self._outbox.append((peer, Direct(payload)))

    # --- protocol inputs -----------------------------------------------------------------

    def on_message(self, src: Peer, msg: CoreMessage, now: float) -> None:
        """Apply a message received from authenticated peer `src` (never from this node
        itself: a link to oneself is a misconfiguration, and no answer may go back to it)."""
        if src == self.me:
            return
        self._routes[type(msg)](src, msg, now)

    def _on_direct(self, src: Peer, msg: CoreMessage, now: float) -> None:
        assert isinstance(msg, Direct)
        self._events.append(DirectReceived(src, msg.payload))

    def on_unreachable(self, peer: Peer, now: float) -> None:
        """The connection to `peer` broke or could not be made."""
        self.membership.on_unreachable(peer, now)

    def tick(self, now: float, *, membership: bool = True) -> None:
        """Run due timers (only the broadcast layer's when `membership` is False)."""
        if membership:
            self.membership.tick(now)
        self.broadcaster.tick(now)

    def next_deadline(self, *, membership: bool = True) -> float | None:
        """When `tick` has work next (None: nothing scheduled)."""
        deadline = self.broadcaster.next_deadline()
        if membership:
            mine = self.membership.next_deadline()
            deadline = mine if deadline is None else min(deadline, mine)
        return deadline

    # --- outputs (take_outbox, take_events: `Outputs`) -----------------------------------
