"""Size limits: what a replica accepts from peers and from local callers.

Peers' input is untrusted, so every count and length read off the wire is checked against
these before anything is allocated for it. Local writes obey the same limits, so anything a
replica holds can always be sent to a peer that uses the defaults.
"""

from __future__ import annotations

from dataclasses import dataclass

from ._errors import LocalError

__all__ = ["DEFAULT_LIMITS", "MAX_INT", "Limits"]

MAX_INT = (1 << 63) - 1
"""Largest timestamp or per-node count: they are stored as signed 64-bit integers."""


@dataclass(frozen=True, slots=True)
class Limits:
    """Bounds on keys, values, node ids and the messages that carry them."""

    max_key_bytes: int = 1024
    """Longest key, in UTF-8 bytes."""
    max_value_bytes: int = 1 << 20
    """Largest register value."""
    max_node_id_bytes: int = 128
    """Longest node id, in UTF-8 bytes."""
    max_nodes: int = 16384
    """Most distinct node ids in one digest or delta."""
    max_digest_bytes: int = 2 << 20
    """Largest digest accepted."""
    max_delta_bytes: int = 8 << 20
    """Largest delta accepted by ``merge``."""
    chunk_bytes: int = 1 << 20
    """Target size of the deltas this replica produces (one entry may exceed it)."""

    def __post_init__(self) -> None:
        # A delta we make holds up to a chunk, plus the entry that crossed it, plus a table
        # of node ids and one claim per node: a peer with these limits must accept it.
        entry = self.max_key_bytes + self.max_value_bytes + 64
        nodes = self.max_nodes * (self.max_node_id_bytes + 2 + 18)
        if self.max_delta_bytes < self.chunk_bytes + entry + nodes:
            raise ValueError("max_delta_bytes must hold a chunk, one largest entry and the nodes")

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
