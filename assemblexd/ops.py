"""The API's operations on apps: deploy, rollback, undeploy, call, and reading the records."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import time
from collections.abc import Iterator, Sequence

from .apps import LoadedApp, Supervisors
from .config import MIB, Config
from .errors import (
    BadRequest,
    CallTimeout,
    GuestError,
    InvalidModule,
    PayloadTooLarge,
    UnknownApp,
)
from .metrics import Metrics
from .modules import Modules
from .records import DEFAULT_CAPABILITIES, NAMESPACES, AppRecord
from .registry import Registry
from .runtime import Host, HostHandler, Instance, ModuleError, Scheduler, WasmTrap
from .runtime.hostfuncs import ActorHost
from .storage import Storage

__all__ = ["Operations"]

# The node's own log lines keep the logger name they always had, whichever part logs them.
log = logging.getLogger("assemblexd.node")


class Operations:
    """What clients do with apps, on one node; every node of the cluster follows the writes.

    Args:
        config: the node's limits (upload, payload, apps, memory, call budgets).
        storage: where deployed modules are stored.
        registry: the apps in the node's replica.
        supervisors: what this node runs of them.
        modules: compiles deployed modules.
        scheduler: runs calls.
        host: the host functions of calls made by guests (depth > 0).
        metrics: counts deploys.
    """

    def __init__(
        self,
        config: Config,
        storage: Storage,
        registry: Registry,
        supervisors: Supervisors,
        modules: Modules,
        *,
        scheduler: Scheduler,
        host: Host,
        metrics: Metrics,
    ) -> None:
        self._config = config
        self._storage = storage
        self._registry = registry
        self._supervisors = supervisors
        self._modules = modules
        self._scheduler = scheduler
        self._host = host
        self._metrics = metrics
        self._deploy_lock = asyncio.Lock()

    async def deploy(
        self, name: str, wasm: bytes, capabilities: Sequence[str] | None = None
    ) -> AppRecord:
        """Validate, store and load a module; every node of the cluster follows.

        Raises InvalidModule, BadRequest, PayloadTooLarge.
        """
        config, registry = self._config, self._registry
        if len(wasm) > config.max_upload_mib * MIB:
            raise PayloadTooLarge(f"module is over the {config.max_upload_mib} MiB limit")
        if not wasm:
            raise InvalidModule("empty upload: no module bytes")
        caps = _capabilities(capabilities)
        if registry.get(name) is None and len(registry.records()) >= config.max_apps:
            raise BadRequest(
                f"this cluster already has {config.max_apps} apps (--max-apps); undeploy one"
            )
        sha256 = hashlib.sha256(wasm).hexdigest()
        try:
            compiled = await self._modules.load(sha256, wasm)
            # Refused here rather than failing every call: the module cannot start under this
            # node's limits (nodes with lower limits than the deploying one fail its calls).
            compiled.check_limits(config.max_memory_mib * MIB)
        except ModuleError as exc:
            raise InvalidModule(str(exc)) from None
        async with self._deploy_lock, self._supervisors.lock(name):
            # The module is on disk before the record that names it is written anywhere.
            await asyncio.to_thread(self._storage.put_blob, wasm)
            record = await asyncio.to_thread(registry.deploy, name, sha256, len(wasm), caps)
            if registry.is_current(record) and not self._supervisors.over_max_apps(name):
                self._supervisors.install(record, compiled)
        self._metrics.deploys.inc()
        log.info("deployed %s v%d (%s, %d bytes)", name, record.version, sha256[:12], len(wasm))
        return record

    async def rollback(self, name: str) -> AppRecord:
        """Make the previous version of ``name`` current again, cluster-wide.

        Raises UnknownApp, or BadRequest when there is no previous version.
        """
        async with self._deploy_lock:
            if self._registry.get(name) is None:
                raise UnknownApp(name)
            record = await asyncio.to_thread(self._registry.rollback, name)
            if record is None:
                raise BadRequest(f"app {name!r} has no previous version to roll back to")
        await self._supervisors.reconcile_once(name)
        log.info("rolled %s back to %s as v%d", name, record.sha256[:12], record.version)
        return record

    async def undeploy(self, name: str) -> None:
        """Undeploy ``name`` cluster-wide. Raises UnknownApp.

        The record and its history go, so its modules are collected after the grace period
        unless another app's record uses them.
        """
        async with self._deploy_lock:
            if not await asyncio.to_thread(self._registry.undeploy, name):
                raise UnknownApp(name)
        await self._supervisors.reconcile_once(name)
        log.info("undeployed %s", name)

    def apps(self) -> list[AppRecord]:
        """Every deployed app (cluster-wide, as this node's store knows them)."""
        return self._registry.records()

    def app(self, name: str) -> AppRecord:
        """Raises UnknownApp."""
        record = self._registry.get(name)
        if record is None:
            raise UnknownApp(name)
        return record

    async def call(self, app: str, op: str, payload: bytes, depth: int) -> bytes:
        """Run one operation, for a client (``depth`` 0) or a guest's host call.

        Raises UnknownApp, GuestError, CallTimeout, Overloaded, PayloadTooLarge.
        """
        self._check_payload(payload)
        loaded = self._supervisors.loaded.get(app)
        if loaded is None:
            raise UnknownApp(app)
        pool = loaded.pool
        with _observed(loaded, op) as outcome:
            deadline = asyncio.get_running_loop().time() + self._config.call_wall_timeout
            try:
                inst = await pool.acquire(deadline)
            except WasmTrap as exc:
                raise GuestError(exc.describe("instance failed to start")) from None
            try:
                host = loaded.host if depth == 0 else self._host.handler(loaded.record, depth)
                response = await self._run(inst, op, payload, host, deadline)
            finally:
                pool.release(inst)
            outcome.ok()
            return response

    async def call_actor(
        self, loaded: LoadedApp, inst: Instance, op: str, payload: bytes, actor: ActorHost
    ) -> bytes:
        """Run one operation of an actor on its own instance ``inst``, its ``actor`` namespace
        bound to ``actor``. Raises what :meth:`call` raises."""
        self._check_payload(payload)
        with _observed(loaded, op) as outcome:
            deadline = asyncio.get_running_loop().time() + self._config.call_wall_timeout
            host = self._host.handler(loaded.record, 0, actor)
            response = await self._run(inst, op, payload, host, deadline)
            outcome.ok()
            return response

    def _check_payload(self, payload: bytes) -> None:
        limit = self._config.max_payload_mib
        if len(payload) > limit * MIB:
            raise PayloadTooLarge(f"payload is over the {limit} MiB limit")

    async def _run(
        self, inst: Instance, op: str, payload: bytes, host: HostHandler, deadline: float
    ) -> bytes:
        config = self._config
        fut = inst.guest_call(op.encode(), payload)
        try:
            result = await self._scheduler.run(fut, config.call_timeout, host, deadline)
        except WasmTrap as exc:
            raise GuestError(exc.describe("guest trapped")) from None
        inv = fut.invocation
        if result != 1:
            text = inv.guest_error.decode("utf-8", "replace") if inv.guest_error else ""
            raise GuestError(text or "no error message set")
        response = inv.response or b""
        if len(response) > config.max_payload_mib * MIB:
            raise GuestError(
                f"response of {len(response)} bytes is over the {config.max_payload_mib} MiB limit"
            )
        return response


class _Outcome:
    """A call's outcome label for the metrics: ``error`` until the call says otherwise."""

    __slots__ = ("label",)

    def __init__(self) -> None:
        self.label = "error"

    def ok(self) -> None:
        self.label = "ok"


@contextlib.contextmanager
def _observed(loaded: LoadedApp, op: str) -> Iterator[_Outcome]:
    """Count the call and time it (``ok``, ``timeout``, or ``error``)."""
    started = time.perf_counter()
    outcome = _Outcome()
    try:
        yield outcome
    except CallTimeout:
        outcome.label = "timeout"
        raise
    finally:
        loaded.observe(op, outcome.label, time.perf_counter() - started)


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
