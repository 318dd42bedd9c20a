"""`Subscription`: an async iterator over a node's events, one queue per subscriber."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Callable
from typing import cast

from ._messages import DirectReceived, Event, Peer

__all__ = ["Subscription"]

_END = object()


class Subscription:
    """Events of one node from the moment of subscribing, in order.

    ``async for event in subscription`` ends when the node stops or `close()` is called.
    Events are never dropped. The node stops reading a peer's link while that peer has
    ``max_pending_direct`` direct messages unread here (`direct_pending`), so what one peer
    can queue is bounded; other events are few and not bounded.
    """

    def __init__(
        self,
        on_close: Callable[[Subscription], None],
        on_take: Callable[[], None] = lambda: None,
    ) -> None:
        self._queue: asyncio.Queue[Event | object] = asyncio.Queue()
        self._on_close: Callable[[Subscription], None] | None = on_close
        self._on_take = on_take
        self._direct: Counter[Peer] = Counter()

    def put(self, event: Event) -> None:
        """Queue an event (called by the node)."""
        if self._on_close is not None:
            self._queue.put_nowait(event)
            if isinstance(event, DirectReceived):
                self._direct[event.src] += 1

    def direct_pending(self, peer: Peer) -> int:
        """Direct messages from `peer` queued here and not read yet."""
        return self._direct[peer]

    def _taken(self, item: Event | object) -> None:
        if isinstance(item, DirectReceived):
            left = self._direct[item.src] - 1
            if left > 0:
                self._direct[item.src] = left
            else:
                del self._direct[item.src]
            self._on_take()

    def close(self) -> None:
        """Stop receiving; iteration ends after the events already queued."""
        if self._on_close is not None:
            on_close, self._on_close = self._on_close, None
            on_close(self)
            self._on_take()  # a reader held back for this subscriber may go on
            self._queue.put_nowait(_END)

    def pending(self) -> int:
        """Events queued and not read yet."""
        return self._queue.qsize()

    def __aiter__(self) -> Subscription:
        return self

    async def __anext__(self) -> Event:
        item = await self._queue.get()
        if item is _END:
            self._queue.put_nowait(_END)
            raise StopAsyncIteration
        self._taken(item)
        return cast(Event, item)

    def pop_nowait(self) -> Event | None:
        """The next queued event, or None when there is none (or the subscription ended)."""
        if self._queue.empty():
            return None
        item = self._queue.get_nowait()
        if item is _END:
            self._queue.put_nowait(_END)
            return None
        self._taken(item)
        return cast(Event, item)
