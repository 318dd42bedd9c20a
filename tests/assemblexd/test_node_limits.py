"""What one app can take from a node is bounded: live instances (idle ones give way), metrics
series, console log lines, and ``kv`` bytes and keys. Real wasmtime, real WAT guests."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest
from helpers import Wat

import crdt
from assemblexd.config import Config
from assemblexd.errors import GuestError, Overloaded, UnknownApp
from assemblexd.logs import LineLimiter
from assemblexd.node import Node


@pytest.fixture
async def make_node(tmp_path: Path) -> AsyncIterator[Callable[..., Awaitable[Node]]]:
    """``await make_node(**config)``: a node on ``tmp_path`` entered for the test."""
    nodes: list[Node] = []

    async def make(**kwargs: object) -> Node:
        node = Node(Config(data_dir=tmp_path, gc_interval=0, **kwargs))  # type: ignore[arg-type]
        await node.__aenter__()
        nodes.append(node)
        return node

    yield make  # type: ignore[misc]
    for node in reversed(nodes):
        await node.__aexit__(None, None, None)


def sample(node: Node, name: str, **labels: str) -> float | None:
    """The value of one series of the node's metrics, or None if it is not there."""
    value = node.metrics.registry.get_sample_value(name, labels)
    return None if value is None else float(value)


def idle_busy(node: Node) -> dict[str, tuple[int, int]]:
    """Per app, (idle, busy) instances of its pool."""
    return {a["name"]: (a["pool"]["idle"], a["pool"]["busy"]) for a in node.status()["apps"]}


async def poll_until(predicate: Callable[[], bool], limit: float = 5.0) -> None:
    """Wait until ``predicate()`` holds, checked every 5 ms: the node has no event for
    instances being created or freed."""
    async with asyncio.timeout(limit):
        while not predicate():  # noqa: ASYNC110
            await asyncio.sleep(0.005)


# -- the instance cap ----------------------------------------------------------------------


async def test_idle_instances_of_other_apps_give_way_at_the_cap(
    make_node: Callable[..., Awaitable[Node]], wat: Wat
) -> None:
    node = await make_node(max_instances=3)
    for name in ("a", "b", "c", "d"):
        await node.deploy(name, wat("echo"))
    for name in ("a", "b", "c"):  # one call each leaves one idle instance each: the cap
        assert await node.call(name, "echo", b"x") == b"x"
    assert node.status()["instances"]["live"] == 3
    await node.call("a", "echo", b"x")  # "a" is now the most recently used

    assert await node.call("d", "echo", b"x") == b"x"  # was 503 while the others idled

    pools = {app["name"]: app["pool"]["idle"] for app in node.status()["apps"]}
    assert pools == {"a": 1, "b": 0, "c": 1, "d": 1}  # b, the least recently used, went
    assert node.status()["instances"]["live"] == 3
    assert sample(node, "assemblex_instances_freed_total", reason="evicted") == 1


async def test_the_cap_still_refuses_when_every_instance_is_busy(
    make_node: Callable[..., Awaitable[Node]], wat: Wat
) -> None:
    node = await make_node(max_instances=2)
    await node.deploy("sleepy", wat("host_sleep"))
    await node.deploy("echo", wat("echo"))
    busy = [asyncio.ensure_future(node.call("sleepy", "main", b"300")) for _ in range(2)]
    await poll_until(lambda: node.status()["instances"]["live"] == 2)  # both created, busy
    with pytest.raises(Overloaded, match="all busy"):
        await node.call("echo", "echo", b"x")
    assert await asyncio.gather(*busy) == [b"300", b"300"]
    assert await node.call("echo", "echo", b"x") == b"x"  # their instances now idle: evicted


async def test_idle_instances_expire(make_node: Callable[..., Awaitable[Node]], wat: Wat) -> None:
    node = await make_node(idle_timeout=0.1)
    await node.deploy("sleepy", wat("host_sleep"))
    await asyncio.gather(*(node.call("sleepy", "main", b"1") for _ in range(3)))
    assert node.status()["instances"]["live"] == 3
    await poll_until(lambda: node.status()["instances"]["live"] == 0)  # expirer: every 0.05 s
    assert sample(node, "assemblex_instances_freed_total", reason="expired") == 3
    assert await node.call("sleepy", "main", b"0") == b"0"  # a new one is made on demand


async def test_expiry_frees_only_instances_idle_long_enough(
    make_node: Callable[..., Awaitable[Node]], wat: Wat
) -> None:
    node = await make_node(idle_timeout=0)  # no expirer task: expire() is driven by hand
    await node.deploy("a", wat("echo"))
    await node.deploy("b", wat("echo"))
    await node.call("a", "echo", b"x")
    released_a = time.monotonic()
    await node.call("b", "echo", b"x")
    cap = node._cap
    assert cap.expire(60, now=released_a + 30) == 0
    assert cap.expire(60, now=released_a + 60) == 1  # a's, released before released_a
    idle = {app["name"]: app["pool"]["idle"] for app in node.status()["apps"]}
    assert idle == {"a": 0, "b": 1}
    assert cap.expire(60, now=time.monotonic() + 60) == 1
    assert cap.live == 0
    assert cap.idle == 0
    assert await node.call("a", "echo", b"x") == b"x"


