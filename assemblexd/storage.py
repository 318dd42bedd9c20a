"""What a node keeps on disk besides its replica: module blobs and the compiled-module cache.

Layout under the data dir::

    blobs/<sha256>        module bytes, content-addressed (never rewritten once there)
    compiled/<sha256>-wasmtime<version>.cwasm
                          wasmtime's serialized modules, one per module and wasmtime version
    replica.log           the replicated store (``crdt.Replica``): app records, kv, members
    node_id               this node's id in the cluster, for life

Durability: every file is written to a temp file in its final directory, fsynced, renamed over
the target and then the directory is fsynced, so a crash leaves either the old file or the new
one, never a torn one. Leftover temp files (``.tmp-*``) from a crash are removed at open.

The methods are synchronous: each is a few small writes, and the daemon owns one process per
data dir, so there is no cross-process locking.

Garbage collection (:meth:`Storage.collect`): a blob no record references is removed once its
file is older than a grace period, and with it its compiled modules; compiled modules of
another wasmtime version go at once. The file's mtime is the blob's "last used" time:
:meth:`Storage.put_blob` and :meth:`Storage.load_blob` refresh it, and that refresh and the
collector's check-then-unlink of one blob hold the same lock. So a blob that is stored or
loaded while a collection runs is either refreshed before the collector looks at it (young:
kept) or removed before it is used (``put_blob`` writes it again; ``load_blob`` raises
NotFound and the node fetches it from a peer, as it does for a blob whose bytes no longer
match their hash), never removed within the grace period after a
use that succeeded. The grace period covers a deploy or fetch between storing its blob and
writing (or receiving) the record that names it; a grace of 0 gives up that cover (tests).
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import logging
import os
import re
import tempfile
import threading
from collections.abc import Collection, Iterator
from pathlib import Path

from .errors import NotFound

__all__ = ["Collected", "Storage", "atomic_write"]

log = logging.getLogger(__name__)

_SHA256_RE = re.compile(r"[0-9a-f]{64}")
_COMPILED_RE = re.compile(r"([0-9a-f]{64})-wasmtime(.+)\.cwasm")
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


@dataclasses.dataclass(frozen=True)
class Collected:
    """What one garbage collection removed, and what it left on disk."""

    blobs_removed: int = 0
    blob_bytes_removed: int = 0
    compiled_removed: int = 0
    compiled_bytes_removed: int = 0
    blob_bytes: int = 0
    """Bytes of the blobs left."""
    compiled_bytes: int = 0
    """Bytes of the compiled modules left."""

    @property
    def removed(self) -> bool:
        return bool(self.blobs_removed or self.compiled_removed)


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
        # Held by a blob's refresh (put_blob, load_blob) and by the collector's check and
        # unlink of one blob, never across more than one blob: see the module docstring.
        self._lock = threading.Lock()

    @property
    def compiled_dir(self) -> Path:
        """Directory of the runtime's compiled-module cache."""
        return self._compiled_dir

    def compiled_path(self, sha256: str, runtime: str) -> Path:
        """Where the module ``sha256`` compiled by wasmtime ``runtime`` is cached."""
        return self._compiled_dir / f"{sha256}-wasmtime{runtime}.cwasm"

    # -- blobs --------------------------------------------------------------------------------

    def put_blob(self, data: bytes) -> str:
        """Store module bytes and return their sha256 (hex).

        Bytes already stored are not written again, but their file's mtime is refreshed: a
        redeploy of old bytes makes the blob young for the collector.
        """
        sha = hashlib.sha256(data).hexdigest()
        path = self.blobs_dir / sha
        with self._lock:
            try:
                os.utime(path)
            except FileNotFoundError:
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

    def load_blob(self, sha256: str) -> bytes:
        """Bytes of a stored blob about to be run: as ``read_blob``, and the blob's mtime is
        refreshed first, so the collector keeps it for another grace period.

        The bytes are checked against their hash: a blob changed on disk (a failing disk, a
        stray write, tampering) is removed and NotFound raised, so that the node fetches the
        module again from a peer instead of running other bytes than the record names.

        Raises:
            NotFound: not stored, or removed because its bytes did not match.
        """
        path = self.blob_path(sha256)
        if path is None:
            raise NotFound(f"no blob {sha256!r}")
        with self._lock:
            try:
                os.utime(path)
            except FileNotFoundError:
                raise NotFound(f"no blob {sha256!r}") from None
        data = self.read_blob(sha256)
        if hashlib.sha256(data).hexdigest() != sha256:
            log.warning(
                "blob %s does not match its sha256 (changed on disk): removed, to be fetched again",
                sha256,
            )
            with self._lock, contextlib.suppress(FileNotFoundError):
                path.unlink()
            raise NotFound(f"blob {sha256!r} was damaged on disk and removed")
        return data

    def read_blob(self, sha256: str) -> bytes:
        """Bytes of a stored blob. Raises NotFound."""
        path = self.blob_path(sha256)
        if path is None:
            raise NotFound(f"no blob {sha256!r}")
        try:
            return path.read_bytes()
        except FileNotFoundError:
            raise NotFound(f"no blob {sha256!r}") from None

    # -- garbage collection -------------------------------------------------------------------

    def collect(self, referenced: Collection[str], *, older_than: float, runtime: str) -> Collected:
        """Remove the blobs nobody needs and the compiled modules nobody can use.

        Args:
            referenced: sha256 of every module still needed; these are never removed.
            older_than: Unix time; an unreferenced blob goes only if its mtime is before it.
            runtime: the running wasmtime version; compiled modules of another are removed.

        A compiled module of this version goes when its blob is neither referenced nor on
        disk any more and the file too is older than ``older_than`` (a deploy compiles before
        it stores the blob). Temp files and names this layout does not make are left alone.
        Raises OSError if a directory cannot be listed; a file that cannot be removed is
        logged and kept.
        """
        blobs_removed = blob_bytes_removed = blob_bytes = 0
        kept: set[str] = set()
        for entry in _scan(self.blobs_dir):
            sha = entry.name
            if not _SHA256_RE.fullmatch(sha):
                continue
            with self._lock:
                try:
                    st = os.stat(entry.path)
                    if sha in referenced or st.st_mtime >= older_than:
                        kept.add(sha)
                        blob_bytes += st.st_size
                        continue
                    os.unlink(entry.path)
                except FileNotFoundError:
                    continue
                except OSError as exc:
                    log.warning("cannot remove blob %s: %s", sha, exc)
                    kept.add(sha)
                    continue
            blobs_removed += 1
            blob_bytes_removed += st.st_size
        compiled_removed = compiled_bytes_removed = compiled_bytes = 0
        for entry in _scan(self._compiled_dir):
            match = _COMPILED_RE.fullmatch(entry.name)
            if match is None:
                continue
            sha, version = match.groups()
            try:
                st = entry.stat()
                stale = version != runtime
                orphan = sha not in referenced and sha not in kept and st.st_mtime < older_than
                if not (stale or orphan):
                    compiled_bytes += st.st_size
                    continue
                os.unlink(entry.path)
            except FileNotFoundError:
                continue
            except OSError as exc:
                log.warning("cannot remove compiled module %s: %s", entry.name, exc)
                continue
            compiled_removed += 1
            compiled_bytes_removed += st.st_size
        return Collected(
            blobs_removed=blobs_removed,
            blob_bytes_removed=blob_bytes_removed,
            compiled_removed=compiled_removed,
            compiled_bytes_removed=compiled_bytes_removed,
            blob_bytes=blob_bytes,
            compiled_bytes=compiled_bytes,
        )


def _scan(directory: Path) -> Iterator[os.DirEntry[str]]:
    """The regular files of ``directory`` (a snapshot: the directory may change meanwhile)."""
    with os.scandir(directory) as it:
        entries = list(it)
    for entry in entries:
        with contextlib.suppress(OSError):
            if entry.is_file(follow_symlinks=False):
                yield entry
