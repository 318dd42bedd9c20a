"""A node: storage, the waPC runtime, host functions and app pools, composed.

The HTTP API and the CLI talk to a :class:`Node` only. A node on its own (this module) keeps its
apps on disk and serves them; the cluster layer will feed it records from the replicated store.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import secrets
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from . import _wasm
from ._wasm import CompiledModule, Engine, Instance, ModuleError, WasmTrap
from .config import MIB, Config
from .errors import (
    BadRequest,
    CallTimeout,
    GuestError,
    InvalidModule,
    NotFound,
    PayloadTooLarge,
    UnknownApp,
)
from .hostfuncs import Host
from .metrics import Metrics
from .pool import AppPool, InstanceCap
from .records import DEFAULT_CAPABILITIES, NAMESPACES, AppRecord
from .scheduler import HostHandler, Scheduler
from .storage import LocalKV, Storage, atomic_write

__all__ = ["Node"]

log = logging.getLogger(__name__)
guest_log = logging.getLogger("assemblexd.guest")

INIT_BUDGET_FACTOR = 1.0
"""Instance initialisation (``_initialize``, ``_start``, ``wapc_init``) gets the call budget."""


@dataclasses.dataclass
class LoadedApp:
    """An app version this node can run now."""

    record: AppRecord
    pool: AppPool
    host: HostHandler
    """Host functions bound to this app, for calls at depth 0."""
    metrics: Metrics

    def observe(self, outcome: str, seconds: float) -> None:
        self.metrics.observe_call(self.record.name, outcome, seconds)


class Node:
    """One assemblexd node. Use as ``async with Node(config) as node:``."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.storage = Storage(Path(config.data_dir))
        self.id = self._node_id()
        self.name = config.node_name
        self.url = config.url
        """The URL peers and clients reach this node at (the server sets the real port)."""
        self.metrics = Metrics()
        self._apps: dict[str, LoadedApp] = {}
        self._deploy_lock = asyncio.Lock()
        self._cap = InstanceCap(config.max_instances)
        self._engine: Engine | None = None
        self._scheduler: Scheduler | None = None
        self._kv: LocalKV | None = None
        self._host: Host | None = None
        self.started_at = time.time()

    # -- lifecycle --------------------------------------------------------------------------

    async def __aenter__(self) -> Node:
        self._engine = Engine(tick=self.config.epoch_tick_ms / 1000)
        tick = self.config.epoch_tick_ms / 1000
        self._scheduler = Scheduler(self._engine, workers=self.config.cpu_workers, loop_slice=tick)
        self._kv = self.storage.open_kv()
        self._host = Host(
            self._kv,
            self._call_from_guest,
            dict(self.config.redis_urls),
            self.config.max_call_depth,
            on_host_call=self.metrics.host_call,
        )
        _wasm.set_log_sink(self._guest_log)
        for name, record in sorted(self.storage.load_apps().items()):
            try:
                wasm = self.storage.read_blob(record.sha256)
                compiled = await self._load_module(record.sha256, wasm)
            except (OSError, ModuleError) as exc:
                log.error("cannot load app %s v%d: %s", name, record.version, exc)
                continue
            self._install(record, compiled)
            log.info("loaded app %s v%d (%s)", name, record.version, record.sha256[:12])
        return self

    async def __aexit__(self, *exc: object) -> None:
        for app in self._apps.values():
            app.pool.close()
        self._apps.clear()
        if self._host is not None:
            await self._host.close()
        if self._scheduler is not None:
            self._scheduler.close()
        if self._engine is not None:
            self._engine.close()
        if self._kv is not None:
            self._kv.close()

    def _node_id(self) -> str:
        path = Path(self.config.data_dir) / "node_id"
        try:
            return path.read_text().strip()
        except FileNotFoundError:
            node_id = secrets.token_hex(8)
            atomic_write(path, node_id.encode())
            return node_id

    # -- modules ----------------------------------------------------------------------------

    @property
    def engine(self) -> Engine:
        assert self._engine is not None, "use the node inside 'async with'"
        return self._engine

    async def _load_module(self, sha256: str, wasm: bytes) -> CompiledModule:
        """Compile ``wasm``, through the on-disk cache of compiled modules."""
        cache = self.storage.compiled_dir / f"{sha256}-wasmtime{_wasm.WASMTIME_VERSION}.cwasm"
        engine = self.engine
        if cache.exists():
            try:
                data = await asyncio.to_thread(cache.read_bytes)
                compiled = await asyncio.to_thread(engine.deserialize, data)
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
        """Make ``record`` the version served; the old pool drains as its calls finish."""
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
            init_budget=self.config.call_timeout * INIT_BUDGET_FACTOR,
            host=host,
            tag=(record.name, record.version),
        )
        old = self._apps.get(record.name)
        self._apps[record.name] = LoadedApp(record, pool, host, self.metrics)
        if old is not None:
            old.pool.close()

    # -- the API ----------------------------------------------------------------------------

    async def deploy(
        self, name: str, wasm: bytes, capabilities: Sequence[str] | None = None
    ) -> AppRecord:
        """Validate, store and load a module. Raises InvalidModule, BadRequest, PayloadTooLarge."""
        if len(wasm) > self.config.max_upload_mib * MIB:
            raise PayloadTooLarge(f"module is over the {self.config.max_upload_mib} MiB limit")
        if not wasm:
            raise InvalidModule("empty upload: no module bytes")
        caps = _capabilities(capabilities)
        import hashlib

        sha256 = hashlib.sha256(wasm).hexdigest()
        try:
            compiled = await self._load_module(sha256, wasm)
        except ModuleError as exc:
            raise InvalidModule(str(exc)) from None
        async with self._deploy_lock:
            await asyncio.to_thread(self.storage.put_blob, wasm)
            current = self._apps.get(name)
            stored = self.storage.load_apps().get(name) if current is None else None
            previous = current.record.version if current else (stored.version if stored else 0)
            record = AppRecord(
                name=name,
                version=previous + 1,
                sha256=sha256,
                size=len(wasm),
                deployed_at=time.time(),
                origin=self.name,
                capabilities=caps,
            )
            await asyncio.to_thread(self.storage.save_app, record)
            self._install(record, compiled)
        self.metrics.deploys.inc()
        log.info("deployed %s v%d (%s, %d bytes)", name, record.version, sha256[:12], len(wasm))
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
                raise GuestError(f"instance failed to start: {exc}") from None
            try:
                fut = inst.guest_call(op.encode(), payload)
                host = loaded.host if depth == 0 else self._host_for(loaded.record, depth)
                try:
                    budget = self.config.call_timeout
                    result = await self._scheduler.run(fut, budget, host, deadline)
                except WasmTrap as exc:
                    raise GuestError(f"guest trapped: {exc}") from None
            finally:
                pool.release(inst)
            inv = fut.invocation
            if result != 1:
                text = inv.guest_error.decode("utf-8", "replace") if inv.guest_error else ""
                raise GuestError(text or "no error message set")
            outcome = "ok"
            return inv.response or b""
        except CallTimeout:
            outcome = "timeout"
            raise
        finally:
            loaded.observe(outcome, time.perf_counter() - started)

    def _host_for(self, record: AppRecord, depth: int) -> HostHandler:
        assert self._host is not None
        return self._host.handler(record, depth)

    def apps(self) -> list[AppRecord]:
        return [a.record for a in sorted(self._apps.values(), key=lambda a: a.record.name)]

    def app(self, name: str) -> AppRecord:
        """Raises UnknownApp."""
        loaded = self._apps.get(name)
        if loaded is None:
            raise UnknownApp(name)
        return loaded.record

    async def undeploy(self, name: str) -> None:
        """Raises UnknownApp. The module's bytes stay on disk (content-addressed)."""
        async with self._deploy_lock:
            loaded = self._apps.pop(name, None)
            if loaded is None:
                raise UnknownApp(name)
            await asyncio.to_thread(self.storage.delete_app, name)
            loaded.pool.close()
        log.info("undeployed %s", name)

    def blob_path(self, sha256: str) -> Path:
        """Path of a stored module. Raises NotFound."""
        path = self.storage.blob_path(sha256)
        if path is None:
            raise NotFound(f"no module with sha256 {sha256}")
        return path

    def status(self) -> dict[str, Any]:
        """JSON-ready: node {id, name, url}, active [], passive [], members [self], apps."""
        me = {"id": self.id, "name": self.name, "url": self.url}
        return {
            "node": me,
            "active": [],
            "passive": [],
            "members": [{**me, "active": []}],
            "apps": [
                {
                    "name": a.record.name,
                    "version": a.record.version,
                    "sha256": a.record.sha256,
                    "size": a.record.size,
                    "origin": a.record.origin,
                    "capabilities": list(a.record.capabilities),
                    "versions": {self.name: a.record.version},
                    "pool": {"idle": a.pool.idle, "busy": a.pool.busy},
                }
                for a in sorted(self._apps.values(), key=lambda a: a.record.name)
            ],
            "instances": {"live": self._cap.live, "limit": self._cap.limit},
            "uptime": time.time() - self.started_at,
        }

    def metrics_text(self) -> bytes:
        """Prometheus text exposition."""
        self.metrics.instances_live.set(self._cap.live)
        for name, app in self._apps.items():
            self.metrics.pool_idle.labels(name).set(app.pool.idle)
        return self.metrics.render()

    def _guest_log(self, inst: Instance, line: bytes) -> None:
        app, version = inst.tag if isinstance(inst.tag, tuple) else ("?", 0)
        guest_log.info(
            "[%s v%s] %s",
            app,
            version,
            line.decode("utf-8", "replace"),
            extra={"app": app, "version": version},
        )


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
