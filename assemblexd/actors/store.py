"""An acceptor's records on disk: SQLite in the data dir (``actors.sqlite``).

Every node is an acceptor of every actor: it keeps each actor's :class:`~.core.Record` and
state bytes in one table. The records are also kept in memory (the rules decide on them at
once, on the loop thread); the state bytes are read from disk when an activation asks for
them. A write is durable when :meth:`ActorStore.write` returns: one thread owns the database
and commits whatever writes are waiting in one transaction (WAL, ``synchronous=FULL``), so
writers that arrive together share one fsync.
"""

from __future__ import annotations

import asyncio
import queue
import sqlite3
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from .core import Record

__all__ = ["ActorStore"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS actors (
    app TEXT NOT NULL,
    key TEXT NOT NULL,
    promised INTEGER NOT NULL,
    holder TEXT NOT NULL,
    holder_session INTEGER NOT NULL,
    released INTEGER NOT NULL,
    state_gen INTEGER NOT NULL,
    state_seq INTEGER NOT NULL,
    alarm_at INTEGER,
    state BLOB NOT NULL DEFAULT x'',
    PRIMARY KEY (app, key)
) WITHOUT ROWID
"""
_UPSERT = """
INSERT INTO actors (app, key, promised, holder, holder_session, released, state_gen,
                    state_seq, alarm_at)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (app, key) DO UPDATE SET
    promised = excluded.promised, holder = excluded.holder,
    holder_session = excluded.holder_session, released = excluded.released,
    state_gen = excluded.state_gen, state_seq = excluded.state_seq,
    alarm_at = excluded.alarm_at
"""
_FIELDS = (
    "promised",
    "holder",
    "holder_session",
    "released",
    "state_gen",
    "state_seq",
    "alarm_at",
)

Job = Callable[[sqlite3.Connection], Any]


class ActorStore:
    """The records of every actor this node knows, on disk and in memory.

    ``ActorStore(path)`` opens (or creates) the database and reads every record; ``close()``
    stops its thread. Raises sqlite3.Error when the file is not a database of this schema.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        try:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.execute(_SCHEMA)
            self.records: dict[tuple[str, str], Record] = {}
            for row in self._db.execute(f"SELECT app, key, {', '.join(_FIELDS)} FROM actors"):
                app, key, *fields = row
                values = dict(zip(_FIELDS, fields, strict=True))
                values["released"] = bool(values["released"])
                self.records[(app, key)] = Record(**values)
        except BaseException:
            self._db.close()
            raise
        self._jobs: queue.SimpleQueue[
            tuple[Job, asyncio.Future[Any], asyncio.AbstractEventLoop] | None
        ] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name="actor-store", daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._jobs.put(None)
        self._thread.join()
        self._db.close()

    def record(self, app: str, key: str) -> Record:
        return self.records.get((app, key)) or Record()

    def keys(self, app: str | None = None) -> Iterator[tuple[str, str]]:
        return (k for k in list(self.records) if app is None or k[0] == app)

    async def write(self, app: str, key: str, record: Record, data: bytes | None = None) -> None:
        """Make ``record`` (and ``data``, the state bytes, when given) the actor's, in memory
        at once and on disk when this returns."""
        self.records[(app, key)] = record
        row = (app, key, *(getattr(record, f) for f in _FIELDS))

        def job(db: sqlite3.Connection) -> None:
            db.execute(_UPSERT, row)
            if data is not None:
                db.execute(
                    "UPDATE actors SET state = ? WHERE app = ? AND key = ?", (data, app, key)
                )

        await self._submit(job)

    async def state(self, app: str, key: str) -> bytes:
        """The state bytes held of the actor (empty when none)."""

        def job(db: sqlite3.Connection) -> bytes:
            row = db.execute(
                "SELECT state FROM actors WHERE app = ? AND key = ?", (app, key)
            ).fetchone()
            return b"" if row is None else bytes(row[0])

        result: bytes = await self._submit(job)
        return result

    async def delete_app(self, app: str) -> None:
        """Forget every actor of ``app`` (it was undeployed)."""
        for k in [k for k in self.records if k[0] == app]:
            del self.records[k]
        await self._submit(lambda db: db.execute("DELETE FROM actors WHERE app = ?", (app,)))

    def _submit(self, job: Job) -> asyncio.Future[Any]:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        self._jobs.put((job, future, loop))
        return future

    def _run(self) -> None:
        """The database's thread: run every waiting job in one transaction, then answer."""
        while True:
            first = self._jobs.get()
            if first is None:
                return
            batch = [first]
            stop = False
            while True:
                try:
                    item = self._jobs.get_nowait()
                except queue.Empty:
                    break
                if item is None:
                    stop = True
                    break
                batch.append(item)
            results: list[tuple[bool, Any]] = []
            try:
                self._db.execute("BEGIN")
                for job, _, _ in batch:
                    results.append((True, job(self._db)))
                self._db.execute("COMMIT")
            except sqlite3.Error as exc:
                if self._db.in_transaction:
                    self._db.execute("ROLLBACK")
                results = [(False, exc)] * len(batch)
            for (_, future, loop), (ok, value) in zip(batch, results, strict=True):
                loop.call_soon_threadsafe(_settle, future, ok, value)
            if stop:
                return


def _settle(future: asyncio.Future[Any], ok: bool, value: Any) -> None:
    if future.done():
        return
    if ok:
        future.set_result(value)
    else:
        future.set_exception(value)
