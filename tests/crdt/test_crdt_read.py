"""Blocking monotonic reads, subscriptions and the change feed."""

from __future__ import annotations

import asyncio
import threading

import pytest

from crdt import ClosedError, Replica


async def test_read_returns_at_once_when_reached() -> None:
    r = Replica("a")
    r.incr("v", 3)
    assert await r.read("v", 2) == 3
    assert await r.read("unknown", 0) == 0


async def test_read_wakes_on_local_write() -> None:
    r = Replica("a")
    waiter = asyncio.create_task(r.read("v", 2, timeout=10))
    await asyncio.sleep(0)
    r.incr("v")
    await asyncio.sleep(0)
    assert not waiter.done()  # 1 < 2: still waiting
    r.incr("v")
    assert await waiter == 2
    assert not r._waiters  # nothing left behind


async def test_read_wakes_on_merge() -> None:
    r, peer = Replica("a"), Replica("b")
    waiters = [asyncio.create_task(r.read("app/x/version", n, timeout=10)) for n in (1, 2, 5)]
    await asyncio.sleep(0)
    peer.incr("app/x/version", 2)
    r.merge(peer.delta(r.digest()))
    assert await waiters[0] == 2
    assert await waiters[1] == 2
    assert not waiters[2].done()
    peer.incr("app/x/version", 3)
    r.merge(peer.delta(r.digest()))
    assert await waiters[2] == 5


async def test_read_wakes_from_another_thread() -> None:
    r = Replica("a")
    waiter = asyncio.create_task(r.read("v", 1, timeout=10))
    await asyncio.sleep(0)
    thread = threading.Thread(target=r.incr, args=("v",))
    thread.start()
    assert await waiter == 1
    thread.join()


async def test_read_times_out_and_cleans_up() -> None:
    r = Replica("a")
    with pytest.raises(TimeoutError):
        await r.read("v", 1, timeout=0.01)
    assert not r._waiters
    r.incr("v")  # no stale waiter to trip over
    assert r.value("v") == 1


async def test_read_cancelled_cleans_up() -> None:
    r = Replica("a")
    waiter = asyncio.create_task(r.read("v", 1))
    await asyncio.sleep(0)
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    assert not r._waiters


async def test_close_fails_pending_reads() -> None:
    r = Replica("a")
    waiter = asyncio.create_task(r.read("v", 1))
    await asyncio.sleep(0)
    r.close()
    with pytest.raises(ClosedError):
        await waiter
    with pytest.raises(ClosedError):
        await r.read("v", 1)


def test_subscribe_sees_local_and_merged_changes() -> None:
    r, peer = Replica("a"), Replica("b")
    seen: list[str] = []
    unsubscribe = r.subscribe(seen.append)
    r.set("k", b"1")
    r.incr("c")
    peer.set("p", b"2")
    r.merge(peer.delta(r.digest()))
    r.merge(peer.delta(r.digest()))  # nothing new: no notification
    assert seen == ["k", "c", "p"]
    unsubscribe()
    r.set("k", b"3")
    assert seen == ["k", "c", "p"]


def test_a_failing_subscriber_does_not_fail_the_write() -> None:
    r = Replica("a")

    def boom(key: str) -> None:
        raise RuntimeError(key)

    r.subscribe(boom)
    r.set("k", b"1")
    assert r.get("k") == b"1"


async def test_changes_coalesce_and_end_on_close() -> None:
    r = Replica("a")
    async with r.changes() as feed:
        r.set("a", b"1")
        r.set("b", b"1")
        r.set("a", b"2")  # "a" is still pending: not queued twice
        assert await anext(feed) == "a"
        assert await anext(feed) == "b"
        nxt = asyncio.create_task(anext(feed))
        await asyncio.sleep(0)
        threading.Thread(target=r.incr, args=("c",)).start()
        assert await asyncio.wait_for(nxt, 10) == "c"
    assert [k async for k in feed] == []
    r.set("z", b"1")  # closed feeds hear nothing
    assert not r._feeds


async def test_changes_end_when_the_replica_closes() -> None:
    r = Replica("a")
    feed = r.changes()
    collected = asyncio.create_task(_collect(feed))
    await asyncio.sleep(0)
    r.set("k", b"v")
    await asyncio.sleep(0)
    r.close()
    assert await asyncio.wait_for(collected, 10) == ["k"]


async def _collect(feed: object) -> list[str]:
    return [key async for key in feed]  # type: ignore[attr-defined]
