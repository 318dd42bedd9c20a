"""HyParView membership: the state rules of one node, with no I/O.

Theory of operation
-------------------
Each node keeps two views of the cluster (Leitão, Pereira, Rodrigues, DSN 2007):

* the **active view** (size ``active_size``, 5 by default): symmetric neighbours to which the
  I/O adapter keeps a connection open. Broadcasts travel over these links only, and the
  connections double as the failure detector: when one breaks (or cannot be made) the adapter
  calls `on_unreachable` and the peer is dropped at once;
* the **passive view** (``passive_size``, 30): a sample of other nodes, refreshed by periodic
  shuffles, from which failed neighbours are replaced. It holds no connection and may hold
  dead nodes; they are weeded out when tried.

Rules, as in the paper's Algorithm 1:

* ``JOIN`` — the contact takes the joiner into its active view (dropping a random neighbour
  with a ``DISCONNECT`` when full) and sends a ``FORWARDJOIN(joiner, ARWL)`` to every other
  neighbour. The joiner itself put the contact in its active view when it sent the JOIN.
  Not in the paper: a contact whose passive view holds fewer than ``ka + kp`` entries (a
  small cluster, where walks end early and shuffles have little to tell) also answers with a
  ``SHUFFLEREPLY`` of all of its passive view and a sample of its active view, ``ka + kp``
  entries at most, which the joiner merges into its passive view. The paper's joiner knows
  nobody but its contact until the first shuffle; if a partition comes first and cuts it from
  every neighbour it has, no node of its own side may have heard of it, nor it of them, and
  it stays alone. Of two nodes joined through the same contact, the later one now knows the
  earlier from the start. A contact with a fuller passive view answers nothing: there the
  walks put the joiner in other nodes' passive views, as the paper has it.
* ``FORWARDJOIN`` — a random walk: at ``ttl == PRWL`` the joiner enters the passive view; at
  ``ttl == 0``, or at a node with a single neighbour, the walk ends and that node connects to
  the joiner with a high-priority ``NEIGHBOR``.
* ``NEIGHBOR(priority)`` — high priority is always accepted (a random neighbour is dropped if
  need be); low priority only while the active view has room. ``NEIGHBORREPLY`` tells which.
* ``DISCONNECT`` — the sender moves from the receiver's active view to its passive view.
* ``SHUFFLE`` — every ``shuffle_interval`` a node sends itself, ``ka`` active and ``kp``
  passive entries on a random walk of ``ARWL`` hops; the last node answers the origin
  directly with as many of its passive entries (``SHUFFLEREPLY``), and both merge what they
  got into their passive views, evicting first the entries they sent.

Repair. A node whose active view is not full (a neighbour failed, or dropped it) asks passive
peers, one request per free slot, with low priority. A node with at most one neighbour asks
with high priority, one request at a time: the paper does so only with no neighbour, but then
two nodes left with each other alone (a pair cut off from a part where every view is full)
could never come back. A rejected or unreachable candidate is passed over for the next; a
round stops after ``repair_rejections`` rejections or when the passive view is exhausted, and
the next round waits an exponential backoff. A node with
no neighbour and no candidate re-sends JOIN to a remembered contact at each backoff step:
this is the reconnection of an isolated node.
The paper replaces only failed neighbours; filling any free slot (as Partisan does with its
minimum active size) keeps the in-degree near the view size under join churn.

Probes. Failed peers are remembered apart (``lost_size``); every ``probe_interval`` (at a
phase of its own per node) one of them is asked again with a high-priority NEIGHBOR. After a
partition, both parts end with full active views of their own and nobody asks anyone; a
failed peer of the other part is the only trace of it, and the first probe that gets through
after the heal bridges them.

Every container that is ever iterated is a dict (insertion ordered), never a set, so that a
seeded `random.Random` replays a run exactly whatever ``PYTHONHASHSEED`` is.
"""

from __future__ import annotations

import random
import zlib
from typing import Protocol

from ._config import HyParViewConfig
from ._messages import (
    CoreMessage,
    Disconnect,
    Event,
    ForwardJoin,
    Join,
    Neighbor,
    NeighborDown,
    NeighborReply,
    NeighborUp,
    Peer,
    Shuffle,
    ShuffleReply,
)
from ._outputs import Outputs

__all__ = ["HyParView", "NeighborObserver"]


def _pick(rng: random.Random, items: list[Peer]) -> Peer:
    """A uniform choice from a non-empty list (`random.choice` costs 3x more)."""
    return items[int(rng.random() * len(items))]


