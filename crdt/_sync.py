"""Anti-entropy: the pure state machine that keeps a replica in step with its peers.

It owns no socket, clock or randomness of its own: the membership layer (or a simulator)
tells it who the peers are (``add_peer`` / ``remove_peer``), feeds it what they sent
(``on_message(src, msg, now)``), calls ``tick(now)`` when ``next_deadline()`` passes and sends
what ``take_outbox()`` returns. Every random choice comes from the ``random.Random`` it is
given, so a seed replays a run.

Three mechanisms, all carrying deltas of the replica (see ``_state.py``):

- Anti-entropy rounds: every ``interval`` (with jitter), send our digest to ``fanout``
  random peers. A peer answers with what we lack, and with its own digest if we hold writes
  it lacks, which we answer in turn (push-pull). A new peer gets our digest at once, which is
  how a restarted node catches up. A cut delta (``more``) is continued by another request.
- Eager push: when the replica's own writes advance, send them to every peer at once
  (no sooner than ``push_interval`` after the previous push, to batch bursts).
- Forwarding: a push that changed something here is passed on to our other peers, so fresh
  writes flood the overlay in its diameter; a push that brings nothing new stops.

Costs: a round costs one digest per chosen peer (a few bytes per node that ever wrote) plus
deltas in proportion to what differs. Peers' bytes are checked by the replica; a malformed
one raises :class:`RemoteError` out of ``on_message`` with nothing changed and nothing sent.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Protocol

from ._messages import Message, Push, SyncRequest, SyncResponse
from ._types import DeltaChunk

__all__ = ["AntiEntropy", "SyncConfig", "SyncStore"]


class SyncStore(Protocol):
    """What anti-entropy needs of a replica (``Replica`` provides it)."""

    @property
    def node_id(self) -> str: ...
    def digest(self) -> bytes: ...
    def delta_chunk(self, digest: bytes) -> DeltaChunk: ...
    def merge(self, delta: bytes) -> bool: ...
    def local_version(self) -> int: ...
    def local_delta(self, since: int) -> tuple[bytes | None, int]: ...


@dataclass(frozen=True, slots=True)
class SyncConfig:
    """Timing and fan-out of anti-entropy."""

    interval: float = 1.0
    """Seconds between two anti-entropy rounds."""
    fanout: int = 1
    """Peers asked per round."""
    jitter: float = 0.2
    """Each interval is drawn in ``interval * (1 +- jitter)``, so nodes do not fall in step."""
    push: bool = True
    """Send fresh local writes to every peer at once."""
    push_interval: float = 0.0
    """Least time between two pushes; writes in between go in one push."""
    forward: bool = True
    """Pass on pushes that brought something new."""


class AntiEntropy:
    """The anti-entropy protocol of one replica.

    Call ``tick(now)`` once to start, then whenever ``next_deadline()`` passes and after
    local writes (so they are pushed).

    Args:
        store: the replica to keep in step.
        rng: all randomness (peer choice, jitter) comes from it.
        config: timing and fan-out.
    """

    def __init__(
        self, store: SyncStore, rng: random.Random, config: SyncConfig | None = None
    ) -> None:
        self._store = store
        self._rng = rng
        self._config = config or SyncConfig()
        self._peers: list[str] = []
        self._outbox: list[tuple[str, Message]] = []
        self._next_round: float | None = None
        self._pushed = store.local_version()
        self._last_push = float("-inf")

    @property
    def peers(self) -> tuple[str, ...]:
        return tuple(self._peers)

    def add_peer(self, peer: str, now: float) -> None:
        """A peer came up: ask it at once for what we lack (and it will ask us back)."""
        if peer == self._store.node_id or peer in self._peers:
            return
        self._peers.append(peer)
        self._send(peer, SyncRequest(self._store.digest()))

    def remove_peer(self, peer: str) -> None:
        """A peer went away; messages from it are still accepted."""
        if peer in self._peers:
            self._peers.remove(peer)

    def on_message(self, src: str, msg: Message, now: float) -> None:
        """Handle a message from ``src`` (validated by the replica: RemoteError if bad)."""
        store = self._store
        if isinstance(msg, SyncRequest):
            chunk = store.delta_chunk(msg.digest)
            if chunk.delta is not None or chunk.behind:
                digest = store.digest() if chunk.behind else None
                self._send(src, SyncResponse(chunk.delta, chunk.more, digest))
        elif isinstance(msg, SyncResponse):
            # Parse their digest before merging, so bad input changes nothing.
            answer = None if msg.digest is None else store.delta_chunk(msg.digest)
            if msg.delta is not None:
                store.merge(msg.delta)
            if answer is not None and answer.delta is not None:
                self._send(src, SyncResponse(answer.delta, answer.more))
            if msg.more:
                self._send(src, SyncRequest(store.digest()))
        elif isinstance(msg, Push):
            if store.merge(msg.delta) and self._config.forward:
                for peer in self._peers:
                    if peer != src:
                        self._send(peer, msg)
        else:
            raise TypeError(f"not a crdt message: {msg!r}")

    def tick(self, now: float) -> None:
        """Run what is due at ``now``: an anti-entropy round, a push."""
        config = self._config
        if self._next_round is None:
            self._next_round = now + self._rng.uniform(0, config.interval)
        if now >= self._next_round:
            self._round()
            spread = config.interval * config.jitter
            self._next_round = now + config.interval + self._rng.uniform(-spread, spread)
        if config.push and now >= self._last_push + config.push_interval:
            self._push(now)

    def _round(self) -> None:
        if not self._peers:
            return
        targets = self._rng.sample(self._peers, min(self._config.fanout, len(self._peers)))
        request = SyncRequest(self._store.digest())
        for peer in targets:
            self._send(peer, request)

    def _push(self, now: float) -> None:
        if self._store.local_version() <= self._pushed:
            return
        delta, self._pushed = self._store.local_delta(self._pushed)
        self._last_push = now
        if delta is not None:
            msg = Push(delta)
            for peer in self._peers:
                self._send(peer, msg)

    def next_deadline(self) -> float | None:
        """When ``tick`` should run next (``None`` before the first tick)."""
        deadline = self._next_round
        if self._config.push and self._store.local_version() > self._pushed:
            due = self._last_push + self._config.push_interval
            deadline = due if deadline is None else min(deadline, due)
        return deadline

    def _send(self, peer: str, msg: Message) -> None:
        self._outbox.append((peer, msg))

    def take_outbox(self) -> list[tuple[str, Message]]:
        """The messages to send, as ``(peer, message)``, oldest first; clears the outbox."""
        out, self._outbox = self._outbox, []
        return out
