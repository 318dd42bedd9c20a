"""Replicated store: LWW registers, grow-only counters, blocking monotonic reads, delta sync.

``Replica`` is one node's copy (in memory, or durable in an append-only log);
``AntiEntropy`` is the pure protocol core that keeps replicas in step over whatever transport
drives it, and ``SyncNode`` its asyncio adapter (give it a ``send`` and the peers). See
``docs/crdt.md`` for the design and its measurements.

    >>> r = Replica("node-a")
    >>> r.set("app/hello", b"{}")
    >>> r.incr("app/hello/version")
    1
"""

from __future__ import annotations

from ._asyncio import SyncNode
from ._errors import ClosedError, DamagedLogError, Error, LocalError, RemoteError, StorageError
from ._messages import Message, Push, SyncRequest, SyncResponse
from ._replica import Changes, Replica
from ._sync import AntiEntropy, SyncConfig, SyncStore
from ._types import DEFAULT_LIMITS, DeltaChunk, GCounter, Limits, LWWRegister
from ._wire import decode_message, encode_message, max_message_bytes

__all__ = [
    "DEFAULT_LIMITS",
    "AntiEntropy",
    "Changes",
    "ClosedError",
    "DamagedLogError",
    "DeltaChunk",
    "Error",
    "GCounter",
    "LWWRegister",
    "Limits",
    "LocalError",
    "Message",
    "Push",
    "RemoteError",
    "Replica",
    "StorageError",
    "SyncConfig",
    "SyncNode",
    "SyncRequest",
    "SyncResponse",
    "SyncStore",
    "decode_message",
    "encode_message",
    "max_message_bytes",
]