# -- metrics series --------------------------------------------------------------------------


def op_labels(node: Node, app: str) -> set[str]:
    """The ``op`` label values of ``assemblex_calls_total`` for ``app``."""
    return {
        s.labels["op"]
        for family in node.metrics.registry.collect()
        if family.name == "assemblex_calls"
        for s in family.samples
        if s.name == "assemblex_calls_total" and s.labels["app"] == app
    }


async def test_operation_names_chosen_by_callers_do_not_grow_the_metrics(
    make_node: Callable[..., Awaitable[Node]], wat: Wat
) -> None:
    node = await make_node()
    await node.deploy("any", wat("console_log"))  # answers every operation
    await node.call("any", "warm", b"")
    before = len(node.metrics_text())
    for i in range(300):  # 4 KB names: each its own series before
        await node.call("any", f"{i:04d}".ljust(4000, "x"), b"")
    for i in range(40):  # short ones: the first 32 names of the app get a series
        await node.call("any", f"op{i}", b"")
    text = node.metrics_text()
    assert len(text) - before < 12_000, len(text) - before  # was 300 x 4 KB and more
    ops = op_labels(node, "any")
    assert len(ops) == 33
    assert {"warm", "op0", "op30", "_other"} <= ops
    assert "op31" not in ops  # the 33rd name
    assert sample(node, "assemblex_calls_total", app="any", op="_other", outcome="ok") == 309


async def test_app_labels_are_the_apps_run_here(
    make_node: Callable[..., Awaitable[Node]], wat: Wat
) -> None:
    node = await make_node()
    await node.deploy("echo", wat("echo"))
    await node.call("echo", "echo", b"")
    before = node.metrics_text()
    for i in range(50):
        with pytest.raises(UnknownApp):
            await node.call(f"nope{i}", "main", b"")
    assert node.metrics_text() == before

    await node.deploy("gone", wat("host_sleep"))
    await node.call("gone", "main", b"0")
    assert b'app="gone"' in node.metrics_text()
    running = asyncio.ensure_future(node.call("gone", "main", b"200"))
    await poll_until(lambda: idle_busy(node)["gone"][1] == 1)
    await node.undeploy("gone")
    assert await running == b"200"  # a call running through the undeploy ends as it would
    assert b'app="gone"' not in node.metrics_text()  # undeployed: its series go with it
    assert b'app="echo"' in node.metrics_text()
    await node.deploy("gone", wat("console_log"))  # and come back fresh with it
    await node.call("gone", "main", b"")
    assert sample(node, "assemblex_calls_total", app="gone", op="main", outcome="ok") == 1


# -- guest console lines -----------------------------------------------------------------------


async def test_a_long_console_line_is_cut(
    make_node: Callable[..., Awaitable[Node]], wat: Wat, caplog: pytest.LogCaptureFixture
) -> None:
    node = await make_node()
    await node.deploy("chatty", wat("console_log"))
    with caplog.at_level(logging.INFO, logger="assemblexd.guest"):
        await node.call("chatty", "main", b"a\nb" + b"z" * (1 << 20))
    lines = [r.getMessage() for r in caplog.records if r.name == "assemblexd.guest"]
    assert lines[1] == "[chatty v1] second line"
    assert len(lines[0]) < 4200  # was 1 MiB
    assert lines[0].startswith("[chatty v1] a\\nb" + "z" * 4000)  # the newline escaped
    assert lines[0].endswith(f" [cut: {3 + (1 << 20)} bytes]")
    assert sample(node, "assemblex_guest_log_cut_total", app="chatty") == 1


async def test_console_lines_are_rate_limited_per_app(
    make_node: Callable[..., Awaitable[Node]], wat: Wat, caplog: pytest.LogCaptureFixture
) -> None:
    node = await make_node(guest_log_rate=5)  # bursts of 50
    await node.deploy("chatty", wat("console_log"))
    await node.deploy("quiet", wat("console_log"))
    started = time.monotonic()
    with caplog.at_level(logging.INFO, logger="assemblexd.guest"):
        for _ in range(100):  # two lines a call
            await node.call("chatty", "main", b"hello")
        elapsed = time.monotonic() - started
        await node.call("quiet", "main", b"other app")
    logged = [r for r in caplog.records if r.name == "assemblexd.guest"]
    chatty = [r for r in logged if r.app == "chatty"]  # type: ignore[attr-defined]
    assert 50 <= len(chatty) <= 50 + 5 * elapsed + 1
    dropped = sample(node, "assemblex_guest_log_dropped_total", app="chatty")
    assert dropped == 200 - len(chatty)
    assert [r.getMessage() for r in logged if r.app == "quiet"] == [  # type: ignore[attr-defined]
        "[quiet v1] other app",
        "[quiet v1] second line",
    ]


