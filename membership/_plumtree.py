"""Plumtree broadcast: epidemic broadcast trees over the active view, with no I/O.

Theory of operation
-------------------
Plumtree (Leitão, Pereira, Rodrigues, SRDS 2007) splits a node's neighbours into **eager**
peers, which get every payload at once (``GOSSIP``), and **lazy** peers, which only get its id
(``IHAVE``). Every new neighbour starts eager, so the first broadcast floods the active view;
a node that receives a payload it already has answers ``PRUNE`` and both ends make that link
lazy. What remains eager is a spanning tree: later broadcasts cost one payload per node, and
the lazy links carry only ids.

When a tree link breaks, the ids still arrive over lazy links. A node that hears ``IHAVE`` for
a message it lacks starts a timer (``graft_timeout``); if the payload has not come when it
fires, the node sends ``GRAFT`` to the first announcer, which sends the payload and puts the
link back on the tree (eager at both ends). Further announcers are grafted every
``graft_retry`` until the payload arrives. This is how the tree heals after failures, with no
help from the membership layer beyond `neighbor_up` and `neighbor_down`.

Bounds: message ids seen (``seen_size``), payloads kept for grafts (``cache_size`` and
``cache_ttl``) and ids announced but missing (``missing_size``) are all capped, oldest first.
A payload is delivered at most once per id while the id is remembered.

Not done: the paper's optional tree optimisation (swapping an eager link for a lazy one whose
announcements arrive with fewer hops); the tree only changes on duplicates and failures.
"""

from __future__ import annotations

import heapq
import random

from ._config import PlumtreeConfig
from ._messages import BroadcastReceived, CoreMessage, Event, Gossip, Graft, IHave, Peer, Prune
from ._outputs import Outputs

__all__ = ["Plumtree"]


class Plumtree(Outputs):
    """The broadcast state machine of node `me`.

    Inputs: `broadcast`, `on_message`, `neighbor_up`, `neighbor_down`, `tick`. Outputs:
    `take_outbox()` and `BroadcastReceived` events in `take_events()`.
    """

    def __init__(
        self,
        me: Peer,
        config: PlumtreeConfig,
        rng: random.Random,
        *,
        outbox: list[tuple[Peer, CoreMessage]] | None = None,
        events: list[Event] | None = None,
    ) -> None:
        self.me = me
        self.config = config
        self._rng = rng
        self.eager: dict[Peer, None] = {}
        self.lazy: dict[Peer, None] = {}
        self._seen: dict[int, None] = {}
        self._cache: dict[int, tuple[Gossip, float]] = {}  # id -> (message, expiry)
        self._missing: dict[int, list[tuple[Peer, int]]] = {}  # id -> announcers
        self._timers: list[tuple[float, int]] = []  # (deadline, id), stale entries skipped
        super().__init__(outbox, events)

    # --- outputs (take_outbox, take_events: `Outputs`) -----------------------------------

    def next_deadline(self) -> float | None:
        """When a graft timer fires, or None when no message is missing."""
        while self._timers and self._timers[0][1] not in self._missing:
            heapq.heappop(self._timers)
        return self._timers[0][0] if self._timers else None

    # --- neighbours ----------------------------------------------------------------------

    def neighbor_up(self, peer: Peer) -> None:
        """A new active neighbour: eager until a duplicate says otherwise."""
        self.lazy.pop(peer, None)
        self.eager[peer] = None

    def neighbor_down(self, peer: Peer) -> None:
        """The neighbour left: it is neither pushed to nor grafted any more."""
        self.eager.pop(peer, None)
        self.lazy.pop(peer, None)

    # --- inputs --------------------------------------------------------------------------

    def broadcast(self, payload: bytes, now: float) -> int:
        """Send `payload` to every node; returns its message id (not delivered locally)."""
        msg_id = self._rng.getrandbits(64)
        while msg_id in self._seen:
            msg_id = self._rng.getrandbits(64)
        self._accept(Gossip(msg_id, 0, self.me.id, payload), None, now)
        return msg_id

    def on_message(self, src: Peer, msg: CoreMessage, now: float) -> None:
        """Apply a broadcast message from `src` (others, and any from this node, are ignored)."""
        if src == self.me:
            return
        match msg:
            case Gossip():
                self._on_gossip(src, msg, now)
            case IHave(announcements):
                self._on_ihave(src, announcements, now)
            case Graft(msg_id, _):
                if src in self.lazy or src in self.eager:
                    self.lazy.pop(src, None)
                    self.eager[src] = None
                cached = self._cache.get(msg_id)
                if cached is not None and cached[1] > now:
                    self._outbox.append((src, cached[0]))
            case Prune():
                if src in self.eager:
                    del self.eager[src]
                    self.lazy[src] = None

    def tick(self, now: float) -> None:
        """Graft announcers of messages that are overdue."""
        timers = self._timers
        while timers and timers[0][0] <= now:
            _, msg_id = heapq.heappop(timers)
            announcers = self._missing.get(msg_id)
            if announcers is None:
                continue
            while announcers and not self._is_neighbor(announcers[0][0]):
                announcers.pop(0)
            if not announcers:
                del self._missing[msg_id]
                continue
            peer, rnd = announcers.pop(0)
            self.lazy.pop(peer, None)
            self.eager[peer] = None
            self._outbox.append((peer, Graft(msg_id, rnd)))
            heapq.heappush(timers, (now + self.config.graft_retry, msg_id))

    # --- rules ---------------------------------------------------------------------------

    def _is_neighbor(self, peer: Peer) -> bool:
        return peer in self.eager or peer in self.lazy

    def _on_gossip(self, src: Peer, msg: Gossip, now: float) -> None:
        if msg.msg_id in self._seen:
            if src in self.eager:
                del self.eager[src]
                self.lazy[src] = None
                self._outbox.append((src, Prune()))
            return
        self._events.append(BroadcastReceived(msg.msg_id, msg.origin, msg.payload))
        if src in self.lazy:
            del self.lazy[src]
            self.eager[src] = None
        self._accept(msg, src, now)

    def _accept(self, msg: Gossip, src: Peer | None, now: float) -> None:
        """Remember, cache and push on a message seen for the first time."""
        cfg = self.config
        msg_id = msg.msg_id
        self._seen[msg_id] = None
        if len(self._seen) > cfg.seen_size:
            del self._seen[next(iter(self._seen))]
        self._missing.pop(msg_id, None)
        forward = Gossip(msg_id, msg.round + 1, msg.origin, msg.payload) if src else msg
        self._cache[msg_id] = (forward, now + cfg.cache_ttl)
        while len(self._cache) > cfg.cache_size or (
            self._cache and next(iter(self._cache.values()))[1] <= now
        ):
            del self._cache[next(iter(self._cache))]
        out = self._outbox
        for peer in self.eager:
            if peer != src:
                out.append((peer, forward))
        if self.lazy:
            announce = IHave(((msg_id, forward.round),))
            for peer in self.lazy:
                if peer != src:
                    out.append((peer, announce))

    def _on_ihave(self, src: Peer, announcements: tuple[tuple[int, int], ...], now: float) -> None:
        if not self._is_neighbor(src):
            return
        for msg_id, rnd in announcements:
            if msg_id in self._seen:
                continue
            announcers = self._missing.get(msg_id)
            if announcers is None:
                if len(self._missing) >= self.config.missing_size:
                    del self._missing[next(iter(self._missing))]
                self._missing[msg_id] = [(src, rnd)]
                heapq.heappush(self._timers, (now + self.config.graft_timeout, msg_id))
            else:
                announcers.append((src, rnd))
