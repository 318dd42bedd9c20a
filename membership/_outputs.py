"""`Outputs`: what every pure core hands back after a step, messages and events.

`HyParView`, `Plumtree` and the `Overlay` that composes them each queue messages to send and
events for the user. The overlay passes its own two lists to the cores it holds, so one
`take_outbox` / `take_events` on it drains all three, in the order things happened.
"""

from __future__ import annotations

from ._messages import CoreMessage, Event, Peer

__all__ = ["Outputs"]


class Outputs:
    """A core's outbox and events; pass in lists to share them with an enclosing core."""

    def __init__(
        self,
        outbox: list[tuple[Peer, CoreMessage]] | None = None,
        events: list[Event] | None = None,
    ) -> None:
        self._outbox: list[tuple[Peer, CoreMessage]] = [] if outbox is None else outbox
        self._events: list[Event] = [] if events is None else events

    def take_outbox(self) -> list[tuple[Peer, CoreMessage]]:
        """Messages to send, as ``(destination, message)``, oldest first; the core forgets them."""
        out = self._outbox[:]
        self._outbox.clear()
        return out

    def take_events(self) -> list[Event]:
        """Events for the user (neighbours up and down, deliveries), oldest first."""
        out = self._events[:]
        self._events.clear()
        return out
