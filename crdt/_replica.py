"""``Replica``: the replicated store as the daemon uses it.

It wraps the pure state (``_state.py``) with a lock (any thread may call it), the durable log
(``_log.py``), blocking monotonic reads and change notifications. The sync core
(``_sync.py``) drives it through ``digest``, ``delta_chunk``, ``merge``, ``local_version`` and
``local_delta``.

What peers see is durable: every method that hands entries out (``delta``, ``delta_chunk``,
``local_delta``) first waits for the log to hold everything already applied, so no peer ever
holds a write this node could lose in a crash and then stamp again. Local readers on other
threads may see a write a moment before the writer's ``set`` returns.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import threading
import time
from collections.abc import Callable, Iterable
from types import TracebackType
from typing import NamedTuple

from ._codec import decode_delta, decode_digest, encode_delta, encode_digest
from ._errors import ClosedError, DamagedLogError, LocalError, RemoteError, StorageError
from ._log import Log
from ._state import State
from ._types import DEFAULT_LIMITS, Delta, DeltaChunk, GCounter, Limits

__all__ = ["Changes", "Replica"]

log = logging.getLogger("crdt")

# What a log record may hold, whatever limits this replica now runs with: a record that was
# accepted once is never refused at replay.
_REPLAY_LIMITS = Limits(
    max_key_bytes=1 << 20,
    max_value_bytes=1 << 28,
    max_node_id_bytes=1 << 10,
    max_nodes=1 << 16,
    max_digest_bytes=1 << 27,
    max_delta_bytes=1 << 30,
)
MAX_DRIFT = 24 * 3600.0
"""How far (seconds) a peer's stamps may run ahead of this replica's wall clock."""
_COMPACT_MIN = 8 << 20
"""Compact once the log grew by this much and by its size after the last compaction."""
_REPLAY_SLACK = 10_000
"""Compact at open when replay met this many more entries than twice those alive."""


class _Waiter(NamedTuple):
    at_least: int
    future: asyncio.Future[int]
    loop: asyncio.AbstractEventLoop
    thread: int


def _resolve(waiter: _Waiter, value: int) -> None:
    def settle() -> None:
        if not waiter.future.done():
            waiter.future.set_result(value)

    if threading.get_ident() == waiter.thread:
        settle()
    else:
        with contextlib.suppress(RuntimeError):  # its loop is closed: nobody waits any more
            waiter.loop.call_soon_threadsafe(settle)


class Replica:
    """One node's copy of the replicated store.

    Registers (``set``/``get``/``delete``) and counters (``incr``/``value``) are separate
    namespaces. Every method may be called from any thread; ``read`` and ``changes`` belong to
    the event loop that calls them.

    Args:
        node_id: this node's id, unique in the cluster and kept across restarts; a node that
            lost its data must come back under a new id.
        path: the log file; ``None`` keeps everything in memory.
        clock: wall time in seconds (``time.time``); a simulator passes its own.
        limits: size limits for keys, values and what peers send.
        salvage: if the log is damaged before intact records, skip the damaged spans, keep
            every intact record, keep the damaged file as ``<path>.damaged`` and write a new
            log (see ``salvaged``). What the damaged records held is lost here (peers may still
            have it). Without it such a log raises :class:`DamagedLogError`.

    Raises:
        StorageError: ``path`` belongs to another node or cannot be used.
        DamagedLogError: ``path`` is damaged before its last record (and left unchanged),
            unless ``salvage``.
    """

    def __init__(
        self,
        node_id: str,
        path: str | os.PathLike[str] | None = None,
        *,
        clock: Callable[[], float] = time.time,
        limits: Limits = DEFAULT_LIMITS,
        salvage: bool = False,
    ) -> None:
        limits.check_node_id(node_id)
        self._limits = limits
        self._clock = clock
        self._lock = threading.Lock()
        self._state = State(node_id, limits)
        self._subscribers: list[Callable[[str], None]] = []
        self._waiters: dict[str, list[_Waiter]] = {}
        self._feeds: set[Changes] = set()
        self._closed = False
        self._log: Log | None = None
        self.salvaged: list[tuple[int, int]] = []
        """Byte spans of the log that ``salvage`` skipped as damaged (empty if none)."""
        self.damaged_copy: str | None = None
        """Where ``salvage`` kept the damaged log as it was, if it had to."""
        if path is not None:
            self._log = self._open(os.fspath(path), salvage)

    def _open(self, path: str, salvage: bool) -> Log:
        try:
            log_, records = Log.open(
                path, self._state.node_id, _REPLAY_LIMITS.max_delta_bytes, salvage=salvage
            )
        except OSError as exc:
            raise StorageError(f"cannot open crdt log {path}: {exc}") from exc
        self.salvaged = list(log_.salvaged)
        replayed = 0
        for i, (offset, payload) in enumerate(records):
            try:
                delta = decode_delta(payload, _REPLAY_LIMITS)
            except RemoteError as exc:
                if salvage and (self.salvaged or i + 1 < len(records)):
                    log.warning("crdt log %s: bad record at %d (%s), skipped", path, offset, exc)
                    self.salvaged.append((offset, offset + 8 + len(payload)))
                    continue
                if i + 1 < len(records):
                    # Records after it were acknowledged: cutting would lose them.
                    log_.close()
                    raise DamagedLogError(
                        f"{path}: undecodable record at byte {offset} ({exc}) followed by"
                        f" {len(records) - i - 1} more; the file is left unchanged"
                    ) from exc
                log.warning("crdt log %s: bad last record at byte %d (%s), cut", path, offset, exc)
                log_.discard_from(offset)
                break
            self._state.apply(delta)
            replayed += len(delta.regs) + len(delta.ctrs)
        live = len(self._state.regs) + sum(map(len, self._state.ctrs.values()))
        if self.salvaged:
            # The damaged spans are still in the file: keep it for the operator, and write
            # what was recovered as a new log before anything is appended.
            try:
                self.damaged_copy = log_.keep_copy()
                self._compact(log_)
            except BaseException:
                log_.close()
                raise
        elif replayed > 2 * live + _REPLAY_SLACK:
            self._compact(log_)
        return log_

    @property
    def node_id(self) -> str:
        return self._state.node_id

    @property
    def limits(self) -> Limits:
        return self._limits

    def __repr__(self) -> str:
        where = "memory" if self._log is None else self._log.path
        return f"<Replica {self.node_id!r} in {where}>"

    # -- the store -------------------------------------------------------------------------

    def set(self, key: str, value: bytes) -> None:
        """Write a register (last writer wins); durable when it returns, if on disk."""
        self._limits.check_key(key)
        value = self._limits.check_value(value)
        self._commit(lambda now: (self._state.write(key, value, now), None))

    def get(self, key: str) -> bytes | None:
        """A register's value; ``None`` if never written or deleted."""
        with self._lock:
            return self._state.get(key)

    def delete(self, key: str) -> None:
        """Delete a register: a tombstone that wins and loses like any write."""
        self._limits.check_key(key)
        self._commit(lambda now: (self._state.write(key, None, now), None))

    def incr(self, key: str, n: int = 1) -> int:
        """Add ``n`` (>= 0) to a counter; returns its new value (all nodes' increments)."""
        self._limits.check_key(key)
        if not isinstance(n, int) or isinstance(n, bool) or n < 0:
            raise LocalError("counters only grow: n must be an int >= 0")
        if n == 0:
            return self.value(key)

        def write(now: float) -> tuple[Delta, int]:
            record = self._state.incr(key, n, now)
            return record, self._state.value(key)

        result = self._commit(write)
        assert result is not None
        return result

    def value(self, key: str) -> int:
        """A counter's value; 0 for a counter never incremented."""
        with self._lock:
            return self._state.value(key)

    def counter(self, key: str) -> GCounter:
        """A counter with its per-node slots."""
        with self._lock:
            return self._state.counter(key)

    def keys(self, prefix: str = "") -> list[str]:
        """Registers that hold a value and start with ``prefix``, sorted."""
        with self._lock:
            return self._state.keys(prefix)

    def counter_keys(self, prefix: str = "") -> list[str]:
        """Counters that start with ``prefix``, sorted."""
        with self._lock:
            return self._state.counter_keys(prefix)

    def _commit(self, write: Callable[[float], tuple[Delta, int | None]]) -> int | None:
        with self._lock:
            self._check_open()
            record, result = write(self._clock())
            ticket = None if self._log is None else self._log.append(encode_delta(record))
            key = record.regs[0][0] if record.regs else record.ctrs[0].key
        if ticket is not None:
            self._synced(ticket)
        self._notify((key,))
        return result

    def _synced(self, ticket: int) -> None:
        logf = self._log
        assert logf is not None
        logf.sync(ticket)
        if logf.size - logf.base > max(_COMPACT_MIN, logf.base):
            with self._lock:
                if not self._closed and logf.size - logf.base > max(_COMPACT_MIN, logf.base):
                    self._compact(logf)

    def _compact(self, logf: Log) -> None:
        logf.rewrite(encode_delta(d) for d in self._state.snapshot())

    # -- sync ------------------------------------------------------------------------------

    def digest(self) -> bytes:
        """A compact summary of what this replica holds (its version vector)."""
        with self._lock:
            return encode_digest(self._state.vv)

    def delta(self, digest: bytes) -> bytes:
        """What the holder of ``digest`` lacks, up to about ``limits.chunk_bytes``.

        Raises:
            RemoteError: ``digest`` is malformed or too large.
        """
        chunk = self.delta_chunk(digest)
        if chunk.delta is not None:
            return chunk.delta
        with self._lock:
            return encode_delta(Delta(self._state.clock))

    def delta_chunk(self, digest: bytes) -> DeltaChunk:
        """:meth:`delta`, and whether more remains and whether the peer is ahead of us."""
        peer_vv = decode_digest(digest, self._limits)
        with self._lock:
            self._check_open()
            self._flush()
            delta, more = self._state.delta_for(peer_vv)
            behind = self._state.lacks(peer_vv)
        return DeltaChunk(None if delta is None else encode_delta(delta), more, behind)

    def merge(self, delta: bytes) -> bool:
        """Merge a peer's delta: idempotent, in any order.

        Returns:
            Whether it changed anything.

        Raises:
            RemoteError: ``delta`` is malformed or too large; nothing changed.
        """
        parsed = decode_delta(delta, self._limits)
        self._check_stamps(parsed)
        with self._lock:
            self._check_open()
            record, keys = self._state.apply(parsed)
            ticket = None
            if record is not None and self._log is not None:
                ticket = self._log.append(encode_delta(record))
        if ticket is not None:
            self._synced(ticket)
        if keys:
            self._notify(keys)
        return record is not None

    def _check_stamps(self, delta: Delta) -> None:
        """Refuse stamps too far ahead of our clock: merged, they would exhaust it.

        A hybrid clock never goes backwards, so one stamp near 2**63 from a peer would leave
        this replica unable to stamp a write again. A peer's clock may run ahead of ours, but
        not by more than MAX_DRIFT.
        """
        top = max(
            (
                delta.clock,
                *(reg.ts for _, reg in delta.regs),
                *(entry.ts for entry in delta.ctrs),
                *(hi for _, _, hi in delta.claims),
            ),
            default=0,
        )
        horizon = (int((self._clock() + MAX_DRIFT) * 1000) << 16) | 0xFFFF
        if top > horizon:
            raise RemoteError(
                f"a stamp of the delta is more than {MAX_DRIFT:g} s ahead of this replica's clock"
            )

    def local_version(self) -> int:
        """The stamp of this node's latest write (0 if none): grows with every local write."""
        with self._lock:
            return self._state.local_version()

    def local_delta(self, since: int) -> tuple[bytes | None, int]:
        """This node's writes stamped after ``since`` (at most a chunk), for an eager push.

        Returns:
            The delta (``None`` if nothing) and the stamp it covers up to: the next ``since``.
        """
        with self._lock:
            self._check_open()
            self._flush()
            delta, upto = self._state.local_since(since)
        return (None if delta is None else encode_delta(delta)), upto

    def _flush(self) -> None:
        if self._log is not None:
            self._log.sync()

    # -- waiting and notifications ----------------------------------------------------------

    async def read(
        self,
        key: str,
        at_least: int,
        timeout: float | None = None,  # noqa: ASYNC109 (the API promised to the daemon)
    ) -> int:
        """Wait until the counter ``key`` reaches ``at_least``; returns its value then.

        Woken by local increments and by merges, from any thread.

        Raises:
            TimeoutError: ``timeout`` seconds passed first.
            ClosedError: the replica was closed meanwhile.
        """
        loop = asyncio.get_running_loop()
        with self._lock:
            self._check_open()
            current = self._state.value(key)
            if current >= at_least:
                return current
            waiter = _Waiter(at_least, loop.create_future(), loop, threading.get_ident())
            self._waiters.setdefault(key, []).append(waiter)
        try:
            async with asyncio.timeout(timeout):
                return await waiter.future
        finally:
            with self._lock:
                waiters = self._waiters.get(key)
                if waiters and waiter in waiters:
                    waiters.remove(waiter)
                    if not waiters:
                        del self._waiters[key]

    def subscribe(self, callback: Callable[[str], None]) -> Callable[[], None]:
        """Call ``callback(key)`` after every change of ``key``, local or merged.

        It runs on the thread that made the change, once the change is durable; it must be
        quick and must not block. Returns a function that unsubscribes.
        """
        with self._lock:
            self._subscribers = [*self._subscribers, callback]

        def unsubscribe() -> None:
            with self._lock:
                self._subscribers = [s for s in self._subscribers if s is not callback]

        return unsubscribe

    def changes(self) -> Changes:
        """An async iterator of changed keys for the calling event loop (see :class:`Changes`)."""
        return Changes(self)

    def _notify(self, keys: Iterable[str]) -> None:
        keys = keys if isinstance(keys, set | frozenset) else set(keys)
        ready: list[tuple[_Waiter, int]] = []
        with self._lock:
            subscribers = self._subscribers
            if self._waiters:
                for key in [k for k in self._waiters if k in keys]:
                    value = self._state.value(key)
                    waiters = self._waiters[key]
                    ready += [(w, value) for w in waiters if value >= w.at_least]
                    waiters[:] = [w for w in waiters if value < w.at_least]
                    if not waiters:
                        del self._waiters[key]
        for waiter, value in ready:
            _resolve(waiter, value)
        for callback in subscribers:
            for key in keys:
                try:
                    callback(key)
                except Exception:
                    log.exception("crdt subscriber %r failed", callback)

    # -- life cycle ------------------------------------------------------------------------

    def _check_open(self) -> None:
        if self._closed:
            raise ClosedError("the replica is closed")

    def close(self) -> None:
        """Flush and close the log; pending reads fail with :class:`ClosedError`."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            waiters = [w for ws in self._waiters.values() for w in ws]
            self._waiters.clear()
            feeds = list(self._feeds)
        for waiter in waiters:
            fut = waiter.future

            def fail(fut: asyncio.Future[int] = fut) -> None:
                if not fut.done():
                    fut.set_exception(ClosedError("the replica was closed"))

            if threading.get_ident() == waiter.thread:
                fail()
            else:
                with contextlib.suppress(RuntimeError):
                    waiter.loop.call_soon_threadsafe(fail)
        for feed in feeds:
            feed.close()
        if self._log is not None:
            self._log.close()

    def __enter__(self) -> Replica:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


class Changes:
    """Keys as they change, for one event loop; repeated changes of a key not yet taken merge.

    So a slow consumer costs at most one pending entry per key. Use as
    ``async with replica.changes() as feed: async for key in feed: ...``; it ends when
    closed (or when the replica closes).
    """

    def __init__(self, replica: Replica) -> None:
        self._loop = asyncio.get_running_loop()
        self._thread = threading.get_ident()
        self._pending: dict[str, None] = {}
        self._event = asyncio.Event()
        self._closed = False
        self._replica = replica
        with replica._lock:
            replica._check_open()
            replica._feeds.add(self)
        self._unsubscribe = replica.subscribe(self._on_change)

    def _on_change(self, key: str) -> None:
        if threading.get_ident() == self._thread:
            self._add(key)
        else:
            with contextlib.suppress(RuntimeError):
                self._loop.call_soon_threadsafe(self._add, key)

    def _add(self, key: str) -> None:
        self._pending[key] = None
        self._event.set()

    def __aiter__(self) -> Changes:
        return self

    async def __anext__(self) -> str:
        while not self._pending:
            if self._closed:
                raise StopAsyncIteration
            self._event.clear()
            await self._event.wait()
        key = next(iter(self._pending))
        del self._pending[key]
        return key

    def close(self) -> None:
        """Stop following changes; the iterator ends once pending keys are taken."""
        if self._closed:
            return
        self._closed = True
        self._unsubscribe()
        with self._replica._lock:
            self._replica._feeds.discard(self)
        if threading.get_ident() == self._thread:
            self._event.set()
        else:
            with contextlib.suppress(RuntimeError):
                self._loop.call_soon_threadsafe(self._event.set)

    async def __aenter__(self) -> Changes:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
