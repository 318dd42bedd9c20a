"""Test doubles for users of crdt: a settable clock and a simulated network for
``AntiEntropy``, as trio ships its testing kit.

The network is the only fake: it controls delivery order, duplication and loss from a seeded
``random.Random``, and carries every message as bytes through the real wire codec. The
project's own tests (``tests/crdt/``) run on it.

    >>> net = SimNet(random.Random(1), drop=0.2)
    >>> a, b = net.add("a"), net.add("b")
    >>> net.connect("a", "b")
    >>> _ = a.set("k", b"v")
    >>> for _ in range(20):
    ...     net.tick(1.0)
    ...     _ = net.deliver()
    >>> net.converged()
    True
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from ._replica import Replica
from ._sync import AntiEntropy, SyncConfig
from ._types import DEFAULT_LIMITS, Limits
from ._wire import decode_message, encode_message

__all__ = ["FakeClock", "SimNet", "canonical", "exchange", "full_exchange"]


@dataclass
class FakeClock:
    """Wall time that moves only when a test says so."""

    now: float = 1_700_000_000.0

    def __call__(self) -> float:
        return self.now


def canonical(replica: Replica) -> Any:
    """The data of a replica in a fixed order: equal iff converged."""
    return replica._state.canonical()


def exchange(a: Replica, b: Replica) -> None:
    """A full two-way sync between two replicas, chunk by chunk."""
    for src, dst in ((a, b), (b, a)):
        while True:
            chunk = src.delta_chunk(dst.digest())
            if chunk.delta is not None:
                dst.merge(chunk.delta)
            if not chunk.more:
                break


def full_exchange(replicas: Sequence[Replica]) -> None:
    """Every pair syncs, twice over, so everything reaches everyone."""
    for _ in range(2):
        for i, a in enumerate(replicas):
            for b in replicas[i + 1 :]:
                exchange(a, b)


@dataclass
class SimNet:
    """Nodes (replica + anti-entropy core) on a lossy, duplicating, reordering network."""

    rng: random.Random
    drop: float = 0.0
    dup: float = 0.0
    reorder: bool = True
    nodes: dict[str, tuple[Replica, AntiEntropy]] = field(default_factory=dict)
    queue: list[tuple[str, str, bytes]] = field(default_factory=list)
    now: float = 0.0
    sent: int = 0
    sent_bytes: int = 0

    def add(
        self, name: str, config: SyncConfig | None = None, limits: Limits = DEFAULT_LIMITS
    ) -> Replica:
        replica = Replica(name, clock=lambda: 1_700_000_000.0 + self.now, limits=limits)
        core = AntiEntropy(replica, random.Random(self.rng.random()), config)
        self.nodes[name] = (replica, core)
        return replica

    def connect(self, a: str, b: str) -> None:
        self.nodes[a][1].add_peer(b, self.now)
        self.nodes[b][1].add_peer(a, self.now)
        self.collect([a, b])

    def collect(self, names: Iterable[str]) -> None:
        for name in names:
            for dst, msg in self.nodes[name][1].take_outbox():
                data = encode_message(msg)
                self.sent += 1
                self.sent_bytes += len(data)
                if self.rng.random() < self.drop:
                    continue
                copies = 2 if self.rng.random() < self.dup else 1
                self.queue += [(dst, name, data)] * copies

    def deliver(self, limit: int | None = None) -> int:
        """Deliver queued messages (and what they cause) until quiet or ``limit``."""
        n = 0
        while self.queue and (limit is None or n < limit):
            i = self.rng.randrange(len(self.queue)) if self.reorder else 0
            dst, src, data = self.queue.pop(i)
            self.nodes[dst][1].on_message(src, decode_message(data), self.now)
            self.collect([dst])
            n += 1
        return n

    def tick(self, dt: float) -> None:
        self.now += dt
        for name, (_, core) in self.nodes.items():
            core.tick(self.now)
            self.collect([name])

    def replicas(self) -> list[Replica]:
        return [replica for replica, _ in self.nodes.values()]

    def converged(self) -> bool:
        states = [canonical(r) for r in self.replicas()]
        return all(s == states[0] for s in states)
