"""Pools and the node-wide instance cap, on fake instances (no wasmtime), driven by the real
scheduler: reuse, the cap and its eviction order, expiry, init order and failures."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable
from types import SimpleNamespace

import pytest
from runtime_fakes import FakeEngine, FakeInstance, FakeModule, Spin

from assemblexd.runtime import pool as pool_module
from assemblexd.runtime.errors import Overloaded, WasmTrap
from assemblexd.runtime.pool import AppPool, InstanceCap
from assemblexd.runtime.scheduler import Scheduler


def no_host(binding: str, namespace: str, operation: str, payload: bytes) -> Awaitable[bytes]:
    raise AssertionError("no host call expected")


@pytest.fixture
async def engine() -> FakeEngine:
    return FakeEngine()


@pytest.fixture
async def scheduler(engine: FakeEngine) -> AsyncIterator[Scheduler]:
    s = Scheduler(engine, workers=1)
    yield s
    s.close()


Pool = AppPool[FakeInstance, FakeModule]


def make_pool(
    engine: FakeEngine,
    scheduler: Scheduler,
    cap: InstanceCap[FakeInstance],
    *,
    pool_size: int = 2,
    module: FakeModule | None = None,
    tag: object = "app",
) -> Pool:
    return AppPool(
        engine,
        scheduler,
        module or FakeModule(),
        cap,
        pool_size=pool_size,
        max_memory=1 << 20,
        init_budget=1.0,
        host=no_host,
        tag=tag,
    )


async def test_instances_are_reused_up_to_the_pool_size(
    engine: FakeEngine, scheduler: Scheduler
) -> None:
    cap: InstanceCap[FakeInstance] = InstanceCap(10)
    pool = make_pool(engine, scheduler, cap, pool_size=2)
    a, b, c = [await pool.acquire() for _ in range(3)]
    assert (pool.busy, pool.idle, cap.live) == (3, 0, 3)
    assert (a.max_memory, a.tag) == (1 << 20, "app")
    for inst in (a, b, c):
        pool.release(inst)
    assert (pool.busy, pool.idle, cap.live, cap.idle) == (0, 2, 2, 2)
    assert c.closed
    assert not (a.closed)
    assert not (b.closed)
    assert await pool.acquire() is b  # the most recently released first
    assert pool.created == 3


async def test_a_poisoned_instance_is_never_reused(
    engine: FakeEngine, scheduler: Scheduler
) -> None:
    cap: InstanceCap[FakeInstance] = InstanceCap(10)
    pool = make_pool(engine, scheduler, cap)
    inst = await pool.acquire()
    inst.poisoned = True
    pool.release(inst)
    assert inst.closed
    assert (pool.idle, cap.live) == (0, 0)
    assert await pool.acquire() is not inst


async def test_at_the_cap_the_least_recently_used_idle_instance_goes(
    engine: FakeEngine, scheduler: Scheduler
) -> None:
    cap: InstanceCap[FakeInstance] = InstanceCap(2)
    one = make_pool(engine, scheduler, cap, tag="one")
    two = make_pool(engine, scheduler, cap, tag="two")
    three = make_pool(engine, scheduler, cap, tag="three")
    a, b = await one.acquire(), await two.acquire()
    one.release(a)  # a is idle first
    two.release(b)
    c = await three.acquire()  # at the cap: frees a, the one idle longest
    assert a.closed
    assert not b.closed
    assert (one.idle, two.idle, cap.live, cap.evicted) == (0, 1, 2, 1)
    d = await one.acquire()  # frees b
    assert b.closed
    with pytest.raises(Overloaded, match=r"too many live instances \(2\), all busy"):
        await two.acquire()  # every live instance is busy
    assert cap.live == 2
    three.release(c)
    one.release(d)


async def test_warming_never_evicts(engine: FakeEngine, scheduler: Scheduler) -> None:
    cap: InstanceCap[FakeInstance] = InstanceCap(2)
    one = make_pool(engine, scheduler, cap)
    two = make_pool(engine, scheduler, cap, pool_size=4)
    one.release(await one.acquire())
    with pytest.raises(Overloaded):
        await two.warm(4)  # made one, then stopped at the cap rather than free one's
    assert (one.idle, two.idle, cap.live) == (1, 1, 2)


async def test_idle_instances_expire(
    engine: FakeEngine, scheduler: Scheduler, monkeypatch: pytest.MonkeyPatch
) -> None:
    clock = [1000.0]
    monkeypatch.setattr(pool_module, "time", SimpleNamespace(monotonic=lambda: clock[0]))
    cap: InstanceCap[FakeInstance] = InstanceCap(10)
    pool = make_pool(engine, scheduler, cap)
    a, b = await pool.acquire(), await pool.acquire()
    pool.release(a)  # idle since 1000
    clock[0] = 1010.0
    pool.release(b)  # idle since 1010
    assert cap.expire(60, now=1059.0) == 0
    assert cap.expire(60, now=1061.0) == 1
    assert a.closed
    assert not b.closed
    clock[0] = 1071.0
    assert cap.expire(60) == 1  # now is time.monotonic()
    assert b.closed
    assert (pool.idle, cap.live, cap.expired) == (0, 0, 2)


async def test_a_new_instance_is_instantiated_bound_then_initialised_in_order(
    engine: FakeEngine, scheduler: Scheduler
) -> None:
    cap: InstanceCap[FakeInstance] = InstanceCap(10)
    module = FakeModule(("_initialize", "_start", "wapc_init"))
    engine.init_steps["wapc_init"] = [Spin(), Spin()]
    pool = make_pool(engine, scheduler, cap, module=module)
    inst = await pool.acquire()
    assert inst.events == ["instantiate", "bind", "_initialize", "_start", "wapc_init"]
    assert not inst.poisoned


async def test_a_failing_init_frees_the_instance_and_says_which(
    engine: FakeEngine, scheduler: Scheduler
) -> None:
    cap: InstanceCap[FakeInstance] = InstanceCap(10)
    engine.init_traps["wapc_init"] = WasmTrap("wasm trap: unreachable", guest_error="boom")
    pool = make_pool(engine, scheduler, cap, module=FakeModule(("wapc_init",)))
    with pytest.raises(WasmTrap) as info:
        await pool.acquire()
    assert str(info.value) == "wapc_init failed: wasm trap: unreachable"
    assert info.value.guest_error == "boom"
    [inst] = engine.made
    assert inst.closed
    assert (pool.busy, cap.live, pool.created) == (0, 0, 0)


async def test_exit_zero_from_start_is_a_successful_start(
    engine: FakeEngine, scheduler: Scheduler
) -> None:
    cap: InstanceCap[FakeInstance] = InstanceCap(10)
    engine.init_traps["_start"] = WasmTrap("guest exited with code 0", exit_code=0)
    pool = make_pool(engine, scheduler, cap, module=FakeModule(("_start", "wapc_init")))
    inst = await pool.acquire()
    assert inst.events[-2:] == ["_start", "wapc_init"]
    assert not inst.poisoned  # reusable
    engine.init_traps["_start"] = WasmTrap("guest exited with code 3", exit_code=3)
    with pytest.raises(WasmTrap, match="_start failed: guest exited with code 3"):
        await pool.acquire()


async def test_a_closed_pool_frees_its_idle_instances_and_busy_ones_on_release(
    engine: FakeEngine, scheduler: Scheduler
) -> None:
    cap: InstanceCap[FakeInstance] = InstanceCap(10)
    pool = make_pool(engine, scheduler, cap)
    idle, busy = await pool.acquire(), await pool.acquire()
    pool.release(idle)
    pool.close()
    assert idle.closed
    assert not busy.closed
    pool.release(busy)
    assert busy.closed
    assert (cap.live, cap.idle) == (0, 0)
