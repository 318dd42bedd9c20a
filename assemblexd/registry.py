"""Where apps live: records and version counters in the replicated store.

Keys of the store (``crdt.Replica``) used by the daemon:

| key | type | holds |
|---|---|---|
| ``apps/<name>`` | LWW register | the current :class:`AppRecord` (JSON); deleted on undeploy |
| ``apps/<name>/version`` | monotonic counter | bumped by every deploy, rollback and undeploy |
| ``members/<node id>`` | LWW register | a node's name, URL, active view and running apps (JSON) |
| ``kv/<app>/<key>`` | register and counter | the guests' ``kv`` namespace |

A change of an app always writes the record first, then bumps the counter: a replica that has
the new counter value has the record it goes with (deltas carry a writer's writes in order).
Supervisors wait on the counter (``read(key, at_least=n)``) and then read the record; when two
nodes deploy the same app at once the register keeps one record, the same everywhere, and both
bumps count. A node that had the losing record puts it into the winner's history
(:meth:`Registry.keep`), so no acknowledged deploy disappears: it can be rolled back to.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Sequence

import crdt

from .records import AppRecord

__all__ = ["HISTORY", "Registry", "counter_key", "record_key"]

HISTORY = 5
"""Previous versions kept in a record (and their modules kept on disk) for rollback."""


def record_key(name: str) -> str:
    return f"apps/{name}"


def counter_key(name: str) -> str:
    return f"apps/{name}/version"


def app_name(key: str) -> str | None:
    """The app a store key is about, if it is an ``apps/`` key."""
    if not key.startswith("apps/"):
        return None
    name = key[5:].split("/", 1)[0]
    return name or None


class Registry:
    """App records in a replica."""

    def __init__(self, replica: crdt.Replica, origin: str) -> None:
        self.replica = replica
        self.origin = origin

    def get(self, name: str) -> AppRecord | None:
        raw = self.replica.get(record_key(name))
        if raw is None:
            return None
        try:
            return AppRecord.decode(raw)
        except (ValueError, KeyError, TypeError):
            return None

    def is_current(self, record: AppRecord) -> bool:
        """Whether ``record`` is (still) the app's record in the store."""
        return self.get(record.name) == record

    def version(self, name: str) -> int:
        return self.replica.value(counter_key(name))

    def names(self) -> list[str]:
        names = {app_name(k) for k in self.replica.keys("apps/")}
        return sorted(n for n in names if n)

    def records(self) -> list[AppRecord]:
        return [r for r in map(self.get, self.names()) if r is not None]

    def deploy(self, name: str, sha256: str, size: int, capabilities: Sequence[str]) -> AppRecord:
        """Write a new version of ``name``. Blocks on the store's fsync: call off the loop."""
        previous = self.get(name)
        record = AppRecord(
            name=name,
            version=self.version(name) + 1,
            sha256=sha256,
            size=size,
            deployed_at=time.time(),
            origin=self.origin,
            capabilities=tuple(capabilities),
            history=_history(previous),
            seen=self._seen(name),
        )
        self._write(record)
        return record

    def rollback(self, name: str) -> AppRecord | None:
        """Make the previous version current again (as a new version); None if there is none."""
        current = self.get(name)
        if current is None or not current.history:
            return None
        record = dataclasses.replace(
            current.history[0],
            version=self.version(name) + 1,
            deployed_at=time.time(),
            origin=self.origin,
            history=current.history[1:],
            seen=self._seen(name),
        )
        self._write(record)
        return record

    def _seen(self, name: str) -> tuple[tuple[str, int], ...]:
        """The app's counter as it will be after this node's bump (`AppRecord.seen`)."""
        seen = {
            node: count
            for node, (count, _) in self.replica.counter(counter_key(name)).slots.items()
        }
        me = self.replica.node_id
        seen[me] = seen.get(me, 0) + 1
        return tuple(sorted(seen.items()))

    def keep(self, lost: AppRecord) -> bool:
        """Put ``lost``, a record the current one displaced, into the history if it was lost
        to a concurrent write.

        A record written without knowing of ``lost`` (`AppRecord.knows`: another node's write
        at the same time that won the register) leaves an answered deploy in no history: write
        the current record again with ``lost`` added to its history (newest first by deploy
        time, at most ``HISTORY``). What runs does not change. A record written knowing of
        ``lost`` (a later deploy or rollback, here or elsewhere) replaced it on purpose.

        Returns True when there was nothing to do, False after a write. Every node that had
        ``lost`` as its record and sees the same winner writes the same bytes, so concurrent
        calls agree. Blocks on the store's fsync when it writes: call off the loop.
        """
        current = self.get(lost.name)
        if current is None or current.knows(lost):
            return True
        entry = dataclasses.replace(lost, history=(), seen=())
        if entry in current.history:
            return True
        history = sorted(
            (*current.history, entry), key=lambda r: (r.deployed_at, r.origin), reverse=True
        )[:HISTORY]
        if entry not in history:
            return True
        self.replica.set(
            record_key(lost.name), dataclasses.replace(current, history=tuple(history)).encode()
        )
        return False

    def undeploy(self, name: str) -> bool:
        if self.get(name) is None:
            return False
        self.replica.delete(record_key(name))
        self.replica.incr(counter_key(name))
        return True

    def _write(self, record: AppRecord) -> None:
        self.replica.set(record_key(record.name), record.encode())
        self.replica.incr(counter_key(record.name))


def _history(previous: AppRecord | None) -> tuple[AppRecord, ...]:
    if previous is None:
        return ()
    return (dataclasses.replace(previous, history=(), seen=()), *previous.history)[:HISTORY]
