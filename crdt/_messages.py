"""The anti-entropy protocol's messages (their bytes are in ``_wire.py``).

A round: A sends ``SyncRequest(digest_A)``; B answers ``SyncResponse(delta, more, digest_B)``
with what A lacks, and its own digest if A holds writes B lacks; A then answers that digest
with a ``SyncResponse`` carrying no digest. ``more`` says the delta was cut at the chunk size:
the receiver sends a new ``SyncRequest`` to continue. ``Push`` carries fresh writes eagerly.
Digests and deltas stay opaque bytes here: the replica parses (and bounds) them.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Message", "Push", "SyncRequest", "SyncResponse"]


@dataclass(frozen=True, slots=True)
class SyncRequest:
    """Here is what I hold (a digest): send me what I lack."""

    digest: bytes


@dataclass(frozen=True, slots=True)
class SyncResponse:
    """An answer to a digest."""

    delta: bytes | None
    """What the asker lacks (``None``: nothing)."""
    more: bool = False
    """The delta was cut short: send another ``SyncRequest`` for the rest."""
    digest: bytes | None = None
    """The responder's digest, when the asker holds writes the responder lacks."""


@dataclass(frozen=True, slots=True)
class Push:
    """Fresh writes, sent to every peer without being asked."""

    delta: bytes


Message = SyncRequest | SyncResponse | Push
