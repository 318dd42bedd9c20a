"""The replicated types as values with ``merge``, and the delta that carries them.

Both merges are joins of a total order, so they are commutative, associative and idempotent
whatever the inputs, even inputs a correct system never produces (two different writes
stamped with the same timestamp by the same node, after a node lost its disk and kept its
id): every replica still picks the same winner.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import NamedTuple

__all__ = ["CtrEntry", "Delta", "DeltaChunk", "GCounter", "LWWRegister", "Slot", "merge_slot"]


class LWWRegister(NamedTuple):
    """A last-writer-wins register: a value stamped with a hybrid logical clock and its writer.

    ``value`` is ``None`` for a tombstone (a delete), which wins and loses like any write.
    """

    ts: int
    node: str
    value: bytes | None

    def wins_over(self, other: LWWRegister) -> bool:
        """Whether this write beats ``other``: greater (ts, node); exact ties by content."""
        if self.ts != other.ts:
            return self.ts > other.ts
        if self.node != other.node:
            return self.node > other.node
        # Only a node that reused its id after losing its state gets here; any fixed order
        # on the content keeps the merge a join.
        if self.value is None or other.value is None:
            return other.value is None and self.value is not None
        return self.value > other.value

    def merge(self, other: LWWRegister) -> LWWRegister:
        """The winner of the two."""
        return other if other.wins_over(self) else self


Slot = tuple[int, int]
"""One node's share of a counter: (count, ts of that node's last increment)."""


def merge_slot(a: Slot, b: Slot) -> Slot:
    """Join of two versions of one node's slot: the higher count (then the later stamp)."""
    return a if a >= b else b


@dataclass(frozen=True)
class GCounter:
    """A grow-only counter: one slot per node, merged slot by slot by max; value = sum."""

    slots: Mapping[str, Slot] = field(default_factory=dict)

    @property
    def value(self) -> int:
        return sum(count for count, _ in self.slots.values())

    def merge(self, other: GCounter) -> GCounter:
        merged = dict(self.slots)
        for node, slot in other.slots.items():
            mine = merged.get(node)
            merged[node] = slot if mine is None else merge_slot(mine, slot)
        return GCounter(merged)


class CtrEntry(NamedTuple):
    """One counter slot in a delta."""

    key: str
    node: str
    total: int
    """The node's count (its slot), not an increment."""
    ts: int


@dataclass(frozen=True, slots=True)
class Delta:
    """A batch of state: what one replica sends another, and one record of the log.

    ``claims`` holds ``(node, lo, hi)``: the sender holds, within this delta or already known
    to the receiver, every live entry stamped by ``node`` with ``lo < ts <= hi``. A receiver
    whose version vector has ``node`` at ``lo`` or more may raise it to ``hi`` (see
    ``_state.py``). ``clock`` is the sender's hybrid clock, for the receiver's clock.
    """

    clock: int = 0
    claims: tuple[tuple[str, int, int], ...] = ()
    regs: tuple[tuple[str, LWWRegister], ...] = ()
    ctrs: tuple[CtrEntry, ...] = ()

    def is_empty(self) -> bool:
        return not (self.claims or self.regs or self.ctrs)


class DeltaChunk(NamedTuple):
    """A replica's answer to a peer's digest."""

    delta: bytes | None
    """What the peer lacks (``None``: nothing)."""
    more: bool
    """The delta was cut at the chunk size: ask again for the rest."""
    behind: bool
    """The peer holds writes this replica lacks: send it our digest."""
