"""Warm instance pools, one per loaded app version, under one node-wide cap on live instances.

A pool is elastic: :meth:`AppPool.acquire` takes an idle instance or creates one (never waits
for one to be returned, which is what lets a guest call itself through the ``call`` namespace
without deadlock); :meth:`AppPool.release` keeps at most ``pool_size`` idle instances and drops
the rest. An instance that trapped, timed out or was cancelled is poisoned and never reused.

The :class:`InstanceCap` counts every live instance of the node, idle or busy, and knows every
idle one in the order they were last released. A pool that needs a new instance at the cap
frees the least recently used idle instance of the node first (idle instances must not keep
other apps out); only when every live instance is busy does a call get
:class:`~assemblexd.errors.Overloaded` (503). Idle instances also expire: :meth:`InstanceCap.expire`
(run periodically by the node) frees those idle for longer than ``--idle-timeout``.

Pools see instances, modules, the engine and the scheduler through the small protocols below
(``PoolInstance``, ``PoolModule``, ``Instances``, ``Runner``), so that they can be tested with
fakes; the node's are ``_wasm.Instance``, ``_wasm.CompiledModule``, ``_wasm.Engine`` and
``scheduler.Scheduler``.
"""

from __future__ import annotations

import time
from collections import OrderedDict, deque
from typing import Generic, Protocol, TypeVar

from .errors import Overloaded, WasmTrap
from .future import CallFuture
from .scheduler import HostHandler

__all__ = ["AppPool", "InstanceCap", "Instances", "PoolInstance", "PoolModule", "Runner"]


class PoolInstance(Protocol):
    """An instance as a pool uses it (``_wasm.Instance``)."""

    poisoned: bool
    """Set when a run on it did not end normally: it is freed, never reused."""

    def instantiate(self) -> CallFuture:
        """Start instantiating; after it finishes, :meth:`bind`."""
        ...

    def bind(self) -> None: ...

    def call_function(self, name: str) -> CallFuture:
        """Start a call of the exported ``() -> ()`` function ``name`` (an init function)."""
        ...

    def close(self) -> None:
        """Free it (when the run still alive on it, if any, is deleted)."""
        ...


class PoolModule(Protocol):
    """A compiled module as a pool uses it (``_wasm.CompiledModule``)."""

    @property
    def init_functions(self) -> tuple[str, ...]:
        """The exported init functions to run on each new instance, in order."""
        ...


Inst = TypeVar("Inst", bound=PoolInstance)
Mod = TypeVar("Mod", bound=PoolModule)
_I_co = TypeVar("_I_co", bound=PoolInstance, covariant=True)
_I_contra = TypeVar("_I_contra", bound=PoolInstance, contravariant=True)
_M_contra = TypeVar("_M_contra", bound=PoolModule, contravariant=True)


class Instances(Protocol[_M_contra, _I_co]):
    """What makes instances (``_wasm.Engine``)."""

    def new_instance(self, compiled: _M_contra, max_memory: int, tag: object) -> _I_co:
        """A new instance of ``compiled`` in a store of its own, not yet instantiated."""
        ...


class Runner(Protocol):
    """What runs a call future to its end (``scheduler.Scheduler``)."""

    async def run(
        self, fut: CallFuture, budget: float, host: HostHandler, deadline: float | None = None
    ) -> int: ...


class _Evicts(Protocol[_I_contra]):
    def _evicted(self, inst: _I_contra) -> None: ...


