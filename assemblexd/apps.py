"""The apps a node runs: one supervisor per app keeps what runs here equal to its record.

Apps live in the replicated store (``registry.py``), whoever wrote them. A supervisor per app
(:class:`Supervisors`) waits on the app's version counter and, on every change, installs the
record's version (its module from ``modules.py``), swaps the app's warm pool, or unloads it;
``--max-apps`` apps at most run here, the others wait for a free slot.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Callable, Coroutine
from typing import Any

import crdt

from .config import MIB, Config
from .logs import LineLimiter, guest_line
from .metrics import Metrics
from .modules import Modules
from .peers import FetchError
from .records import AppRecord
from .registry import Registry, app_name, counter_key, record_key
from .runtime import (
    AppPool,
    CompiledModule,
    Engine,
    Host,
    HostHandler,
    Instance,
    InstanceCap,
    ModuleError,
    Scheduler,
)

__all__ = ["RETRY_FIRST", "RETRY_MAX", "LoadedApp", "Supervisors"]

# The node's own log lines keep the logger name they always had, whichever part logs them.
log = logging.getLogger("assemblexd.node")
guest_log = logging.getLogger("assemblexd.guest")

RETRY_FIRST = 0.5
RETRY_MAX = 30.0
"""A supervisor that cannot get a module retries after 0.5 s, doubling up to 30 s."""


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


class Supervisors:
    """What this node runs of each app, kept equal to the app's record by its supervisor.

    Args:
        config: the node's limits (``--max-apps``, pool size, memory, call budget).
        registry: the apps in the node's replica.
        modules: where a record's compiled module comes from.
        engine: the engine, scheduler, instance cap and host functions the apps' pools use.
        metrics: the node's metrics (reloads, guest log lines, per-app series).
        spawn: runs a coroutine as a task of the node (cancelled when it stops).
        apps_changed: called after this node starts running another version of an app, or
            stops one (the node's peers are told: ``Peers.apps_changed``).
    """

    def __init__(
        self,
        config: Config,
        registry: Registry,
        modules: Modules,
        *,
        engine: Engine,
        scheduler: Scheduler,
        cap: InstanceCap[Instance],
        host: Host,
        metrics: Metrics,
        spawn: Callable[[Coroutine[Any, Any, None]], None],
        apps_changed: Callable[[], None],
    ) -> None:
        self._config = config
        self._registry = registry
        self._replica = registry.replica
        self._modules = modules
        self._engine = engine
        self._scheduler = scheduler
        self._cap = cap
        self._host = host
        self._metrics = metrics
        self._spawn = spawn
        self._apps_changed = apps_changed
        self.loaded: dict[str, LoadedApp] = {}
        """The version of each app this node runs now."""
        self._last_record: dict[str, AppRecord | None] = {}
        """The record of each app as this node's last reconcile found it."""
        self._waiting: set[str] = set()
        """Apps not run for --max-apps, run when another app is undeployed."""
        self._peer_up = asyncio.Event()
        self._app_locks: dict[str, asyncio.Lock] = {}
        self._supervised: set[str] = set()
        self._log_limiter = LineLimiter(config.guest_log_rate, 10 * config.guest_log_rate)

    def running(self) -> dict[str, int]:
        """The version of each app this node runs now."""
        return {name: app.record.version for name, app in sorted(self.loaded.items())}

    def modules_in_use(self) -> set[str]:
        """The sha256 of every version this node runs now."""
        return {app.record.sha256 for app in self.loaded.values()}

    def close(self) -> None:
        """Close every pool (the node stops)."""
        for app in self.loaded.values():
            app.pool.close()
        self.loaded.clear()

    # -- supervisors ------------------------------------------------------------------------

    async def watch(self) -> None:
        """Start a supervisor for every app the store knows of, now and as they appear."""
        async with self._replica.changes() as changes:
            for name in self._registry.names():
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
            seen = self._registry.version(name)
            backoff = RETRY_FIRST
            while not await self.reconcile_once(name):
                # The module could not be had yet: try again later, at once when a peer
                # comes up (it may have it), and go on with the newer record on news.
                if await self._wait_for_news(key, seen, backoff):
                    break
                backoff = min(backoff * 2, RETRY_MAX)
            await self._replica.read(key, at_least=seen + 1)

    async def _wait_for_news(self, key: str, seen: int, backoff: float) -> bool:
        """Wait until counter ``key`` passes ``seen`` (True), or a peer comes up or
        ``backoff`` seconds pass (False)."""
        read = asyncio.ensure_future(self._replica.read(key, at_least=seen + 1))
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
        """A peer came up: supervisors waiting to retry a module fetch retry now."""
        self._peer_up.set()
        self._peer_up = asyncio.Event()  # the waiters hold the set one

    async def _reconcile_quietly(self, name: str) -> None:
        await self.reconcile_once(name)

    def lock(self, name: str) -> asyncio.Lock:
        """The lock of app ``name``: held while what runs of it changes."""
        lock = self._app_locks.get(name)
        if lock is None:
            lock = self._app_locks[name] = asyncio.Lock()
        return lock

    async def reconcile_once(self, name: str) -> bool:
        """Make this node run the record of ``name``; False if its module cannot be had now."""
        # A deploy on this node holds the app's lock until it has installed what it wrote,
        # so the supervisor its write wakes finds the record running and does nothing.
        async with self.lock(name):
            await self._keep_displaced(name)
            return await self._reconcile_locked(name)

    async def _keep_displaced(self, name: str) -> None:
        """If the record this node last had for ``name`` was displaced by a concurrent write
        (one that did not know of it), put it into the app's history (``Registry.keep``): a
        deploy that was answered 201 can always be rolled back to, wherever it lost."""
        last = self._last_record.get(name)
        current = self._registry.get(name)
        if last is not None and current is not None and last != current:
            try:
                await asyncio.to_thread(self._registry.keep, last)
            except crdt.Error as exc:  # e.g. a failed fsync: logged, the app runs on
                log.error("cannot keep %s v%d in its history: %s", name, last.version, exc)
            current = self._registry.get(name)
        self._last_record[name] = current

    async def _reconcile_locked(self, name: str) -> bool:
        record = self._registry.get(name)
        loaded = self.loaded.get(name)
        if record is None:
            self._waiting.discard(name)
            if loaded is not None:
                del self.loaded[name]
                loaded.pool.close()
                loaded.unloaded = True
                self._metrics.forget_app(name)
                self._log_limiter.forget(name)
                log.info("unloaded %s (undeployed)", name)
                self._apps_changed()
                for waiting in list(self._waiting):  # a slot is free: the first to come runs
                    self._spawn(self._reconcile_quietly(waiting))
            return True
        if self.over_max_apps(name):
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
        if self.over_max_apps(name):  # checked again: other apps may have come meanwhile
            return True
        if self._registry.is_current(record):  # still current after the awaits
            self.install(record, compiled)
            log.info("running %s v%d (%s)", name, record.version, record.sha256[:12])
        return True

    def over_max_apps(self, name: str) -> bool:
        """Whether ``name``, not running here, must wait for --max-apps (records from peers
        are not checked against it as deploys on this node are)."""
        if name in self.loaded or len(self.loaded) < self._config.max_apps:
            self._waiting.discard(name)
            return False
        if name not in self._waiting:
            self._waiting.add(name)
            log.warning(
                "not running %s: this node runs %d apps already (--max-apps)",
                name,
                self._config.max_apps,
            )
        return True

    async def _module_for(self, record: AppRecord) -> CompiledModule:
        loaded = self.loaded.get(record.name)
        if loaded is not None and loaded.record.sha256 == record.sha256:
            return loaded.pool.compiled
        return await self._modules.module_for(record)

    def install(self, record: AppRecord, compiled: CompiledModule) -> None:
        """Make ``record`` the version served; the old pool drains as its calls finish.

        Idempotent: a deploy and the app's supervisor may both install the same record.
        """
        current = self.loaded.get(record.name)
        if current is not None and current.record == record:
            return
        host = self._host.handler(record, 0)
        pool = AppPool(
            self._engine,
            self._scheduler,
            compiled,
            self._cap,
            pool_size=self._config.pool_size,
            max_memory=self._config.max_memory_mib * MIB,
            # Instance initialisation (_initialize, _start, wapc_init) gets a call's budget.
            init_budget=self._config.call_timeout,
            host=host,
            tag=(record.name, record.version),
        )
        old = self.loaded.get(record.name)
        self.loaded[record.name] = LoadedApp(record, pool, host, self._metrics)
        if old is not None:
            old.pool.close()
        self._metrics.reloads.labels(record.name).inc()
        self._apps_changed()

    # -- guest console ----------------------------------------------------------------------

    def guest_log(self, inst: Instance, line: bytes) -> None:
        """Log a guest's console line (on the thread running the guest): at most
        ``guest_log_line_bytes`` of it, and at most ``--guest-log-rate`` lines a second per app;
        the rest are counted, and reported with the app's next line logged."""
        app, version = inst.tag if isinstance(inst.tag, tuple) else ("?", 0)
        # Series only for apps run here: a line of an app undeployed meanwhile is not counted.
        running = app in self.loaded
        admitted, dropped = self._log_limiter.admit(app)
        if not admitted:
            if running:
                self._metrics.guest_log_dropped.labels(app).inc()
            return
        extra = {"app": app, "version": version}
        if dropped:
            guest_log.warning(
                "[%s v%s] %d console lines dropped (over --guest-log-rate %s a second)",
                app,
                version,
                dropped,
                self._config.guest_log_rate,
                extra=extra,
            )
        text, cut = guest_line(line, self._config.guest_log_line_bytes)
        if cut and running:
            self._metrics.guest_log_cut.labels(app).inc()
        guest_log.info("[%s v%s] %s", app, version, text, extra=extra)


def _same_version(a: AppRecord, b: AppRecord) -> bool:
    """Whether two records are one version, whatever their histories."""
    return dataclasses.replace(a, history=(), seen=()) == dataclasses.replace(
        b, history=(), seen=()
    )
