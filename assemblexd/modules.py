"""The modules a node runs: read from disk or fetched from a peer, compiled, and cached compiled.

A module's bytes are stored by sha256 (``storage.py``); its compiled form is cached on disk per
wasmtime version, so a restart or a redeploy of the same bytes skips compilation.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import Awaitable, Callable

from .errors import NotFound
from .metrics import Metrics
from .peers import FetchError
from .records import AppRecord
from .runtime import WASMTIME_VERSION, CompiledModule, Engine, ModuleError
from .storage import Storage, atomic_write

__all__ = ["Modules"]

# The node's own log lines keep the logger name they always had, whichever part logs them.
log = logging.getLogger("assemblexd.node")


class Modules:
    """Compiled modules, from this node's disk or its peers.

    Args:
        storage: the node's data dir (module blobs and compiled modules).
        engine: compiles and deserializes modules.
        metrics: counts fetches and compile cache hits and misses.
        fetch: the module of a record from a peer (``Peers.fetch_module``); raises FetchError.
    """

    def __init__(
        self,
        storage: Storage,
        engine: Engine,
        metrics: Metrics,
        fetch: Callable[[AppRecord], Awaitable[bytes]],
    ) -> None:
        self._storage = storage
        self._engine = engine
        self._metrics = metrics
        self._fetch_module = fetch

    async def module_for(self, record: AppRecord) -> CompiledModule:
        """The compiled module of ``record``: from disk, else from a peer.

        Raises OSError, ModuleError, FetchError.
        """
        try:
            # Refreshes the blob's mtime: a collection that read the references before this
            # record came finds the blob young and keeps it.
            wasm = await asyncio.to_thread(self._storage.load_blob, record.sha256)
        except NotFound:  # not here, or collected just now: fetch it like any missing module
            wasm = await self.fetch(record)
        return await self.load(record.sha256, wasm)

    async def fetch(self, record: AppRecord) -> bytes:
        """The module of ``record`` from a peer, checked and stored. Raises FetchError."""
        wasm = await self._fetch_module(record)
        if hashlib.sha256(wasm).hexdigest() != record.sha256:
            raise FetchError(f"module fetched for {record.name} does not match its sha256")
        await asyncio.to_thread(self._storage.put_blob, wasm)
        self._metrics.blob_fetches.inc()
        return wasm

    async def load(self, sha256: str, wasm: bytes) -> CompiledModule:
        """Compile ``wasm``, through the on-disk cache of compiled modules. Raises ModuleError."""
        cache = self._storage.compiled_path(sha256, WASMTIME_VERSION)
        engine = self._engine
        if cache.exists():
            try:
                data = await asyncio.to_thread(cache.read_bytes)
                compiled = await asyncio.to_thread(engine.deserialize, data, wasm)
                self._metrics.compile_cache.labels("hit").inc()
                return compiled
            except (OSError, ModuleError) as exc:
                log.warning("dropping cached module %s: %s", cache.name, exc)
        compiled = await asyncio.to_thread(engine.compile, wasm)
        self._metrics.compile_cache.labels("miss").inc()
        try:
            await asyncio.to_thread(atomic_write, cache, compiled.serialize())
        except OSError as exc:
            log.warning("cannot cache compiled module %s: %s", cache.name, exc)
        return compiled
