"""The package's exceptions: one root, with local misuse and remote (peer) input apart.

A caller that only wants to know "the store refused" catches :class:`Error`. The I/O adapter
that feeds peers' bytes into a replica catches :class:`RemoteError` (log it, maybe drop the
peer); :class:`LocalError` is a bug or a bad argument on this side; :class:`StorageError`
means the on-disk state cannot be used as it is.
"""

from __future__ import annotations

__all__ = ["ClosedError", "DamagedLogError", "Error", "LocalError", "RemoteError", "StorageError"]


class Error(Exception):
    """Root of every error raised by :mod:`crdt`."""


class LocalError(Error, ValueError):
    """A local call broke a rule: a key or value too large, a negative increment, ...

    Also a :class:`ValueError`, so callers of the former local store keep working.
    """


class ClosedError(LocalError):
    """The replica was closed, or its log failed and it refuses further use."""


class RemoteError(Error):
    """Bytes from a peer (a digest, a delta, a message) are malformed or exceed a limit.

    Whatever raised it left the replica's state unchanged.
    """


class StorageError(Error):
    """The store's file cannot be used: another node's file, a bad header, a failed write."""


class DamagedLogError(StorageError):
    """The log is damaged before its last record, where no crash can have torn it.

    Records the node acknowledged follow the damage, so nothing is cut: the file is left as
    it is, for the operator to restore from a backup or to set aside.
    """
