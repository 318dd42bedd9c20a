"""The scheduler's decisions, on scripted guests (no wasmtime): where each poll runs, how
host calls and WASI sleeps are served, the limits, and what happens to a run that ends badly."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Awaitable

import pytest
from runtime_fakes import Block, Call, FakeEngine, FakeFuture, Nap, Resumed, Spin

from assemblexd.runtime.errors import CallTimeout, GuestError, HostError, WasmTrap
from assemblexd.runtime.scheduler import Scheduler

LOOP_SLICE = 0.002


@pytest.fixture
async def engine() -> FakeEngine:
    return FakeEngine()


@pytest.fixture
async def scheduler(engine: FakeEngine) -> AsyncIterator[Scheduler]:
    s = Scheduler(engine, workers=2, quantum=0.02, loop_slice=LOOP_SLICE, max_host_calls=50)
    yield s
    s.close()


async def echo(binding: str, namespace: str, operation: str, payload: bytes) -> bytes:
    return payload


def no_host(binding: str, namespace: str, operation: str, payload: bytes) -> Awaitable[bytes]:
    raise AssertionError("no host call expected")


def ended_cleanly(fut: FakeFuture, engine: FakeEngine) -> None:
    assert fut.closed
    assert fut.misuse == []
    assert engine.ticker.running == 0


async def test_a_short_call_runs_on_the_loop_thread_only(
    scheduler: Scheduler, engine: FakeEngine
) -> None:
    fut = FakeFuture([Spin(0.0005)], result=7)
    assert await scheduler.run(fut, 1.0, no_host) == 7
    loop_thread = threading.current_thread().name
    assert fut.polls == [loop_thread, loop_thread]
    assert scheduler.slices == 0
    assert not fut.poisoned
    ended_cleanly(fut, engine)


async def test_a_host_call_is_served_and_the_guest_resumed_with_its_outcome(
    scheduler: Scheduler, engine: FakeEngine
) -> None:
    seen: list[tuple[str, str, str, bytes]] = []

    async def host(binding: str, namespace: str, operation: str, payload: bytes) -> bytes:
        seen.append((binding, namespace, operation, payload))
        assert engine.ticker.running == 0  # a parked guest is not ticked for
        if operation == "fail":
            raise HostError("no such thing")
        return payload.upper()

    fut = FakeFuture([Call("kv", "get", b"key", binding="b"), Call("kv", "fail", b"")])
    assert await scheduler.run(fut, 1.0, host) == 1
    assert seen == [("b", "kv", "get", b"key"), ("", "kv", "fail", b"")]
    assert fut.resumed == [Resumed(True, b"KEY", False), Resumed(False, b"no such thing", False)]
    assert scheduler.slices == 0  # a chatty guest stays on the loop
    ended_cleanly(fut, engine)


async def test_the_guest_gets_a_fresh_tick_only_when_one_passed_during_its_host_call(
    scheduler: Scheduler, engine: FakeEngine
) -> None:
    async def slow(binding: str, namespace: str, operation: str, payload: bytes) -> bytes:
        if operation == "slow":
            engine.ticker.ticks += 1  # the ticker ticked while the guest waited
        return b""

    fut = FakeFuture([Call(operation="fast"), Call(operation="slow")])
    await scheduler.run(fut, 1.0, slow)
    assert [r.rearm for r in fut.resumed] == [False, True]


async def test_a_wasi_sleep_waits_on_the_loop_and_is_not_guest_time(
    scheduler: Scheduler, engine: FakeEngine
) -> None:
    fut = FakeFuture([Nap(0.05)])
    loop = asyncio.get_running_loop()
    started = loop.time()
    await scheduler.run(fut, 0.01, no_host)  # a budget far below the sleep
    assert loop.time() - started >= 0.05
    assert fut.resumed == [Resumed(True, b"", True)]
    assert scheduler.slices == 0
    ended_cleanly(fut, engine)


async def test_a_cpu_bound_guest_moves_to_the_workers(
    scheduler: Scheduler, engine: FakeEngine
) -> None:
    fut = FakeFuture([Spin(0.001)] * 10)
    await scheduler.run(fut, 1.0, no_host)
    loop_thread = threading.current_thread().name
    on_loop = [t for t in fut.polls if t == loop_thread]
    assert len(on_loop) == 2  # one slice of loop time (2 ms), then workers
    assert all(t.startswith("assemblex-guest") for t in fut.polls[2:])
    assert scheduler.slices >= 1
    ended_cleanly(fut, engine)


async def test_a_guest_computing_between_host_calls_leaves_the_loop(
    scheduler: Scheduler, engine: FakeEngine
) -> None:
    """Loop time is counted across host calls: 1 ms per host call uses up the slice."""
    fut = FakeFuture([step for _ in range(6) for step in (Spin(0.001), Call())])
    await scheduler.run(fut, 1.0, echo)
    loop_thread = threading.current_thread().name
    assert fut.polls[-1] != loop_thread
    assert scheduler.slices >= 1
    ended_cleanly(fut, engine)


async def test_guest_time_over_the_budget_is_a_timeout_and_poisons(
    scheduler: Scheduler, engine: FakeEngine
) -> None:
    fut = FakeFuture([Spin(0.004)] * 100)
    with pytest.raises(CallTimeout, match=r"guest ran for more than 0.01s"):
        await scheduler.run(fut, 0.01, no_host)
    assert fut.poisoned
    assert not fut.finished
    ended_cleanly(fut, engine)


async def test_the_wall_clock_limit_cuts_a_host_wait_short(
    scheduler: Scheduler, engine: FakeEngine
) -> None:
    async def forever(binding: str, namespace: str, operation: str, payload: bytes) -> bytes:
        await asyncio.Event().wait()
        raise AssertionError

    fut = FakeFuture([Call()])
    deadline = asyncio.get_running_loop().time() + 0.05
    with pytest.raises(CallTimeout, match="wall-clock"):
        await scheduler.run(fut, 1.0, forever, deadline)
    assert fut.poisoned
    ended_cleanly(fut, engine)


async def test_too_many_host_calls_fail_the_guest(scheduler: Scheduler, engine: FakeEngine) -> None:
    fut = FakeFuture([Call()] * 60)  # max_host_calls is 50
    with pytest.raises(GuestError, match="more than 50 host calls"):
        await scheduler.run(fut, 1.0, echo)
    assert len(fut.resumed) == 50
    assert fut.poisoned
    ended_cleanly(fut, engine)


async def test_a_trap_poisons_and_closes(scheduler: Scheduler, engine: FakeEngine) -> None:
    fut = FakeFuture([Spin()], trap=WasmTrap("wasm trap: unreachable"))
    with pytest.raises(WasmTrap, match="unreachable"):
        await scheduler.run(fut, 1.0, no_host)
    assert fut.poisoned
    ended_cleanly(fut, engine)


async def test_a_cancelled_run_is_closed_only_after_the_workers_poll_returns(
    scheduler: Scheduler, engine: FakeEngine
) -> None:
    """A store must outlive its future's poll: cancelling a call while a worker polls it
    defers the close until that poll is back."""
    entered, release = threading.Event(), threading.Event()
    closed = asyncio.Event()
    loop = asyncio.get_running_loop()
    fut = FakeFuture(
        [Spin(0.003), Block(entered, release), Spin()],
        on_close=lambda: loop.call_soon_threadsafe(closed.set),
    )
    task = asyncio.create_task(scheduler.run(fut, 1.0, no_host))
    try:
        assert await asyncio.to_thread(entered.wait, 5)  # a worker is inside the poll
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert fut.poisoned  # at once: the instance must not be reused
        assert not fut.closed  # but the future lives while the worker polls it
    finally:
        release.set()
    await asyncio.wait_for(closed.wait(), 5)
    assert len(fut.polls) == 2  # the worker stopped at its next chance (cancelled)
    ended_cleanly(fut, engine)