def test_the_line_limiter_refills_and_reports_what_it_dropped() -> None:
    now = [0.0]
    limiter = LineLimiter(rate=2, burst=3, clock=lambda: now[0])
    assert [limiter.admit("a") for _ in range(5)] == [(True, 0)] * 3 + [(False, 0)] * 2
    assert limiter.admit("b") == (True, 0)  # buckets are per app
    now[0] = 0.5  # one line's worth
    assert limiter.admit("a") == (True, 2)
    assert limiter.admit("a") == (False, 0)
    now[0] = 100.0
    assert [limiter.admit("a")[0] for _ in range(4)] == [True, True, True, False]  # burst cap


# -- kv quota --------------------------------------------------------------------------------


def hostcall(binding: str, namespace: str, operation: str, body: bytes = b"") -> bytes:
    """The payload of guests/wat/hostcall.wat: which host call to make."""
    return b"\0".join([binding.encode(), namespace.encode(), operation.encode(), body])


def kv(node: Node, op: str, key: str, body: bytes = b"", app: str = "kv") -> Awaitable[bytes]:
    return node.call(app, "main", hostcall(key, "kv", op, body))


async def test_kv_keys_quota(make_node: Callable[..., Awaitable[Node]], wat: Wat) -> None:
    node = await make_node(max_kv_keys=5)
    await node.deploy("kv", wat("hostcall"))
    await node.deploy("other", wat("hostcall"))
    for i in range(4):
        await kv(node, "set", f"k{i}", b"v")
    await kv(node, "incr", "counter")  # a counter is a key too
    with pytest.raises(
        GuestError, match=r"quota exceeded: .* 6 keys, over its 5 \(--max-kv-keys\)"
    ):
        await kv(node, "set", "k4", b"v")
    with pytest.raises(GuestError, match="quota exceeded"):
        await kv(node, "incr", "counter2")
    with pytest.raises(GuestError, match="no value for key 'k4'"):
        await kv(node, "get", "k4")  # nothing was written
    await kv(node, "set", "k0", b"new value")  # overwriting takes no new key
    assert await kv(node, "incr", "counter") == b"2"  # nor does an existing counter
    await kv(node, "set", "k0", b"v", app="other")  # quotas are per app
    await kv(node, "del", "k1")
    written = node.replica.local_version()
    await kv(node, "del", "never-set")  # deleting nothing writes nothing (not even a tombstone)
    assert node.replica.local_version() == written
    await kv(node, "set", "k4", b"v")  # room again
    assert node._kv_quota is not None
    # k0 with its 9-byte value, k2 to k4 with 1 byte each, the counter: its key and 8 bytes
    assert node._kv_quota.usage("kv") == (5, (2 + 9) + 3 * (2 + 1) + len("counter") + 8)
    node.metrics_text()
    assert sample(node, "assemblex_kv_keys", app="kv") == 5
    assert sample(node, "assemblex_kv_keys", app="other") == 1


async def test_kv_bytes_quota_and_writes_in_flight(
    make_node: Callable[..., Awaitable[Node]], wat: Wat
) -> None:
    node = await make_node(max_kv_mib=1)
    await node.deploy("kv", wat("hostcall"))
    value = b"x" * (200 * 1024)
    # 8 concurrent writes of 200 KiB: the quota holds room for those in flight, so 5 pass.
    results = await asyncio.gather(
        *(kv(node, "set", f"k{i}", value) for i in range(8)), return_exceptions=True
    )
    refused = [r for r in results if isinstance(r, GuestError)]
    assert len(refused) == 3, results
    assert all("over its 1048576 (--max-kv)" in str(r) for r in refused)
    assert node._kv_quota is not None
    keys, size = node._kv_quota.usage("kv")
    assert keys == 5
    assert size == 5 * (2 + len(value))
    await kv(node, "set", "k0", b"short")  # shrinking a value always passes
    await kv(node, "set", "new", b"y" * 100_000)


async def test_kv_quota_counts_what_peers_wrote_and_what_was_on_disk(
    make_node: Callable[..., Awaitable[Node]], wat: Wat, tmp_path: Path
) -> None:
    node = await make_node(max_kv_keys=3)
    await node.deploy("kv", wat("hostcall"))
    await kv(node, "set", "mine", b"v")
    peer = crdt.Replica("peer-node")  # another node's writes, merged here by sync
    peer.set("kv/kv/theirs1", b"v")
    peer.incr("kv/kv/theirs2")
    node.replica.merge(peer.delta(node.replica.digest()))
    with pytest.raises(GuestError, match="4 keys, over its 3"):
        await kv(node, "set", "mine2", b"v")
    await node.__aexit__(None, None, None)

    async with Node(Config(data_dir=tmp_path, gc_interval=0, max_kv_keys=3)) as again:
        with pytest.raises(GuestError, match="4 keys, over its 3"):
            await kv(again, "set", "mine2", b"v")
        again.replica.merge(_deleting(peer, "kv/kv/theirs1").delta(again.replica.digest()))
        await kv(again, "set", "mine2", b"v")


def _deleting(replica: crdt.Replica, key: str) -> crdt.Replica:
    replica.delete(key)
    return replica
