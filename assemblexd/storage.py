"""What a node keeps on disk: module blobs, app records, the compiled-module cache, a local KV.

Layout under the data dir::

    blobs/<sha256>        module bytes, content-addressed (never rewritten once there)
    apps/<name>.json      one app record per app (the file name is an escaped form of the name)
    compiled/             wasmtime's serialized modules, owned by the runtime
    kv.sqlite3            the local key-value store (``LocalKV``)

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
import sqlite3
import tempfile
import threading
from pathlib import Path
from types import TracebackType

from .errors import NotFound
from .records import AppRecord

__all__ = ["LocalKV", "Storage", "atomic_write"]

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


_atomic_write = atomic_write  # the name node.py imports today


def app_file_stem(name: str) -> str:
    """An injective, path-safe file stem for an app name.

    Bytes outside ``[a-z0-9_-]`` become ``%XX``, so ``/``, ``..``, NUL and upper case can never
    act on the path. A stem that would be too long for a file name is replaced by a hash of the
    name (load_apps reads the name from the record itself, so this stays lossless).
    """
    stem = "".join(chr(b) if b in _SAFE_NAME_BYTES else f"%{b:02X}" for b in name.encode("utf-8"))
    if len(stem) > _MAX_FILE_STEM:
        stem = "%sha256-" + hashlib.sha256(name.encode("utf-8")).hexdigest()
    return stem


class Storage:
    """Blobs and app records under one data dir.

    Args:
        data_dir: created (with its subdirectories) if missing.
    """

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = Path(data_dir)
        self.blobs_dir = self.data_dir / "blobs"
        self.apps_dir = self.data_dir / "apps"
        self._compiled_dir = self.data_dir / "compiled"
        for d in (self.data_dir, self.blobs_dir, self.apps_dir, self._compiled_dir):
            d.mkdir(parents=True, exist_ok=True)
        for d in (self.blobs_dir, self.apps_dir):
            for tmp in d.glob(_TMP_PREFIX + "*"):
                with contextlib.suppress(OSError):
                    tmp.unlink()

    @property
    def compiled_dir(self) -> Path:
        """Directory of the runtime's compiled-module cache."""
        return self._compiled_dir

    @property
    def kv_path(self) -> Path:
        """Path of the local key-value store's SQLite file."""
        return self.data_dir / "kv.sqlite3"

    def open_kv(self) -> LocalKV:
        """Open the local key-value store of this data dir (the caller closes it)."""
        return LocalKV(self.kv_path)

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

    # -- app records --------------------------------------------------------------------------

    def _app_path(self, name: str) -> Path:
        return self.apps_dir / (app_file_stem(name) + ".json")

    def save_app(self, rec: AppRecord) -> None:
        """Write (or replace) the record of ``rec.name``, durably."""
        atomic_write(self._app_path(rec.name), rec.encode() + b"\n")

    def delete_app(self, name: str) -> None:
        """Remove the record of ``name``; no error if there is none."""
        path = self._app_path(name)
        try:
            path.unlink()
        except FileNotFoundError:
            return
        _fsync_dir(self.apps_dir)

    def load_apps(self) -> dict[str, AppRecord]:
        """Every readable app record by name. Unreadable files are logged and skipped."""
        apps: dict[str, AppRecord] = {}
        for path in sorted(self.apps_dir.glob("*.json")):
            if path.name.startswith(_TMP_PREFIX):
                continue
            try:
                rec = AppRecord.decode(path.read_bytes())
            except (OSError, ValueError, KeyError, TypeError) as e:
                log.warning("skipping unreadable app record %s: %s", path, e)
                continue
            if path != self._app_path(rec.name):
                log.warning("skipping app record %s: it names app %r", path, rec.name)
                continue
            apps[rec.name] = rec
        return apps


class LocalKV:
    """A small durable key-value store in one SQLite file (WAL mode).

    Registers (``set``/``get``/``delete``) and counters (``incr``/``value``) are separate
    tables, as they will be separate types in the replicated store (``crdt.Replica``), whose
    method shapes this class shares so the host functions can move to it unchanged. Counters
    only grow, like the replicated G-counter.

    Every write is its own committed transaction (``synchronous=FULL``): a write that returned
    survives a crash. A lock serializes use from several threads.

    Args:
        path: the SQLite file; created if missing.
    """

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS registers (key TEXT PRIMARY KEY, value BLOB NOT NULL)"
        )
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS counters (key TEXT PRIMARY KEY, value INTEGER NOT NULL)"
        )

    def set(self, key: str, value: bytes) -> None:
        with self._lock:
            self._db.execute(
                "INSERT INTO registers (key, value) VALUES (?, ?)"
                " ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                (key, bytes(value)),
            )

    def get(self, key: str) -> bytes | None:
        with self._lock:
            row = self._db.execute("SELECT value FROM registers WHERE key = ?", (key,)).fetchone()
        return None if row is None else bytes(row[0])

    def delete(self, key: str) -> None:
        with self._lock:
            self._db.execute("DELETE FROM registers WHERE key = ?", (key,))

    def incr(self, key: str, n: int = 1) -> int:
        """Add ``n`` (>= 0) to a counter; returns the new value."""
        if n < 0:
            raise ValueError("counters only grow: n must be >= 0")
        with self._lock:
            # fetchall, not fetchone: the statement (and so the autocommit) completes only
            # once its rows are consumed.
            rows = self._db.execute(
                "INSERT INTO counters (key, value) VALUES (?, ?)"
                " ON CONFLICT (key) DO UPDATE SET value = value + excluded.value"
                " RETURNING value",
                (key, n),
            ).fetchall()
        return int(rows[0][0])

    def value(self, key: str) -> int:
        """A counter's value; 0 for a counter never incremented."""
        with self._lock:
            row = self._db.execute("SELECT value FROM counters WHERE key = ?", (key,)).fetchone()
        return 0 if row is None else int(row[0])

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def __enter__(self) -> LocalKV:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
