"""Warm instance pools, one per loaded app version, under one node-wide cap on live instances.

A pool is elastic: :meth:`AppPool.acquire` takes an idle instance or creates one (never waits
for one to be returned, which is what lets a guest call itself through the ``call`` namespace
without deadlock); :meth:`AppPool.release` keeps at most ``pool_size`` idle instances and drops
the rest. An instance that trapped, timed out or was cancelled is poisoned and never reused.
The :class:`InstanceCap` counts every live instance of the node, idle or busy; past it a call
gets :class:`~assemblexd.errors.Overloaded` (503) instead of the node growing without bound.
"""

from __future__ import annotations

from collections import deque
from typing import Any

from ._wasm import CompiledModule, Engine, Instance, WasmTrap
from .errors import Overloaded
from .scheduler import HostHandler, Scheduler

__all__ = ["AppPool", "InstanceCap"]


class InstanceCap:
    """The node-wide count of live instances and its limit."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.live = 0

    def take(self) -> None:
        if self.live >= self.limit:
            raise Overloaded(f"too many live instances ({self.limit}); retry later")
        self.live += 1

    def give_back(self) -> None:
        self.live -= 1


class AppPool:
    """Instances of one compiled module (one app version)."""

    def __init__(
        self,
        engine: Engine,
        scheduler: Scheduler,
        compiled: CompiledModule,
        cap: InstanceCap,
        *,
        pool_size: int,
        max_memory: int,
        init_budget: float,
        host: HostHandler,
        tag: Any = None,
    ) -> None:
        self._engine = engine
        self._scheduler = scheduler
        self.compiled = compiled
        self._cap = cap
        self.pool_size = pool_size
        self._max_memory = max_memory
        self._init_budget = init_budget
        self._host = host
        self.tag = tag
        self._idle: deque[Instance] = deque()
        self.busy = 0
        self.closed = False
        self.created = 0

    @property
    def idle(self) -> int:
        return len(self._idle)

    async def acquire(self, deadline: float | None = None) -> Instance:
        """An idle instance, or a new one. Raises Overloaded, or WasmTrap if init fails.

        ``deadline`` (loop time) bounds the creation of a new instance.
        """
        if self._idle:
            inst = self._idle.pop()
        else:
            inst = await self._create(deadline)
        self.busy += 1
        return inst

    def release(self, inst: Instance) -> None:
        self.busy -= 1
        if inst.poisoned or self.closed or len(self._idle) >= self.pool_size:
            self._destroy(inst)
        else:
            self._idle.append(inst)

    async def warm(self, n: int) -> None:
        """Create instances until ``n`` are idle (or the node-wide cap stops it)."""
        while len(self._idle) < min(n, self.pool_size) and not self.closed:
            self._idle.append(await self._create(None))

    def close(self) -> None:
        """Drop idle instances now; busy ones are dropped when released."""
        self.closed = True
        while self._idle:
            self._destroy(self._idle.pop())

    async def _create(self, deadline: float | None) -> Instance:
        self._cap.take()
        inst = Instance(self._engine, self.compiled, self._max_memory, self.tag)
        try:
            run = self._scheduler.run
            await run(inst.instantiate(), self._init_budget, self._host, deadline)
            inst.bind()
            for name in self.compiled.init_functions:
                await self._run_init(inst, name, deadline)
        except BaseException:
            self._destroy(inst)
            raise
        self.created += 1
        return inst

    async def _run_init(self, inst: Instance, name: str, deadline: float | None) -> None:
        try:
            fut = inst.call_function(name)
            await self._scheduler.run(fut, self._init_budget, self._host, deadline)
        except WasmTrap as exc:
            if name == "_start" and exc.exit_code == 0:
                inst.poisoned = False  # WASI exit(0) from _start is success
                return
            raise WasmTrap(f"{name} failed: {exc}", exc.exit_code, exc.guest_error) from exc

    def _destroy(self, inst: Instance) -> None:
        self._cap.give_back()
        inst.close()
