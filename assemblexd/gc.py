"""Garbage collection: module blobs no record needs any more, and stale compiled modules.

Every node collects its own disk, ``GC_FIRST_DELAY`` after start and then every
``--gc-interval`` seconds; a blob is removed once no app record (current or history) names it,
no version running here uses it, and it is older than ``--gc-grace`` (``Storage.collect``).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from .metrics import Metrics
from .registry import Registry
from .runtime import WASMTIME_VERSION
from .storage import Collected, Storage

__all__ = ["GC_FIRST_DELAY", "Collector"]

# The node's own log lines keep the logger name they always had, whichever part logs them.
log = logging.getLogger("assemblexd.node")

GC_FIRST_DELAY = 10.0
"""The first garbage collection runs this long after start (or after --gc-interval if shorter)."""


class Collector:
    """Collects a node's unreferenced modules.

    Args:
        storage: the node's data dir.
        registry: the app records (current and history) whose modules are kept.
        in_use: the sha256 of every version the node runs now (kept too).
        metrics: the collection counters and stored byte gauges.
        grace: ``--gc-grace``: an unreferenced blob younger than this is kept.
        on_collected: called after each collection with what it did.
    """

    def __init__(
        self,
        storage: Storage,
        registry: Registry,
        in_use: Callable[[], set[str]],
        metrics: Metrics,
        *,
        grace: float,
        on_collected: list[Callable[[Collected], None]],
    ) -> None:
        self._storage = storage
        self._registry = registry
        self._in_use = in_use
        self._metrics = metrics
        self._grace = grace
        self._on_collected = on_collected

    def referenced_modules(self) -> set[str]:
        """The sha256 of every module this node must keep: those of each app record in the
        replica (current and history) and of every version it runs now."""
        refs = self._in_use()
        for record in self._registry.records():
            refs.add(record.sha256)
            refs.update(h.sha256 for h in record.history)
        return refs

    async def collect(self) -> Collected:
        """Remove the module blobs no record references and that are older than --gc-grace,
        their compiled modules, and compiled modules of another wasmtime version.

        The references are read on the loop, then the files are worked on in a thread. A
        record written or received after that read names a blob stored or loaded since (so
        young, and kept: ``Storage.collect``) or one this node has not loaded yet, which, if
        collected, is fetched from a peer like any missing module. Raises OSError if a
        directory cannot be listed.
        """
        referenced = self.referenced_modules()
        older_than = time.time() - self._grace
        result = await asyncio.to_thread(
            self._storage.collect,
            referenced,
            older_than=older_than,
            runtime=WASMTIME_VERSION,
        )
        m = self._metrics
        m.gc_removed.labels("blob").inc(result.blobs_removed)
        m.gc_removed.labels("compiled").inc(result.compiled_removed)
        m.gc_removed_bytes.labels("blob").inc(result.blob_bytes_removed)
        m.gc_removed_bytes.labels("compiled").inc(result.compiled_bytes_removed)
        m.stored_bytes.labels("blob").set(result.blob_bytes)
        m.stored_bytes.labels("compiled").set(result.compiled_bytes)
        if result.removed:
            log.info(
                "garbage collection removed %d blobs (%d bytes) and %d compiled modules (%d bytes)",
                result.blobs_removed,
                result.blob_bytes_removed,
                result.compiled_removed,
                result.compiled_bytes_removed,
            )
        for callback in self._on_collected:
            callback(result)
        return result

    async def run(self, interval: float) -> None:
        """Collect every ``interval`` seconds, the first time after at most GC_FIRST_DELAY."""
        await asyncio.sleep(min(GC_FIRST_DELAY, interval))
        while True:
            try:
                await self.collect()
            except Exception:
                # Housekeeping: a failed collection must not take the node down with it.
                log.exception("garbage collection failed")
            await asyncio.sleep(interval)
