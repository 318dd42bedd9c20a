"""What a node keeps on disk besides its replica: module blobs and the compiled-module cache.

Layout under the data dir::

    blobs/<sha256>        module bytes, content-addressed (never rewritten once there)
    compiled/             wasmtime's serialized modules, owned by the runtime
    replica.log           the replicated store (``crdt.Replica``): app records, kv, members
    node_id               this node's id in the cluster, for life

Durability: every file is written to a temp file in its final directory, fsynced, renamed over
the target and then the directory is fsynced, so a crash leaves either the old file or the new
one, never a torn one. Leftover temp files (``.tmp-*``) from a crash are removed at open.

The methods are synchronous: each is a few small writes, and the daemon owns one process per
data dir, so there is no cross-process locking.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import re
import tempfile
from pathlib import Path

from .errors import NotFound

__all__ = ["Storage", "atomic_write"]

log = logging.getLogger(__name__)

_SHA256_RE = re.compile(r"[0-9a-f]{64}")
_TMP_PREFIX = ".tmp-"
# Bytes kept as themselves in app file names. Upper case is escaped too, so two names that
# differ only in case never share a file on a case-insensitive file system.
_SAFE_NAME_BYTES = frozenset(b"abcdefghijklmnopqrstuvwxyz0123456789_-")
_MAX_FILE_STEM = 200


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write(path: Path, data: bytes) -> None:
    """Replace ``path`` with ``data`` so that a crash leaves the old or the new content."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=_TMP_PREFIX)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    _fsync_dir(path.parent)


class Storage:
    """Blobs and the compiled-module cache under one data dir.

    Args:
        data_dir: created (with its subdirectories) if missing.
    """

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = Path(data_dir)
        self.blobs_dir = self.data_dir / "blobs"
        self._compiled_dir = self.data_dir / "compiled"
        for d in (self.data_dir, self.blobs_dir, self._compiled_dir):
            d.mkdir(parents=True, exist_ok=True)
        for tmp in self.blobs_dir.glob(_TMP_PREFIX + "*"):
            with contextlib.suppress(OSError):
                tmp.unlink()

    @property
    def compiled_dir(self) -> Path:
        """Directory of the runtime's compiled-module cache."""
        return self._compiled_dir

    # -- blobs --------------------------------------------------------------------------------

    def put_blob(self, data: bytes) -> str:
        """Store module bytes and return their sha256 (hex); a no-op if they are stored."""
        sha = hashlib.sha256(data).hexdigest()
        path = self.blobs_dir / sha
        if not path.exists():
            atomic_write(path, data)
        return sha

    def blob_path(self, sha256: str) -> Path | None:
        """Path of a stored blob, or None if ``sha256`` is not 64 lower-case hex or not stored."""
        if not _SHA256_RE.fullmatch(sha256):
            return None
        path = self.blobs_dir / sha256
        return path if path.is_file() else None

    def has_blob(self, sha256: str) -> bool:
        return self.blob_path(sha256) is not None

    def read_blob(self, sha256: str) -> bytes:
        """Bytes of a stored blob. Raises NotFound."""
        path = self.blob_path(sha256)
        if path is None:
            raise NotFound(f"no blob {sha256!r}")
        try:
            return path.read_bytes()
        except FileNotFoundError:
            raise NotFound(f"no blob {sha256!r}") from None