class InstanceCap(Generic[Inst]):
    """The node-wide count of live instances and its limit, and the node's idle instances
    from least to most recently used."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.live = 0
        self.evicted = 0
        """Idle instances freed to make room for another pool's new instance, so far."""
        self.expired = 0
        """Idle instances freed by :meth:`expire`, so far."""
        self._idle: OrderedDict[Inst, tuple[_Evicts[Inst], float]] = OrderedDict()

    def take(self, *, evict: bool = True) -> None:
        """Count one more live instance. At the limit, free the least recently used idle
        instance first (if ``evict``); raises Overloaded when there is none to free."""
        if self.live >= self.limit and evict and self._idle:
            inst, (pool, _) = self._idle.popitem(last=False)
            pool._evicted(inst)
            self.evicted += 1
        if self.live >= self.limit:
            raise Overloaded(f"too many live instances ({self.limit}), all busy; retry later")
        self.live += 1

    def give_back(self) -> None:
        self.live -= 1

    def parked(self, inst: Inst, pool: _Evicts[Inst]) -> None:
        """``inst`` went idle in ``pool`` just now."""
        self._idle[inst] = (pool, time.monotonic())

    def unparked(self, inst: Inst) -> None:
        """``inst`` is no longer idle (taken for a call, or freed)."""
        self._idle.pop(inst, None)

    @property
    def idle(self) -> int:
        """Idle instances of the node, all pools."""
        return len(self._idle)

    def expire(self, idle_for: float, now: float | None = None) -> int:
        """Free the instances idle for longer than ``idle_for`` seconds; returns how many.

        ``now`` is ``time.monotonic()`` unless given (tests).
        """
        cutoff = (time.monotonic() if now is None else now) - idle_for
        freed = 0
        while self._idle:
            inst, (pool, since) = next(iter(self._idle.items()))
            if since > cutoff:
                break  # the rest were released later still
            del self._idle[inst]
            pool._evicted(inst)
            freed += 1
        self.expired += freed
        return freed


class AppPool(Generic[Inst, Mod]):
    """Instances of one compiled module (one app version)."""

    def __init__(
        self,
        engine: Instances[Mod, Inst],
        scheduler: Runner,
        compiled: Mod,
        cap: InstanceCap[Inst],
        *,
        pool_size: int,
        max_memory: int,
        init_budget: float,
        host: HostHandler,
        tag: object = None,
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
        self._idle: deque[Inst] = deque()
        self.busy = 0
        self.closed = False
        self.created = 0

    @property
    def idle(self) -> int:
        return len(self._idle)

    async def acquire(self, deadline: float | None = None) -> Inst:
        """An idle instance, or a new one. Raises Overloaded, or WasmTrap if init fails.

        ``deadline`` (loop time) bounds the creation of a new instance.
        """
        if self._idle:
            inst = self._idle.pop()
            self._cap.unparked(inst)
        else:
            inst = await self._create(deadline, evict=True)
        self.busy += 1
        return inst

    def release(self, inst: Inst) -> None:
        self.busy -= 1
        if inst.poisoned or self.closed or len(self._idle) >= self.pool_size:
            self._destroy(inst)
        else:
            self._park(inst)

    def discard(self, inst: Inst) -> None:
        """Free an acquired instance instead of giving it back: an actor's instance holds
        that actor's memory, which no other call may see."""
        self.busy -= 1
        self._destroy(inst)

    async def warm(self, n: int) -> None:
        """Create instances until ``n`` are idle (or the node-wide cap stops it: warming
        never frees other pools' idle instances)."""
        while len(self._idle) < min(n, self.pool_size) and not self.closed:
            self._park(await self._create(None, evict=False))

    def close(self) -> None:
        """Drop idle instances now; busy ones are dropped when released."""
        self.closed = True
        while self._idle:
            inst = self._idle.pop()
            self._cap.unparked(inst)
            self._destroy(inst)

    def _park(self, inst: Inst) -> None:
        self._idle.append(inst)
        self._cap.parked(inst, self)

    def _evicted(self, inst: Inst) -> None:
        """The cap took ``inst``, idle here, away (to make room, or expired): free it."""
        self._idle.remove(inst)  # at most pool_size long
        self._destroy(inst)

    async def _create(self, deadline: float | None, *, evict: bool) -> Inst:
        self._cap.take(evict=evict)
        inst = self._engine.new_instance(self.compiled, self._max_memory, self.tag)
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

    async def _run_init(self, inst: Inst, name: str, deadline: float | None) -> None:
        try:
            fut = inst.call_function(name)
            await self._scheduler.run(fut, self._init_budget, self._host, deadline)
        except WasmTrap as exc:
            if name == "_start" and exc.exit_code == 0:
                inst.poisoned = False  # WASI exit(0) from _start is success
                return
            raise WasmTrap(f"{name} failed: {exc}", exc.exit_code, exc.guest_error) from exc

    def _destroy(self, inst: Inst) -> None:
        self._cap.give_back()
        inst.close()