def _sample(rng: random.Random, items: list[Peer], k: int) -> tuple[Peer, ...]:
    """Up to `k` distinct entries of `items`, uniformly (a partial Fisher-Yates shuffle)."""
    n = len(items)
    k = min(k, n)
    rand = rng.random
    for i in range(k):
        j = i + int(rand() * (n - i))
        items[i], items[j] = items[j], items[i]
    return tuple(items[:k])


class NeighborObserver(Protocol):
    """Told of active-view changes before they are queued as events (Plumtree is one)."""

    def neighbor_up(self, peer: Peer) -> None: ...

    def neighbor_down(self, peer: Peer) -> None: ...


class HyParView(Outputs):
    """The membership state machine of node `me`.

    Inputs: `join`, `add_contact`, `on_message`, `on_unreachable`, `tick`. Outputs: messages in
    `take_outbox()` as ``(destination, message)`` pairs and `NeighborUp`/`NeighborDown` in
    `take_events()`. `next_deadline()` tells when `tick` has work.
    """

    def __init__(
        self,
        me: Peer,
        config: HyParViewConfig,
        rng: random.Random,
        now: float = 0.0,
        *,
        observer: NeighborObserver | None = None,
        outbox: list[tuple[Peer, CoreMessage]] | None = None,
        events: list[Event] | None = None,
    ) -> None:
        self.me = me
        self.config = config
        self._rng = rng
        self.active: dict[Peer, None] = {}
        self.passive: dict[Peer, None] = {}
        self.contacts: dict[Peer, None] = {}
        self._pending: dict[Peer, float] = {}  # NEIGHBOR requests in flight -> deadline
        self._tried: dict[Peer, None] = {}  # candidates already asked in this repair round
        self._rejections = 0
        self._backoff = config.repair_backoff
        self._repair_at: float | None = None
        self._next_shuffle = now + rng.random() * config.shuffle_interval
        self._lost: dict[Peer, None] = {}  # failed peers to probe again, oldest first
        # Each node probes at its own phase, taken from its id rather than drawn from `rng`:
        # a run without failures then draws exactly what it drew before probes existed.
        phase = zlib.crc32(me.id.encode()) / 2**32
        self._next_probe = now + (0.5 + phase) * config.probe_interval
        self._last_sample: tuple[Peer, ...] = ()
        self._observer = observer
        super().__init__(outbox, events)

    # --- outputs (take_outbox, take_events: `Outputs`) -----------------------------------

    def next_deadline(self) -> float:
        """The earliest time at which `tick` has something to do."""
        deadline = self._next_shuffle
        if self._lost:
            deadline = min(deadline, self._next_probe)
        if self._repair_at is not None:
            deadline = min(deadline, self._repair_at)
        if self._pending:
            deadline = min(deadline, min(self._pending.values()))
        return deadline

    @property
    def pending(self) -> tuple[Peer, ...]:
        """Peers asked to become neighbours that have not answered yet."""
        return tuple(self._pending)

    # --- inputs --------------------------------------------------------------------------

    def join(self, contact: Peer, now: float) -> None:
        """Enter the overlay through `contact` (remembered for later rejoins)."""
        if contact == self.me:
            return
        self._remember(contact)
        if contact not in self.active:
            self._add_active(contact)
            self._outbox.append((contact, Join()))

    def add_contact(self, contact: Peer, now: float) -> None:
        """A peer found by discovery or a seed: a passive candidate, joined if isolated."""
        if contact == self.me:
            return
        self._remember(contact)
        if not self.active and not self._pending:
            self.join(contact, now)
        else:
            self._add_passive(contact)
            self._repair(now)

    def on_unreachable(self, peer: Peer, now: float) -> None:
        """The connection to `peer` broke or could not be made: it counts as failed."""
        self.passive.pop(peer, None)
        self._pending.pop(peer, None)
        if peer in self.active:
            self._remove_active(peer)
        self._lose(peer)
        self._repair(now)

    def on_message(self, src: Peer, msg: CoreMessage, now: float) -> None:
        """Apply a membership message received from `src` (others are ignored)."""
        if src == self.me:
            return
        match msg:
            case Shuffle():
                self._on_shuffle(src, msg, now)
            case ShuffleReply(nodes):
                self._merge_passive(nodes, self._last_sample)
            case ForwardJoin(joiner, ttl):
                self._on_forward_join(src, joiner, ttl, now)
            case Neighbor(high):
                self._on_neighbor(src, high)
            case NeighborReply(accepted):
                self._on_neighbor_reply(src, accepted, now)
            case Disconnect():
                self._on_disconnect(src, now)
            case Join():
                self._on_join(src)

    def tick(self, now: float) -> None:
        """Run what is due: the periodic shuffle, request timeouts, the repair backoff."""
        if now >= self._next_shuffle:
            interval = self.config.shuffle_interval
            while self._next_shuffle <= now:
                self._next_shuffle += interval
            self._shuffle()
        if now >= self._next_probe:
            self._next_probe += self.config.probe_interval
            if self._next_probe <= now:  # a tick long overdue: no burst of catch-up probes
                self._next_probe = now + self.config.probe_interval
            self._probe(now)
        expired = [p for p, deadline in self._pending.items() if deadline <= now]
        for peer in expired:  # no answer (a lost message, a dead peer): as unreachable
            del self._pending[peer]
            self.passive.pop(peer, None)
            self._lose(peer)
        if self._repair_at is not None and now >= self._repair_at:
            self._repair_at = None
            self._tried.clear()
            self._rejections = 0
            self._repair(now, rejoin=True)
        elif expired:
            self._repair(now)

    # --- message rules -------------------------------------------------------------------

    def _on_join(self, src: Peer) -> None:
        if src in self.active:
            return
        cfg, rng = self.config, self._rng
        want = cfg.shuffle_active + cfg.shuffle_passive
        known: tuple[Peer, ...] = ()
        if len(self.passive) < want:  # a small cluster: walks and shuffles tell little
            known = tuple(p for p in self.passive if p != src)
            known += _sample(rng, [p for p in self.active if p != src], want - len(known))
        self._add_active(src)
        for peer in self.active:
            if peer != src:
                self._outbox.append((peer, ForwardJoin(src, cfg.arwl)))
        if known:
            self._outbox.append((src, ShuffleReply(known)))

    def _on_disconnect(self, src: Peer, now: float) -> None:
        if src in self.active:
            self._remove_active(src)
            self._add_passive(src)
            self._repair(now)

    def _on_forward_join(self, src: Peer, joiner: Peer, ttl: int, now: float) -> None:
        if joiner == self.me:
            return
        if ttl > 0 and len(self.active) > 1:
            if ttl == self.config.prwl:
                self._add_passive(joiner)
            candidates = [p for p in self.active if p != src and p != joiner]
            if candidates:
                self._outbox.append((_pick(self._rng, candidates), ForwardJoin(joiner, ttl - 1)))
                return
        if joiner not in self.active and joiner not in self._pending:
            self._ask(joiner, high=True, now=now)

    def _on_neighbor(self, src: Peer, high: bool) -> None:
        accepted = src in self.active or high or len(self.active) < self.config.active_size
        if accepted:
            self._add_active(src)
        self._outbox.append((src, NeighborReply(accepted)))

    def _on_neighbor_reply(self, src: Peer, accepted: bool, now: float) -> None:
        asked = self._pending.pop(src, None) is not None
        if accepted:
            if asked:
                self._add_active(src)
            elif src not in self.active:
                # A yes to a request we gave up on, or to one overtaken by events (src asked
                # us at the same time, we took it, then dropped it): undo it on both ends.
                self._outbox.append((src, Disconnect()))
                self._add_passive(src)
        elif asked:
            self._rejections += 1
        self._repair(now)

    def _on_shuffle(self, src: Peer, msg: Shuffle, now: float) -> None:
        ttl = msg.ttl - 1
        if ttl > 0 and len(self.active) > 1:
            origin = msg.origin
            candidates = [p for p in self.active if p != src and p != origin]
            if candidates:
                forward = Shuffle(origin, msg.nodes, ttl)
                self._outbox.append((_pick(self._rng, candidates), forward))
                return
        if msg.origin == self.me:
            return
        passive = [p for p in self.passive if p != msg.origin]
        reply = _sample(self._rng, passive, len(msg.nodes))
        self._outbox.append((msg.origin, ShuffleReply(reply)))
        self._merge_passive(msg.nodes, reply)

    def _shuffle(self) -> None:
        if not self.active:
            return
        cfg, rng = self.config, self._rng
        active = list(self.active)
        sample = (
            self.me,
            *_sample(rng, active, cfg.shuffle_active),
            *_sample(rng, list(self.passive), cfg.shuffle_passive),
        )
        self._last_sample = sample
        self._outbox.append((_pick(rng, active), Shuffle(self.me, sample, cfg.arwl)))

    # --- views ---------------------------------------------------------------------------

    def _add_active(self, peer: Peer) -> None:
        if peer == self.me or peer in self.active:
            return
        if len(self.active) >= self.config.active_size:
            victim = _pick(self._rng, list(self.active))
            self._remove_active(victim)
            self._outbox.append((victim, Disconnect()))
            self._add_passive(victim)
        self.passive.pop(peer, None)
        self._pending.pop(peer, None)  # a reply to our own request must not re-add it later
        self._lost.pop(peer, None)
        self.active[peer] = None
        if self._observer is not None:
            self._observer.neighbor_up(peer)
        self._events.append(NeighborUp(peer))
        if len(self.active) >= self.config.active_size:
            self._settled()

    def _remove_active(self, peer: Peer) -> None:
        del self.active[peer]
        if self._observer is not None:
            self._observer.neighbor_down(peer)
        self._events.append(NeighborDown(peer))

    def _add_passive(self, peer: Peer) -> None:
        if peer == self.me or peer in self.active or peer in self.passive:
            return
        if len(self.passive) >= self.config.passive_size:
            del self.passive[_pick(self._rng, list(self.passive))]
        self.passive[peer] = None

    def _merge_passive(self, nodes: tuple[Peer, ...], evict_first: tuple[Peer, ...]) -> None:
        """Add shuffled `nodes`, making room by dropping the entries we sent away first."""
        size, me, active, passive = self.config.passive_size, self.me, self.active, self.passive
        spare = list(evict_first)
        for peer in nodes:
            if peer == me or peer in active or peer in passive:
                continue
            if len(passive) >= size:
                while spare and spare[-1] not in passive:
                    spare.pop()
                victim = spare.pop() if spare else _pick(self._rng, list(passive))
                del passive[victim]
            passive[peer] = None

    def _remember(self, contact: Peer) -> None:
        self.contacts.pop(contact, None)
        self.contacts[contact] = None
        if len(self.contacts) > self.config.max_contacts:
            del self.contacts[next(iter(self.contacts))]

    # --- repair --------------------------------------------------------------------------

    def _lose(self, peer: Peer) -> None:
        """Remember a failed peer for `_probe`, as the newest entry."""
        if self.config.lost_size == 0 or peer == self.me:
            return
        self._lost.pop(peer, None)
        self._lost[peer] = None
        if len(self._lost) > self.config.lost_size:
            del self._lost[next(iter(self._lost))]

    def _probe(self, now: float) -> None:
        """Ask one failed peer, with high priority, to be a neighbour again.

        Shuffles and repairs only ever reach peers of this node's own part of the overlay:
        after a partition both parts have dropped each other from every view, and once their
        active views are full nobody asks anyone. A failed peer on the other side is the only
        trace left of it. One that is still dead fails again and goes back to the end of the
        list; one that answers is taken (a random neighbour makes room at each end), and the
        two parts are one again.
        """
        if not self.active:
            return  # isolated: the repair rejoins through the contacts
        candidates = [p for p in self._lost if p not in self.active and p not in self._pending]
        if candidates:
            peer = _pick(self._rng, candidates)
            del self._lost[peer]
            self._ask(peer, high=True, now=now)

    def _ask(self, peer: Peer, *, high: bool, now: float) -> None:
        self._pending[peer] = now + self.config.neighbor_timeout
        self._outbox.append((peer, Neighbor(high)))

    def _settled(self) -> None:
        self._backoff = self.config.repair_backoff
        self._repair_at = None
        self._tried.clear()
        self._rejections = 0

    def _repair(self, now: float, *, rejoin: bool = False) -> None:
        """Ask passive peers to fill free active slots; back off when that runs dry."""
        size = self.config.active_size
        while len(self.active) + len(self._pending) < size:
            # A node with at most one neighbour is one failure from isolation: it asks with
            # high priority, one request at a time (the paper does so with none).
            fragile = len(self.active) <= 1
            if fragile and self._pending:
                return
            if self._rejections >= self.config.repair_rejections and not fragile:
                break
            candidates = [
                p for p in self.passive if p not in self._pending and p not in self._tried
            ]
            if not candidates:
                break
            peer = _pick(self._rng, candidates)
            self._tried[peer] = None
            self._ask(peer, high=fragile, now=now)
        else:
            return
        if self._pending:
            return  # answers still to come will call us again
        if rejoin and not self.active and self.contacts:
            self.join(_pick(self._rng, list(self.contacts)), now)
        elif rejoin and self.contacts:
            # The passive view ran dry but neighbours remain: a remembered contact may be on the
            # other side of a partition that has healed (both sides forgot each other).
            spare = [c for c in self.contacts if c not in self.active and c not in self._pending]
            if spare:
                self._ask(_pick(self._rng, spare), high=False, now=now)
        if self._repair_at is None:
            self._repair_at = now + self._backoff
            self._backoff = min(2 * self._backoff, self.config.repair_backoff_max)
