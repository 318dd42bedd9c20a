"""A node: storage, the waPC runtime, host functions and app pools, composed.

The HTTP API and the CLI talk to a :class:`Node` only. A node on its own (this module) keeps its
apps in its replicated store and on disk and serves them; the cluster layer (``cluster.py``)
syncs that store with peers and fetches the modules it lacks.

Module blobs no record needs any more are garbage-collected by a periodic task of the node
(``--gc-interval``, ``--gc-grace``): see :meth:`Node.collect_garbage` and ``storage.py``.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hashlib
import logging
import secrets
import time
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from pathlib import Path
from typing import Any, Protocol

import crdt

from .config import MIB, Config
from .errors import (
    BadRequest,
    CallTimeout,
    DataDirError,
    GuestError,
    InvalidModule,
    NotFound,
    PayloadTooLarge,
    UnknownApp,
)
from .logs import LineLimiter, guest_line
from .metrics import Metrics
from .records import DEFAULT_CAPABILITIES, NAMESPACES, AppRecord
from .registry import Registry, app_name, counter_key, record_key
from .runtime import (
    WASMTIME_VERSION,
    AppPool,
    CompiledModule,
    Engine,
    Host,
    HostHandler,
    Instance,
    InstanceCap,
    KVQuota,
    ModuleError,
    ReplicaKV,
    Scheduler,
    WasmTrap,
)
from .storage import Collected, Storage, atomic_write

__all__ = ["Node"]

log = logging.getLogger(__name__)
guest_log = logging.getLogger("assemblexd.guest")

RETRY_FIRST = 0.5
RETRY_MAX = 30.0
"""A supervisor that cannot get a module retries after 0.5 s, doubling up to 30 s."""

GC_FIRST_DELAY = 10.0
"""The first garbage collection runs this long after start (or after --gc-interval if shorter)."""


class ClusterView(Protocol):
    """What the node and its HTTP API need of the cluster layer (``cluster.Cluster``)."""

    def views(self) -> tuple[list[Any], list[Any], list[dict[str, Any]]]:
        """(active view, passive view, members with their active views and running apps)."""
        ...

    async def handle_peer(self, request: Any) -> Any:
        """Serve ``GET /peer`` (an aiohttp request) as a membership channel."""
        ...

    def peer_read_waits(self) -> dict[str, int]:
        """Times peers' links were read slower, so far: ``paced`` (a peer over its rate) and
        ``held`` (the sync thread behind on a peer's messages)."""
        ...


class FetchError(Exception):
    """A module could not be had from this node or its peers."""


@dataclasses.dataclass
class LoadedApp:
    """An app version this node can run now."""

    record: AppRecord
    pool: AppPool[Instance, CompiledModule]
    host: HostHandler
    """Host functions bound to this app, for calls at depth 0."""
    metrics: Metrics
    unloaded: bool = False
    """Undeployed: its series are gone, and calls that were running are not counted again."""

    def observe(self, op: str, outcome: str, seconds: float) -> None:
        if not self.unloaded:
            self.metrics.observe_call(self.record.name, op, outcome, seconds)


class Node:
    """One assemblexd node. Use as ``async with Node(config) as node:``.

    Apps live in the replicated store (``registry.py``); one supervisor per app keeps what this
    node runs equal to the app's record there, whoever wrote it. A node alone is a cluster of
    one: the cluster layer (``cluster.py``) only adds peers to sync with and fetch modules from.
    """

    def __init__(self, config: Config) -> None:
        self.config = config
        try:
            self.storage = Storage(Path(config.data_dir))
            self.id = self._node_id()
        except OSError as exc:  # not a directory, not writable, node_id unreadable...
            raise DataDirError(f"data dir {config.data_dir}: {exc}") from exc
        self.name = config.node_name
        self.url = config.url
        """The URL peers and clients reach this node at (the server sets the real port)."""
        self.metrics = Metrics()
        self.metrics.instances_freed = lambda: {
            "evicted": self._cap.evicted,
            "expired": self._cap.expired,
        }
        self.metrics.peer_read_waits = lambda: (
            None if self.cluster is None else self.cluster.peer_read_waits()
        )
        self.fetch_module: Callable[[AppRecord], Awaitable[bytes]] | None = None
        """Set by the cluster: fetch a module this node does not have from a peer."""
        self.cluster: ClusterView | None = None
        """Set by the cluster layer: the views and members /status shows."""
        self.on_apps_changed: list[Callable[[], None]] = []
        """Called after this node starts running another version of an app, or stops one."""
        self.on_collected: list[Callable[[Collected], None]] = []
        """Called after each garbage collection, with what it did."""
        self._apps: dict[str, LoadedApp] = {}
        self._last_record: dict[str, AppRecord | None] = {}
        """The record of each app as this node's last reconcile found it."""
        self._waiting: set[str] = set()
        """Apps not run for --max-apps, run when another app is undeployed."""
        self._peer_up = asyncio.Event()
        self._deploy_lock = asyncio.Lock()
        self._app_locks: dict[str, asyncio.Lock] = {}
        self._cap: InstanceCap[Instance] = InstanceCap(config.max_instances)
        self._log_limiter = LineLimiter(config.guest_log_rate, 10 * config.guest_log_rate)
        self._engine: Engine | None = None
        self._scheduler: Scheduler | None = None
        self._replica: crdt.Replica | None = None
        self._registry: Registry | None = None
        self._host: Host | None = None
        self._kv_quota: KVQuota | None = None
        self._stack = contextlib.AsyncExitStack()
        self._group: asyncio.TaskGroup | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._supervised: set[str] = set()
        self.started_at = time.time()

    # -- lifecycle --------------------------------------------------------------------------

    async def __aenter__(self) -> Node:
        tick = self.config.epoch_tick_ms / 1000
        self._engine = Engine(tick=tick, log_sink=self._guest_log)
        self._scheduler = Scheduler(
            self._engine,
            workers=self.config.cpu_workers,
            loop_slice=tick,
            max_host_calls=self.config.max_host_calls,
        )
        try:
            self._replica = self._open_replica()
        except BaseException:
            await self.__aexit__(None, None, None)
            raise
        self._registry = Registry(self._replica, self.name)
        self._kv_quota = KVQuota(
            self._replica, self.config.max_kv_mib * MIB, self.config.max_kv_keys
        )
        self._host = Host(
            ReplicaKV(self._replica),
            self._call_from_guest,
            dict(self.config.redis_urls),
            self.config.max_call_depth,
            on_host_call=self.metrics.host_call,
            kv_quota=self._kv_quota,
        )
        # Serve what is on disk at once, before any peer is heard from.
        for name in self._registry.names():
            await self._reconcile_once(name)
        self._group = await self._stack.enter_async_context(asyncio.TaskGroup())
        self._spawn(self._watch())
        if self.config.gc_interval > 0:
            self._spawn(self._collector())
        if self.config.idle_timeout > 0:
            self._spawn(self._expirer())
        return self

    async def __aexit__(self, *exc: object) -> None:
        for task in self._tasks:
            task.cancel()
        await self._stack.aclose()
        for app in self._apps.values():
            app.pool.close()
        self._apps.clear()
        if self._host is not None:
            await self._host.close()
        if self._kv_quota is not None:
            self._kv_quota.close()
        if self._scheduler is not None:
            self._scheduler.close()
        if self._engine is not None:
            self._engine.close()
        if self._replica is not None:
            self._replica.close()

    def _open_replica(self) -> crdt.Replica:
        """The replicated store of the data dir. Raises DataDirError."""
        path = Path(self.config.data_dir) / "replica.log"
        if not path.exists() and any(self.storage.blobs_dir.iterdir()):
            # Blobs without a log: the log was lost or moved, not a first start.
            log.warning(
                "%s has module blobs but no replica.log: starting with an empty store"
                " (apps come back only from peers)",
                self.config.data_dir,
            )
        try:
            return crdt.Replica(self.id, path)
        except crdt.DamagedLogError as exc:
            raise DataDirError(
                f"{exc}: restore it from a backup, or recover its intact records with"
                f" 'assemblexd salvage-log --data-dir {self.config.data_dir}'"
            ) from exc
        except crdt.Error as exc:  # another node's log, a bad header, a bad node_id
            raise DataDirError(str(exc)) from exc

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        assert self._group is not None
        task = self._group.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _node_id(self) -> str:
        path = Path(self.config.data_dir) / "node_id"
        try:
            return path.read_text().strip()
        except FileNotFoundError:
            node_id = secrets.token_hex(8)
            atomic_write(path, node_id.encode())
            return node_id

    @property
    def replica(self) -> crdt.Replica:
        assert self._replica is not None, "use the node inside 'async with'"
        return self._replica

    @property
    def registry(self) -> Registry:
        assert self._registry is not None, "use the node inside 'async with'"
        return self._registry

    # -- supervisors ------------------------------------------------------------------------

    async def _watch(self) -> None:
        """Start a supervisor for every app the store knows of, now and as they appear."""
        async with self.replica.changes() as changes:
            for name in self.registry.names():
                self._supervise(name)
            async for key in changes:
                changed = app_name(key)
                if changed is not None:
                    self._supervise(changed)
                    if key == record_key(changed):
                        # A record whose counter bump never came (its writer died between
                        # the two writes) must still be run: reconcile on the record too.
                        self._spawn(self._reconcile_quietly(changed))

    def _supervise(self, name: str) -> None:
        if name not in self._supervised:
            self._supervised.add(name)
            self._spawn(self._supervisor(name))

    async def _supervisor(self, name: str) -> None:
        """Keep what this node runs of ``name`` equal to its record, version after version.

        Waits on the app's version counter with a blocking monotonic read (as Lasp's
        ``read/2``): it wakes on every deploy, rollback and undeploy, local or merged.
        """
        key = counter_key(name)
        while True:
            seen = self.registry.version(name)
            backoff = RETRY_FIRST
            while not await self._reconcile_once(name):
                # The module could not be had yet: try again later, at once when a peer
                # comes up (it may have it), and go on with the newer record on news.
                if await self._wait_for_news(key, seen, backoff):
                    break
                backoff = min(backoff * 2, RETRY_MAX)
            await self.replica.read(key, at_least=seen + 1)

    async def _wait_for_news(self, key: str, seen: int, backoff: float) -> bool:
        """Wait until counter ``key`` passes ``seen`` (True), or a peer comes up or
        ``backoff`` seconds pass (False)."""
        read = asyncio.ensure_future(self.replica.read(key, at_least=seen + 1))
        peer = asyncio.ensure_future(self._peer_up.wait())
        try:
            done, _ = await asyncio.wait(
                (read, peer), timeout=backoff, return_when=asyncio.FIRST_COMPLETED
            )
        finally:
            read.cancel()
            peer.cancel()
        return read in done and not read.cancelled() and read.exception() is None

    def peer_up(self) -> None:
        """A peer came up (called by the cluster layer): supervisors waiting to retry a
        module fetch retry now, instead of at the end of their backoff."""
        self._peer_up.set()
        self._peer_up = asyncio.Event()  # the waiters hold the set one

    async def _reconcile_quietly(self, name: str) -> None:
        await self._reconcile_once(name)

    def _app_lock(self, name: str) -> asyncio.Lock:
        lock = self._app_locks.get(name)
        if lock is None:
            lock = self._app_locks[name] = asyncio.Lock()
        return lock

    async def _reconcile_once(self, name: str) -> bool:
        """Make this node run the record of ``name``; False if its module cannot be had now."""
        # A deploy on this node holds the app's lock until it has installed what it wrote,
        # so the supervisor its write wakes finds the record running and does nothing.
        async with self._app_lock(name):
            await self._keep_displaced(name)
            return await self._reconcile_locked(name)

    async def _keep_displaced(self, name: str) -> None:
        """If the record this node last had for ``name`` was displaced by a concurrent write
        (one that did not know of it), put it into the app's history (``Registry.keep``): a
        deploy that was answered 201 can always be rolled back to, wherever it lost."""
        last = self._last_record.get(name)
        current = self.registry.get(name)
        if last is not None and current is not None and last != current:
            try:
                await asyncio.to_thread(self.registry.keep, last)
            except crdt.Error as exc:  # e.g. a failed fsync: logged, the app runs on
                log.error("cannot keep %s v%d in its history: %s", name, last.version, exc)
            current = self.registry.get(name)
        self._last_record[name] = current

    async def _reconcile_locked(self, name: str) -> bool:
        record = self.registry.get(name)
        loaded = self._apps.get(name)
        if record is None:
            self._waiting.discard(name)
            if loaded is not None:
                del self._apps[name]
                loaded.pool.close()
                loaded.unloaded = True
                self.metrics.forget_app(name)
                self._log_limiter.forget(name)
                log.info("unloaded %s (undeployed)", name)
                self._apps_changed()
                for waiting in list(self._waiting):  # a slot is free: the first to come runs
                    self._spawn(self._reconcile_quietly(waiting))
            return True
        if self._over_max_apps(name):
            return True
        if loaded is not None and loaded.record == record:
            return True
        if loaded is not None and _same_version(loaded.record, record):
            loaded.record = record  # only the history changed (Registry.keep): no reload
            return True
        try:
            compiled = await self._module_for(record)
        except (OSError, ModuleError, FetchError) as exc:
            log.warning("cannot load %s v%d yet: %s", name, record.version, exc)
            return False
        if self._over_max_apps(name):  # checked again: other apps may have come meanwhile
            return True
        if self.registry.is_current(record):  # still current after the awaits
            self._install(record, compiled)
            log.info("running %s v%d (%s)", name, record.version, record.sha256[:12])
        return True

    def _over_max_apps(self, name: str) -> bool:
        """Whether ``name``, not running here, must wait for --max-apps (records from peers
        are not checked against it as deploys on this node are)."""
        if name in self._apps or len(self._apps) < self.config.max_apps:
            self._waiting.discard(name)
            return False
        if name not in self._waiting:
            self._waiting.add(name)
            log.warning(
                "not running %s: this node runs %d apps already (--max-apps)",
                name,
                self.config.max_apps,
            )
        return True

    async def _module_for(self, record: AppRecord) -> CompiledModule:
        loaded = self._apps.get(record.name)
        if loaded is not None and loaded.record.sha256 == record.sha256:
            return loaded.pool.compiled
        try:
            # Refreshes the blob's mtime: a collection that read the references before this
            # record came finds the blob young and keeps it.
            wasm = await asyncio.to_thread(self.storage.load_blob, record.sha256)
        except NotFound:  # not here, or collected just now: fetch it like any missing module
            wasm = await self._fetch(record)
        return await self._load_module(record.sha256, wasm)

    async def _fetch(self, record: AppRecord) -> bytes:
        """The module of ``record`` from a peer, checked and stored. Raises FetchError."""
        if self.fetch_module is None:
            raise FetchError(f"module {record.sha256[:12]} is not on this node")
        wasm = await self.fetch_module(record)
        if hashlib.sha256(wasm).hexdigest() != record.sha256:
            raise FetchError(f"module fetched for {record.name} does not match its sha256")
        await asyncio.to_thread(self.storage.put_blob, wasm)
        self.metrics.blob_fetches.inc()
        return wasm

    def _apps_changed(self) -> None:
        for callback in self.on_apps_changed:
            callback()

    # -- modules ----------------------------------------------------------------------------

    @property
    def engine(self) -> Engine:
        assert self._engine is not None, "use the node inside 'async with'"
        return self._engine

    async def _load_module(self, sha256: str, wasm: bytes) -> CompiledModule:
        """Compile ``wasm``, through the on-disk cache of compiled modules."""
        cache = self.storage.compiled_path(sha256, WASMTIME_VERSION)
        engine = self.engine
        if cache.exists():
            try:
                data = await asyncio.to_thread(cache.read_bytes)
                compiled = await asyncio.to_thread(engine.deserialize, data, wasm)
                self.metrics.compile_cache.labels("hit").inc()
                return compiled
            except (OSError, ModuleError) as exc:
                log.warning("dropping cached module %s: %s", cache.name, exc)
        compiled = await asyncio.to_thread(engine.compile, wasm)
        self.metrics.compile_cache.labels("miss").inc()
        try:
            await asyncio.to_thread(atomic_write, cache, compiled.serialize())
        except OSError as exc:
            log.warning("cannot cache compiled module %s: %s", cache.name, exc)
        return compiled

    def _install(self, record: AppRecord, compiled: CompiledModule) -> None:
        """Make ``record`` the version served; the old pool drains as its calls finish.

        Idempotent: a deploy and the app's supervisor may both install the same record.
        """
        current = self._apps.get(record.name)
        if current is not None and current.record == record:
            return
        assert self._scheduler is not None
        assert self._host is not None
        host = self._host.handler(record, 0)
        pool = AppPool(
            self.engine,
            self._scheduler,
            compiled,
            self._cap,
            pool_size=self.config.pool_size,
            max_memory=self.config.max_memory_mib * MIB,
            # Instance initialisation (_initialize, _start, wapc_init) gets a call's budget.
            init_budget=self.config.call_timeout,
            host=host,
            tag=(record.name, record.version),
        )
        old = self._apps.get(record.name)
        self._apps[record.name] = LoadedApp(record, pool, host, self.metrics)
        if old is not None:
            old.pool.close()
        self.metrics.reloads.labels(record.name).inc()
        self._apps_changed()

    # -- the API ----------------------------------------------------------------------------

    async def deploy(
        self, name: str, wasm: bytes, capabilities: Sequence[str] | None = None
    ) -> AppRecord:
        """Validate, store and load a module; every node of the cluster follows.

        Raises InvalidModule, BadRequest, PayloadTooLarge.
        """
        if len(wasm) > self.config.max_upload_mib * MIB:
            raise PayloadTooLarge(f"module is over the {self.config.max_upload_mib} MiB limit")
        if not wasm:
            raise InvalidModule("empty upload: no module bytes")
        caps = _capabilities(capabilities)
        if self.registry.get(name) is None and len(self.registry.records()) >= self.config.max_apps:
            raise BadRequest(
                f"this cluster already has {self.config.max_apps} apps (--max-apps); undeploy one"
            )
        sha256 = hashlib.sha256(wasm).hexdigest()
        try:
            compiled = await self._load_module(sha256, wasm)
            # Refused here rather than failing every call: the module cannot start under this
            # node's limits (nodes with lower limits than the deploying one fail its calls).
            compiled.check_limits(self.config.max_memory_mib * MIB)
        except ModuleError as exc:
            raise InvalidModule(str(exc)) from None
        async with self._deploy_lock, self._app_lock(name):
            # The module is on disk before the record that names it is written anywhere.
            await asyncio.to_thread(self.storage.put_blob, wasm)
            record = await asyncio.to_thread(self.registry.deploy, name, sha256, len(wasm), caps)
            if self.registry.is_current(record) and not self._over_max_apps(name):
                self._install(record, compiled)
        self.metrics.deploys.inc()
        log.info("deployed %s v%d (%s, %d bytes)", name, record.version, sha256[:12], len(wasm))
        return record

    async def rollback(self, name: str) -> AppRecord:
        """Make the previous version of ``name`` current again, cluster-wide.

        Raises UnknownApp, or BadRequest when there is no previous version.
        """
        async with self._deploy_lock:
            if self.registry.get(name) is None:
                raise UnknownApp(name)
            record = await asyncio.to_thread(self.registry.rollback, name)
            if record is None:
                raise BadRequest(f"app {name!r} has no previous version to roll back to")
        await self._reconcile_once(name)
        log.info("rolled %s back to %s as v%d", name, record.sha256[:12], record.version)
        return record

    async def call(self, app: str, op: str, payload: bytes) -> bytes:
        """Run one operation.

        Raises UnknownApp, GuestError, CallTimeout, Overloaded, PayloadTooLarge.
        """
        return await self._call(app, op, payload, 0)

    async def _call_from_guest(self, app: str, op: str, payload: bytes, depth: int) -> bytes:
        return await self._call(app, op, payload, depth)

    async def _call(self, app: str, op: str, payload: bytes, depth: int) -> bytes:
        if len(payload) > self.config.max_payload_mib * MIB:
            raise PayloadTooLarge(f"payload is over the {self.config.max_payload_mib} MiB limit")
        loaded = self._apps.get(app)
        if loaded is None:
            raise UnknownApp(app)
        assert self._scheduler is not None
        pool = loaded.pool
        started = time.perf_counter()
        deadline = asyncio.get_running_loop().time() + self.config.call_wall_timeout
        outcome = "error"
        try:
            try:
                inst = await pool.acquire(deadline)
            except WasmTrap as exc:
                raise GuestError(exc.describe("instance failed to start")) from None
            try:
                fut = inst.guest_call(op.encode(), payload)
                host = loaded.host if depth == 0 else self._host_for(loaded.record, depth)
                try:
                    budget = self.config.call_timeout
                    result = await self._scheduler.run(fut, budget, host, deadline)
                except WasmTrap as exc:
                    raise GuestError(exc.describe("guest trapped")) from None
            finally:
                pool.release(inst)
            inv = fut.invocation
            if result != 1:
                text = inv.guest_error.decode("utf-8", "replace") if inv.guest_error else ""
                raise GuestError(text or "no error message set")
            response = inv.response or b""
            if len(response) > self.config.max_payload_mib * MIB:
                raise GuestError(
                    f"response of {len(response)} bytes is over the"
                    f" {self.config.max_payload_mib} MiB limit"
                )
            outcome = "ok"
            return response
        except CallTimeout:
            outcome = "timeout"
            raise
        finally:
            loaded.observe(op, outcome, time.perf_counter() - started)

    def _host_for(self, record: AppRecord, depth: int) -> HostHandler:
        assert self._host is not None
        return self._host.handler(record, depth)

    def apps(self) -> list[AppRecord]:
        """Every deployed app (cluster-wide, as this node's store knows them)."""
        return self.registry.records()

    def app(self, name: str) -> AppRecord:
        """Raises UnknownApp."""
        record = self.registry.get(name)
        if record is None:
            raise UnknownApp(name)
        return record

    def running(self) -> dict[str, int]:
        """The version of each app this node runs now."""
        return {name: app.record.version for name, app in sorted(self._apps.items())}

    async def undeploy(self, name: str) -> None:
        """Undeploy ``name`` cluster-wide. Raises UnknownApp.

        The record and its history go, so its modules are collected after the grace period
        unless another app's record uses them.
        """
        async with self._deploy_lock:
            if not await asyncio.to_thread(self.registry.undeploy, name):
                raise UnknownApp(name)
        await self._reconcile_once(name)
        log.info("undeployed %s", name)

    # -- garbage collection -----------------------------------------------------------------

    def referenced_modules(self) -> set[str]:
        """The sha256 of every module this node must keep: those of each app record in the
        replica (current and history) and of every version it runs now."""
        refs = {app.record.sha256 for app in self._apps.values()}
        for record in self.registry.records():
            refs.add(record.sha256)
            refs.update(h.sha256 for h in record.history)
        return refs

    async def collect_garbage(self) -> Collected:
        """Remove the module blobs no record references and that are older than --gc-grace,
        their compiled modules, and compiled modules of another wasmtime version.

        The references are read on the loop, then the files are worked on in a thread. A
        record written or received after that read names a blob stored or loaded since (so
        young, and kept: ``Storage.collect``) or one this node has not loaded yet, which, if
        collected, is fetched from a peer like any missing module. Raises OSError if a
        directory cannot be listed.
        """
        referenced = self.referenced_modules()
        older_than = time.time() - self.config.gc_grace
        result = await asyncio.to_thread(
            self.storage.collect,
            referenced,
            older_than=older_than,
            runtime=WASMTIME_VERSION,
        )
        m = self.metrics
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
        for callback in self.on_collected:
            callback(result)
        return result

    async def _collector(self) -> None:
        interval = self.config.gc_interval
        await asyncio.sleep(min(GC_FIRST_DELAY, interval))
        while True:
            try:
                await self.collect_garbage()
            except Exception:
                # Housekeeping: a failed collection must not take the node down with it.
                log.exception("garbage collection failed")
            await asyncio.sleep(interval)

    async def _expirer(self) -> None:
        """Free instances idle for longer than --idle-timeout, checking twice per timeout (at
        most every 30 s): an instance is freed between 1 and 1.5 timeouts after its last use."""
        timeout = self.config.idle_timeout
        while True:
            await asyncio.sleep(min(timeout / 2, 30.0))
            self._cap.expire(timeout)

    def blob_path(self, sha256: str) -> Path:
        """Path of a stored module. Raises NotFound."""
        path = self.storage.blob_path(sha256)
        if path is None:
            raise NotFound(f"no module with sha256 {sha256}")
        return path

    def status(self) -> dict[str, Any]:
        """JSON-ready: this node, its views, the members it knows (the graph), the apps."""
        me = {"id": self.id, "name": self.name, "url": self.url}
        if self.cluster is not None:
            active, passive, members = self.cluster.views()
        else:
            active, passive = [], []
            members = [{**me, "active": [], "apps": self.running()}]
        apps = []
        for record in self.registry.records():
            loaded = self._apps.get(record.name)
            apps.append(
                {
                    **record.to_json(history=False),
                    "history": [h.version for h in record.history],
                    "running": loaded.record.version if loaded else None,
                    "versions": {
                        m["name"]: m["apps"][record.name]
                        for m in members
                        if record.name in m.get("apps", {})
                    },
                    "pool": {
                        "idle": loaded.pool.idle if loaded else 0,
                        "busy": loaded.pool.busy if loaded else 0,
                    },
                }
            )
        return {
            "node": me,
            "active": active,
            "passive": passive,
            "members": members,
            "apps": apps,
            "instances": {"live": self._cap.live, "limit": self._cap.limit},
            "uptime": time.time() - self.started_at,
        }

    def metrics_text(self) -> bytes:
        """Prometheus text exposition."""
        self.metrics.instances_live.set(self._cap.live)
        if self.cluster is not None:
            active, passive, _ = self.cluster.views()
            self.metrics.view_size.labels("active").set(len(active))
            self.metrics.view_size.labels("passive").set(len(passive))
        for name, app in self._apps.items():
            self.metrics.pool_idle.labels(name).set(app.pool.idle)
            if self._kv_quota is not None:
                keys, size = self._kv_quota.usage(name)
                self.metrics.kv_keys.labels(name).set(keys)
                self.metrics.kv_bytes.labels(name).set(size)
        return self.metrics.render()

    def _guest_log(self, inst: Instance, line: bytes) -> None:
        """Log a guest's console line (on the thread running the guest): at most
        ``guest_log_line_bytes`` of it, and at most ``--guest-log-rate`` lines a second per app;
        the rest are counted, and reported with the app's next line logged."""
        app, version = inst.tag if isinstance(inst.tag, tuple) else ("?", 0)
        # Series only for apps run here: a line of an app undeployed meanwhile is not counted.
        running = app in self._apps
        admitted, dropped = self._log_limiter.admit(app)
        if not admitted:
            if running:
                self.metrics.guest_log_dropped.labels(app).inc()
            return
        extra = {"app": app, "version": version}
        if dropped:
            guest_log.warning(
                "[%s v%s] %d console lines dropped (over --guest-log-rate %s a second)",
                app,
                version,
                dropped,
                self.config.guest_log_rate,
                extra=extra,
            )
        text, cut = guest_line(line, self.config.guest_log_line_bytes)
        if cut and running:
            self.metrics.guest_log_cut.labels(app).inc()
        guest_log.info("[%s v%s] %s", app, version, text, extra=extra)


def _capabilities(capabilities: Sequence[str] | None) -> tuple[str, ...]:
    if capabilities is None:
        return DEFAULT_CAPABILITIES
    caps = tuple(dict.fromkeys(c.strip() for c in capabilities if c.strip()))
    unknown = [c for c in caps if c not in NAMESPACES]
    if unknown:
        raise BadRequest(
            f"unknown capabilities: {', '.join(unknown)} (known: {', '.join(NAMESPACES)})"
        )
    return caps


def _same_version(a: AppRecord, b: AppRecord) -> bool:
    """Whether two records are one version, whatever their histories."""
    return dataclasses.replace(a, history=(), seen=()) == dataclasses.replace(
        b, history=(), seen=()
    )
