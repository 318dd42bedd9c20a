"""The replicated types as values with ``merge``, the delta that carries them, and limits.

Both merges are joins of a total order, so they are commutative, associative and idempotent
whatever the inputs, even inputs a correct system never produces (two different writes
stamped with the same timestamp by the same node, after a node lost its disk and kept its
id): every replica still picks the same winner.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import NamedTuple

from ._errors import LocalError

__all__ = [
    "DEFAULT_LIMITS",
    "MAX_INT",
    "CtrEntry",
    "Delta",
    "DeltaChunk",
    "GCounter",
    "LWWRegister",
    "Limits",
    "Slot",
    "merge_slot",
]


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


# -- limits ------------------------------------------------------------------------------
# Peers' input is untrusted: every count and length read off the wire is checked against a
# Limits before anything is allocated for it. Local writes obey the same limits, so anything a
# replica holds can be sent to a peer that uses the defaults.

MAX_INT = (1 << 63) - 1
"""Largest timestamp or per-node count: they are stored as signed 64-bit integers."""


@dataclass(frozen=True, slots=True)
class Limits:
    """Bounds on keys, values, node ids and the messages that carry them."""

    max_key_bytes: int = 1024
    """Longest key, in UTF-8 bytes."""
    max_value_bytes: int = 256 << 10
    """Largest register value."""
    max_node_id_bytes: int = 128
    """Longest node id, in UTF-8 bytes."""
    max_nodes: int = 4096
    """Most distinct node ids in one digest or delta: the most nodes that ever wrote."""
    max_digest_bytes: int = 1 << 20
    """Largest digest accepted."""
    max_delta_bytes: int = 4 << 20
    """Largest delta accepted by ``merge``."""
    chunk_bytes: int = 256 << 10
    """Target size of the deltas this replica produces (one entry may exceed it).

    With the defaults, what a replica sends stays under 600 KiB for clusters of up to a
    thousand writers: a delta of at most a chunk and one largest entry, plus about 40 bytes
    per node, and a digest of about 20 bytes per node. It fits in a 1 MiB frame.
    """

    def __post_init__(self) -> None:
        # A delta we make holds up to a chunk, plus the entry that crossed it, plus a table
        # of node ids and one claim per node: a peer with these limits must accept it.
        # The same for a digest listing max_nodes nodes.
        entry = self.max_key_bytes + self.max_value_bytes + 64
        nodes = self.max_nodes * (self.max_node_id_bytes + 2 + 18)
        if self.max_delta_bytes < self.chunk_bytes + entry + nodes:
            raise ValueError("max_delta_bytes must hold a chunk, one largest entry and the nodes")
        if self.max_digest_bytes < 8 + self.max_nodes * (self.max_node_id_bytes + 2 + 8):
            raise ValueError("max_digest_bytes must hold a digest of max_nodes nodes")

    def check_key(self, key: str) -> bytes:
        """The UTF-8 form of a local key, or :class:`LocalError`."""
        if not isinstance(key, str):
            raise LocalError(f"keys are str, not {type(key).__name__}")
        try:
            raw = key.encode("utf-8")
        except UnicodeEncodeError:
            raise LocalError("key is not valid Unicode (lone surrogate)") from None
        if len(raw) > self.max_key_bytes:
            raise LocalError(f"key is {len(raw)} bytes; the limit is {self.max_key_bytes}")
        return raw

    def check_value(self, value: bytes) -> bytes:
        """``value`` as immutable bytes, or :class:`LocalError`."""
        if not isinstance(value, bytes | bytearray | memoryview):
            raise LocalError(f"values are bytes, not {type(value).__name__}")
        value = bytes(value)
        if len(value) > self.max_value_bytes:
            raise LocalError(f"value is {len(value)} bytes; the limit is {self.max_value_bytes}")
        return value

    def check_node_id(self, node_id: str) -> None:
        """Raise :class:`LocalError` unless ``node_id`` is a usable node id."""
        if not isinstance(node_id, str) or not node_id:
            raise LocalError("a node id is a non-empty str")
        try:
            raw = node_id.encode("utf-8")
        except UnicodeEncodeError:
            raise LocalError("node id is not valid Unicode") from None
        if len(raw) > self.max_node_id_bytes:
            raise LocalError(f"node id is longer than {self.max_node_id_bytes} bytes")


DEFAULT_LIMITS = Limits()
