"""The waPC host, scheduler and pools, through a real Node running real modules (no HTTP)."""

from __future__ import annotations

import asyncio
import dataclasses
import importlib.metadata
import logging
import struct
import threading
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import wasmtime
from helpers import Wat

from assemblexd.config import Config
from assemblexd.errors import (
    BadRequest,
    CallTimeout,
    GuestError,
    InvalidModule,
    Overloaded,
    PayloadTooLarge,
    UnknownApp,
)
from assemblexd.node import Node


@pytest.fixture
def config(tmp_path: Path) -> Config:
    return Config(data_dir=tmp_path, call_timeout=2.0, call_wall_timeout=10.0)


def hostcall(binding: str, namespace: str, operation: str, body: bytes = b"") -> bytes:
    """The payload of guests/wat/hostcall.wat: which host call to make."""
    return b"\0".join([binding.encode(), namespace.encode(), operation.encode(), body])


async def test_echo_round_trip(node: Node, wat: Wat) -> None:
    record = await node.deploy("echo", wat("echo"))
    assert (record.name, record.version, record.size) == ("echo", 1, len(wat("echo")))
    assert await node.call("echo", "echo", b"hello") == b"hello"
    assert await node.call("echo", "main", b"") == b""


async def test_large_payload_and_response(node: Node, wat: Wat) -> None:
    await node.deploy("echo", wat("echo"))
    payload = bytes(range(256)) * (5 * 4096)  # 5 MiB
    assert await node.call("echo", "echo", payload) == payload
    await node.deploy("big", wat("big_response"))
    assert await node.call("big", "main", b"3000000") == b"x" * 3_000_000


async def test_unknown_operation_is_the_guests_error(node: Node, wat: Wat) -> None:
    await node.deploy("echo", wat("echo"))
    with pytest.raises(GuestError, match=r"unknown operation: nope"):
        await node.call("echo", "nope", b"")


async def test_unknown_app(node: Node) -> None:
    with pytest.raises(UnknownApp):
        await node.call("ghost", "main", b"")


async def test_guest_error_and_missing_error_text(node: Node, wat: Wat) -> None:
    await node.deploy("error", wat("error"))
    await node.deploy("noerror", wat("noerror"))
    with pytest.raises(GuestError, match=r"^something went wrong$"):
        await node.call("error", "main", b"")
    with pytest.raises(GuestError, match=r"^no error message set$"):
        await node.call("noerror", "main", b"")


async def test_trap_is_reported_and_the_instance_is_not_reused(node: Node, wat: Wat) -> None:
    await node.deploy("trap", wat("trap"))
    for _ in range(3):
        with pytest.raises(GuestError, match=r"unreachable"):
            await node.call("trap", "main", b"")
    pool = node.supervisors.loaded["trap"].pool
    assert pool.created == 3
    assert pool.idle == 0
    assert node.status()["instances"]["live"] == 0


async def test_the_guest_error_text_survives_a_trap(node: Node, wat: Wat) -> None:
    await node.deploy("panic", wat("panic"))
    with pytest.raises(GuestError) as info:
        await node.call("panic", "main", b"")
    assert str(info.value) == (
        "panicked at 'boom', src/lib.rs:7:5; guest trapped: wasm trap: wasm `unreachable`"
        " instruction executed"
    )
    # A trap without a text is reported as before; the text does not leak into the next call.
    await node.deploy("trap", wat("trap"))
    with pytest.raises(GuestError, match=r"^guest trapped: wasm trap: wasm `unreachable`"):
        await node.call("trap", "main", b"")
    with pytest.raises(GuestError, match=r"^panicked at 'boom'.*; guest trapped: "):
        await node.call("panic", "main", b"")
    await node.deploy("init", wat("init_panic"))
    with pytest.raises(
        GuestError,
        match=r"^registration failed; instance failed to start: wapc_init failed: wasm trap: ",
    ):
        await node.call("init", "main", b"")


@pytest.mark.parametrize(
    ("how", "text"),
    [
        (b"m", "abort: x must be \u2265 0 at assembly/index.ts:12:7"),
        (b"n", "abort"),
        (b"b", "abort (the guest's message is not readable)"),
        (b"l", "abort (the guest's message is not readable)"),
    ],
)
async def test_assemblyscript_env_abort(node: Node, wat: Wat, how: bytes, text: str) -> None:
    await node.deploy("as", wat("as_abort"))
    assert await node.call("as", "main", b"x") == b"ok"
    with pytest.raises(GuestError) as info:
        await node.call("as", "main", how)
    assert str(info.value) == f"{text}; guest trapped: env.abort"
    assert await node.call("as", "main", b"x") == b"ok"  # the node and the app go on


async def test_zero_length_buffers_at_any_pointer(node: Node, wat: Wat) -> None:
    await node.deploy("zero", wat("zero_length"))
    assert await node.call("zero", "main", b"") == b""
    # One byte or more out of bounds stays an error: a write (the payload) and a read.
    with pytest.raises(GuestError, match=r"guest pointer out of bounds"):
        await node.call("zero", "main", b"x")
    with pytest.raises(GuestError, match=r"guest pointer out of bounds"):
        await node.call("zero", "read1", b"")


async def test_guest_errors_keep_the_instance(node: Node, wat: Wat) -> None:
    await node.deploy("error", wat("error"))
    for _ in range(3):
        with pytest.raises(GuestError):
            await node.call("error", "main", b"")
    assert node.supervisors.loaded["error"].pool.created == 1


async def test_infinite_loop_times_out_and_node_keeps_serving(tmp_path: Path, wat: Wat) -> None:
    config = Config(data_dir=tmp_path, call_timeout=0.5)
    async with Node(config) as node:
        await node.deploy("loop", wat("loop"))
        await node.deploy("echo", wat("echo"))
        spinner = asyncio.create_task(node.call("loop", "main", b""))
        # While the guest spins, other calls are served: they finish before it does.
        for i in range(20):
            assert await node.call("echo", "echo", b"%d" % i) == b"%d" % i
        assert not spinner.done()
        with pytest.raises(CallTimeout, match=r"more than 0.5s"):
            await spinner
        assert node.supervisors.loaded["loop"].pool.idle == 0  # a timed-out instance is dropped
        assert node._scheduler is not None
        assert node._scheduler.slices > 0


async def test_guests_computing_between_host_calls_leave_the_loop(tmp_path: Path, wat: Wat) -> None:
    """A guest that computes ~0.5 ms between host calls never reaches a tick on the loop: its
    loop time is counted across host calls, and once it has used its slice it runs on the
    workers. Four of them at once leave the loop free (timers on time; before: late by tens
    of ms, as the guests took turns on the loop thread) and end on their CPU limit."""
    config = Config(data_dir=tmp_path, call_timeout=0.3, call_wall_timeout=10, cpu_workers=2)
    async with Node(config) as node:
        await node.deploy("spin", wat("spin_echo"))
        assert await node.call("spin", "main", b"3") == b"done"
        assert node._scheduler is not None
        slices = node._scheduler.slices
        loop = asyncio.get_running_loop()
        calls = [asyncio.create_task(node.call("spin", "main", b"0")) for _ in range(4)]
        late: list[float] = []
        while not all(c.done() for c in calls):
            t0 = loop.time()
            await asyncio.sleep(0.005)
            late.append(loop.time() - t0 - 0.005)
        outcomes = await asyncio.gather(*calls, return_exceptions=True)
        assert [str(o) for o in outcomes] == ["guest ran for more than 0.3s"] * 4
        assert all(isinstance(o, CallTimeout) for o in outcomes)
        late.sort()
        assert late[len(late) // 2] < 0.01, f"timers ran late by {late[len(late) // 2]:.3f} s"
        # Most rounds ran on the workers (4 x 0.3 s of 0.5 ms rounds is some 2,400 of them).
        assert node._scheduler.slices - slices > 500


async def test_host_waits_do_not_count_as_guest_time(tmp_path: Path, wat: Wat) -> None:
    config = Config(data_dir=tmp_path, call_timeout=0.2, call_wall_timeout=5)
    async with Node(config) as node:
        await node.deploy("sleep", wat("host_sleep"))
        assert await node.call("sleep", "main", b"500") == b"500"


async def test_wall_clock_limit(tmp_path: Path, wat: Wat) -> None:
    config = Config(data_dir=tmp_path, call_wall_timeout=0.3)
    async with Node(config) as node:
        await node.deploy("sleep", wat("host_sleep"))
        with pytest.raises(CallTimeout, match=r"wall-clock"):
            await node.call("sleep", "main", b"5000")
        assert node.status()["instances"]["live"] == 0


async def test_many_host_waits_hold_no_threads(node: Node, wat: Wat) -> None:
    await node.deploy("sleep", wat("host_sleep"))
    before = threading.active_count()
    calls = [asyncio.create_task(node.call("sleep", "main", b"300")) for _ in range(300)]
    await asyncio.sleep(0.1)
    assert not any(c.done() for c in calls)
    assert threading.active_count() <= before + 2  # at most a worker or two woke up
    assert set(await asyncio.gather(*calls)) == {b"300"}


def subscription(userdata: int, tag: int, *fields: int) -> bytes:
    """A WASI poll_oneoff subscription: a clock (id, timeout ns, flags) or an fd (fd)."""
    if tag == 0:
        clock, timeout, flags = fields
        union = struct.pack("<I4xQQH6x", clock, timeout, 0, flags)
    else:
        union = struct.pack("<I28x", *fields)
    return struct.pack("<QB7x", userdata, tag) + union


def poll_request(*subs: bytes, n: int | None = None) -> bytes:
    """The payload of wasi_sleep.wat's ``poll``: the count, then the subscriptions."""
    return struct.pack("<I", len(subs) if n is None else n) + b"".join(subs)


def poll_answer(answer: bytes) -> tuple[int, list[tuple[int, int, int, int]]]:
    """errno and the events (userdata, error, type, nbytes) of wasi_sleep.wat's ``poll``."""
    errno, n = struct.unpack_from("<II", answer)
    assert len(answer) == 8 + 32 * n
    return errno, [struct.unpack_from("<QHB5xQ", answer, 8 + 32 * i) for i in range(n)]


async def test_wasi_sleep_is_a_host_wait(tmp_path: Path, wat: Wat) -> None:
    """poll_oneoff on a clock parks the guest: no thread, no guest time, the loop stays free."""
    config = Config(data_dir=tmp_path, call_timeout=0.2, call_wall_timeout=5)
    async with Node(config) as node:
        await node.deploy("sleep", wat("wasi_sleep"))
        await node.deploy("echo", wat("echo"))
        loop = asyncio.get_running_loop()
        before = threading.active_count()
        t0 = loop.time()
        calls = [asyncio.create_task(node.call("sleep", "sleep", b"500")) for _ in range(50)]
        await asyncio.sleep(0.05)
        assert not any(c.done() for c in calls)
        assert await node.call("echo", "echo", b"meanwhile") == b"meanwhile"
        assert loop.time() - t0 < 0.3
        assert threading.active_count() <= before + 2
        assert set(await asyncio.gather(*calls)) == {b"500"}  # 25 s of sleep, 0.2 s of budget
        assert 0.5 <= loop.time() - t0 < 2
        # An absolute deadline on the guest's own monotonic clock waits as long.
        t0 = loop.time()
        assert await node.call("sleep", "sleep_abs", b"300") == b"300"
        assert 0.3 <= loop.time() - t0 < 1


async def test_wasi_sleep_is_cut_by_the_wall_clock_limit(tmp_path: Path, wat: Wat) -> None:
    config = Config(data_dir=tmp_path, call_wall_timeout=0.3)
    async with Node(config) as node:
        await node.deploy("sleep", wat("wasi_sleep"))
        t0 = asyncio.get_running_loop().time()
        with pytest.raises(CallTimeout, match=r"wall-clock"):
            await node.call("sleep", "sleep", b"5000")
        assert asyncio.get_running_loop().time() - t0 < 1
        assert node.status()["instances"]["live"] == 0
        assert await node.call("sleep", "sleep", b"1") == b"1"


async def test_wasi_poll_oneoff_answers(node: Node, wat: Wat) -> None:
    """What poll_oneoff answers without waiting, as wasmtime's own does."""
    await node.deploy("sleep", wat("wasi_sleep"))

    async def poll(payload: bytes) -> tuple[int, list[tuple[int, int, int, int]]]:
        return poll_answer(await node.call("sleep", "poll", payload))

    # stdin (empty) is readable and stdout and stderr writable at once: no wait for the clock.
    t0 = asyncio.get_running_loop().time()
    errno, events = await poll(
        poll_request(
            subscription(1, 0, 1, 10**10, 0),
            subscription(2, 1, 0),
            subscription(3, 2, 1),
            subscription(4, 2, 2),
        )
    )
    assert asyncio.get_running_loop().time() - t0 < 1
    assert (errno, events) == (0, [(2, 0, 1, 1), (3, 0, 2, 1), (4, 0, 2, 1)])
    # Clocks: the earliest fires, with any that fire at the same time; a deadline in the
    # past (realtime, absolute) is ready at once.
    errno, events = await poll(
        poll_request(
            subscription(5, 0, 1, 50_000_000, 0),
            subscription(6, 0, 0, 20_000_000, 0),
            subscription(7, 0, 1, 20_000_000, 0),
        )
    )
    assert (errno, events) == (0, [(6, 0, 0, 0), (7, 0, 0, 0)])
    assert await poll(poll_request(subscription(8, 0, 0, 1, 1))) == (0, [(8, 0, 0, 0)])
    # Errors: EINVAL (28) for no subscriptions, an unknown clock, tag or flag; EBADF (8) for
    # an fd that is not open.
    assert await poll(poll_request()) == (28, [])
    assert await poll(poll_request(subscription(1, 0, 2, 1000, 0))) == (28, [])
    assert await poll(poll_request(subscription(1, 0, 1, 1000, 2))) == (28, [])
    assert await poll(poll_request(subscription(1, 3, 0))) == (28, [])
    assert await poll(poll_request(subscription(1, 1, 1))) == (8, [])
    assert await poll(poll_request(subscription(1, 2, 7))) == (8, [])
    # More than 1,024 subscriptions is EINVAL: parsing them would hold the thread.
    writable = subscription(9, 2, 1)
    assert await poll(poll_request(*[writable] * 1024)) == (0, [(9, 0, 2, 1)] * 1024)
    assert await poll(poll_request(*[writable] * 1025)) == (28, [])
    # Every answer left the instance usable:
    assert node.supervisors.loaded["sleep"].pool.created == 1
    # Subscriptions past the end of the memory: the guest traps (the WASI spec's rule for a
    # bad pointer), and its instance is dropped.
    with pytest.raises(GuestError, match=r"guest trapped: .*out of bounds"):
        await node.call("sleep", "poll", poll_request(subscription(1, 0, 1, 1000, 0), n=3000))
    assert await node.call("sleep", "sleep", b"1") == b"1"
    assert node.supervisors.loaded["sleep"].pool.created == 2


async def test_wasi_random_get_fills_across_polls(node: Node, wat: Wat) -> None:
    """random_get of tens of MiB does not hold the loop: it is filled a chunk per poll."""
    await node.deploy("random", wat("wasi_random"))
    assert await node.call("random", "main", b"0") == b""
    tail = await node.call("random", "main", b"100")
    assert len(tail) == 64
    assert tail != bytes(64)
    loop = asyncio.get_running_loop()
    gaps: list[float] = []
    stop = asyncio.Event()

    async def heartbeat() -> None:
        last = loop.time()
        while not stop.is_set():
            await asyncio.sleep(0.002)
            gaps.append(loop.time() - last)
            last = loop.time()

    beat = asyncio.create_task(heartbeat())
    await asyncio.sleep(0.01)
    tail = await node.call("random", "main", b"%d" % (40 << 20))  # ~200 ms of os.urandom
    stop.set()
    await beat
    assert len(tail) == 64
    assert tail != bytes(64)  # filled to the very end
    assert max(gaps) < 0.06, f"the loop stalled for {max(gaps) * 1000:.0f} ms"
    with pytest.raises(GuestError, match=r"guest trapped: .*out of bounds"):
        await node.call("random", "oob", b"")


async def test_memory_limit(tmp_path: Path, wat: Wat) -> None:
    config = Config(data_dir=tmp_path, max_memory_mib=4)
    async with Node(config) as node:
        await node.deploy("hog", wat("memhog"))
        with pytest.raises(GuestError, match=r"unreachable"):
            await node.call("hog", "main", b"")
        await node.deploy("echo", wat("echo"))
        # 8 MiB does not fit in a 4 MiB instance: the guest cannot grow its memory.
        with pytest.raises(GuestError):
            await node.call("echo", "echo", b"x" * (8 << 20))


@pytest.fixture
async def node16(tmp_path: Path) -> AsyncIterator[Node]:
    """A node started with --max-memory 16 (tables: 262,144 elements, 1/8 of it)."""
    async with Node(Config(data_dir=tmp_path, max_memory_mib=16)) as n:
        yield n


async def test_more_than_one_memory_is_refused(node16: Node, wat: Wat) -> None:
    # Each memory under its own 16 MiB limit, 21 of them: 336 MiB from a 16 MiB node.
    with pytest.raises(InvalidModule, match=r"module has 21 memories; the host runs modules wi"):
        await node16.deploy("mems", wat("many_memories"))
    assert node16.apps() == []
    assert list((node16.storage.data_dir / "blobs").iterdir()) == []


async def test_table_growth_is_bounded_by_max_memory(node16: Node, wat: Wat) -> None:
    await node16.deploy("tables", wat("table_grow"))
    # Both grows refused (-1): 16M elements are over 16 MiB / 8 / 8 bytes = 262,144.
    answer = await node16.call("tables", "main", b"")
    assert struct.unpack("<ii", answer) == (-1, -1)
    # The refusal is the guest's to handle: the instance is fine and is reused.
    assert struct.unpack("<ii", await node16.call("tables", "main", b"")) == (-1, -1)
    assert node16.supervisors.loaded["tables"].pool.created == 1


@pytest.mark.parametrize(
    ("guest", "reason"),
    [
        ("huge_memory_min", r"memory starts at 4096 MiB, over this node's limit of 16 MiB"),
        ("huge_table_min", r"table starts at 4,194,304 elements, over this node's limit of 262"),
        ("shared_memory", r"memory is shared"),
        ("gc_arrays", r"does not compile: .*gc"),
    ],
)
async def test_modules_that_cannot_start_under_the_limits_are_refused(
    node16: Node, wat: Wat, guest: str, reason: str
) -> None:
    with pytest.raises(InvalidModule, match=reason):
        await node16.deploy(guest, wat(guest))
    assert node16.apps() == []


async def test_a_table_within_the_budget_deploys(tmp_path: Path, wat: Wat) -> None:
    # 4,194,304 elements are 32 MiB: within 1/8 of 256 MiB.
    async with Node(Config(data_dir=tmp_path, max_memory_mib=256)) as node:
        await node.deploy("table", wat("huge_table_min"))
        assert await node.call("table", "main", b"") == b""


async def test_a_node_with_lower_limits_fails_the_instance_not_the_deploy(
    tmp_path: Path, wat: Wat
) -> None:
    """A record deployed elsewhere under higher limits (here: before a restart with lower
    ones) is served, and its instances cannot start: the store limits hold its minimums."""
    async with Node(Config(data_dir=tmp_path, max_memory_mib=256)) as node:
        await node.deploy("table", wat("huge_table_min"))
    async with Node(Config(data_dir=tmp_path, max_memory_mib=16)) as node:
        with pytest.raises(GuestError, match=r"instance failed to start: .*table"):
            await node.call("table", "main", b"")
        assert node.status()["instances"]["live"] == 0


async def test_payload_limit(tmp_path: Path, wat: Wat) -> None:
    async with Node(Config(data_dir=tmp_path, max_payload_mib=1)) as node:
        await node.deploy("echo", wat("echo"))
        with pytest.raises(PayloadTooLarge):
            await node.call("echo", "echo", b"x" * ((1 << 20) + 1))


async def test_instance_cap_gives_overloaded(tmp_path: Path, wat: Wat) -> None:
    async with Node(Config(data_dir=tmp_path, max_instances=2)) as node:
        await node.deploy("sleep", wat("host_sleep"))
        calls = [asyncio.create_task(node.call("sleep", "main", b"200")) for _ in range(3)]
        results = await asyncio.gather(*calls, return_exceptions=True)
        assert sorted(type(r).__name__ for r in results) == ["Overloaded", "bytes", "bytes"]
        assert isinstance(next(r for r in results if not isinstance(r, bytes)), Overloaded)


async def test_pool_keeps_at_most_pool_size_idle(tmp_path: Path, wat: Wat) -> None:
    async with Node(Config(data_dir=tmp_path, pool_size=2)) as node:
        await node.deploy("sleep", wat("host_sleep"))
        await asyncio.gather(*[node.call("sleep", "main", b"50") for _ in range(6)])
        pool = node.supervisors.loaded["sleep"].pool
        assert (pool.created, pool.idle, pool.busy) == (6, 2, 0)
        assert node.status()["instances"]["live"] == 2
        await asyncio.gather(*[node.call("sleep", "main", b"1") for _ in range(2)])
        assert pool.created == 6  # warm instances were reused


async def test_init_order_and_wasi_exit(node: Node, wat: Wat) -> None:
    await node.deploy("init", wat("init_order"))
    assert await node.call("init", "main", b"") == b"isw"
    await node.deploy("wasi", wat("wasi_exit"))
    assert await node.call("wasi", "main", b"") == b"ok"


async def test_wasi_unstable_imports(config: Config, wat: Wat) -> None:
    """A guest importing WASI's first snapshot gets preview 1's functions, also when loaded
    from the compiled cache after a restart."""
    for restarted in (False, True):
        async with Node(config) as node:
            if not restarted:
                await node.deploy("legacy", wat("wasi_unstable"))
            answer = await node.call("legacy", "main", b"to stdout")
            # fd_write: errno 0, 9 bytes written; clock_time_get and random_get: errno 0.
            assert struct.unpack("<4i", answer) == (0, 9, 0, 0)
    assert b'assemblex_compile_cache_total{result="hit"} 1.0' in node.metrics_text()


async def test_console_log_is_tagged_with_the_app(
    node: Node, wat: Wat, caplog: pytest.LogCaptureFixture
) -> None:
    await node.deploy("logger", wat("console_log"))
    with caplog.at_level(logging.INFO, logger="assemblexd.guest"):
        assert await node.call("logger", "main", b"first line") == b"logged"
    lines = [(r.app, r.getMessage()) for r in caplog.records if r.name == "assemblexd.guest"]  # type: ignore[attr-defined]
    assert lines == [("logger", "[logger v1] first line"), ("logger", "[logger v1] second line")]


async def test_host_echo(node: Node, wat: Wat) -> None:
    await node.deploy("he", wat("host_echo"))
    assert await node.call("he", "main", b"a\0b") == b"a\0b"


async def test_recursion_to_the_depth_limit(tmp_path: Path, wat: Wat) -> None:
    async with Node(Config(data_dir=tmp_path, max_call_depth=8)) as node:
        await node.deploy("recursion", wat("recursion"))
        assert await node.call("recursion", "main", b"x" * 8) == b"bottom"
        with pytest.raises(GuestError, match=r"depth limit \(8\)"):
            await node.call("recursion", "main", b"x" * 9)
        # Each level held its own instance and gave it back.
        assert node.supervisors.loaded["recursion"].pool.busy == 0


async def test_kv_namespace(node: Node, wat: Wat) -> None:
    await node.deploy("hc", wat("hostcall"))
    call = node.call
    assert await call("hc", "main", hostcall("k", "kv", "set", b"v1")) == b""
    assert await call("hc", "main", hostcall("k", "kv", "get")) == b"v1"
    assert await call("hc", "main", hostcall("n", "kv", "incr")) == b"1"
    assert await call("hc", "main", hostcall("n", "kv", "incr", b"5")) == b"6"
    assert await call("hc", "main", hostcall("n", "kv", "get")) == b"6"
    assert await call("hc", "main", hostcall("k", "kv", "del")) == b""
    with pytest.raises(GuestError, match=r"^kv: no value for key 'k'$"):
        await call("hc", "main", hostcall("k", "kv", "get"))
    with pytest.raises(GuestError, match=r"counters only grow"):
        await call("hc", "main", hostcall("n", "kv", "incr", b"-1"))
    # Keys are scoped to the app.
    await node.deploy("other", wat("hostcall"))
    with pytest.raises(GuestError, match=r"no value"):
        await call("other", "main", hostcall("n", "kv", "get"))


async def test_capabilities(node: Node, wat: Wat) -> None:
    await node.deploy("hc", wat("hostcall"), capabilities=["host"])
    assert await node.call("hc", "main", hostcall("", "host", "echo", b"ok")) == b"ok"
    with pytest.raises(GuestError, match=r"^capability not granted: kv$"):
        await node.call("hc", "main", hostcall("k", "kv", "get"))
    with pytest.raises(GuestError, match=r"^unknown namespace: nope$"):
        await node.call("hc", "main", hostcall("", "nope", "x"))
    with pytest.raises(BadRequest, match=r"unknown capabilities: files"):
        await node.deploy("hc2", wat("hostcall"), capabilities=["kv", "files"])
    assert node.app("hc").capabilities == ("host",)


async def test_call_namespace(node: Node, wat: Wat) -> None:
    await node.deploy("hc", wat("hostcall"))
    await node.deploy("echo", wat("echo"))
    assert await node.call("hc", "main", hostcall("echo", "call", "echo", b"hi")) == b"hi"
    with pytest.raises(GuestError, match=r"^call echo/nope: unknown operation: nope$"):
        await node.call("hc", "main", hostcall("echo", "call", "nope"))
    with pytest.raises(GuestError, match=r"no app named 'ghost'"):
        await node.call("hc", "main", hostcall("ghost", "call", "main"))


async def test_host_sleep_rejects_bad_payload(node: Node, wat: Wat) -> None:
    await node.deploy("sleep", wat("host_sleep"))
    with pytest.raises(GuestError, match=r"ASCII digits"):
        await node.call("sleep", "main", b"soon")


@pytest.mark.redis
async def test_redis_namespace(tmp_path: Path, wat: Wat, redis_server: str) -> None:
    config = Config(data_dir=tmp_path, redis_urls=(("", redis_server),))
    async with Node(config) as node:
        await node.deploy("hc", wat("hostcall"))
        import msgpack

        set_args = msgpack.packb([b"some_key1", b"value\0one"])
        assert await node.call("hc", "main", hostcall("", "redis", "SET", set_args)) == b"OK"
        assert await node.call("hc", "main", hostcall("", "redis", "GET", b"some_key1")) == (
            b"value\0one"
        )
        assert await node.call("hc", "main", hostcall("", "redis", "INCR", b"ctr")) == b"1"
        assert await node.call("hc", "main", hostcall("", "redis", "GET", b"missing")) == b""
        with pytest.raises(GuestError, match=r"redis: .*wrong number of arguments|redis: ERR"):
            await node.call("hc", "main", hostcall("", "redis", "SET", msgpack.packb([b"a"])))
        with pytest.raises(GuestError, match=r"not allowed"):
            await node.call("hc", "main", hostcall("", "redis", "FLUSHALL"))
        with pytest.raises(GuestError, match=r"no connection named 'other'"):
            await node.call("hc", "main", hostcall("other", "redis", "GET", b"k"))


async def test_redis_without_configuration(node: Node, wat: Wat) -> None:
    await node.deploy("hc", wat("hostcall"))
    with pytest.raises(GuestError, match=r"no Redis configured"):
        await node.call("hc", "main", hostcall("", "redis", "GET", b"k"))


@pytest.mark.parametrize(
    ("guest", "reason"),
    [
        ("no_guest_call", "does not export __guest_call"),
        ("no_memory", "does not export a memory"),
        ("unknown_import", "wapc.__not_a_thing, which the host does not offer"),
        ("bad_signature", "cannot link"),
        (
            "wasi_unstable_seek",
            r"imports wasi_unstable.fd_seek, which the host does not offer: its types differ",
        ),
    ],
)
async def test_invalid_modules_are_rejected(node: Node, wat: Wat, guest: str, reason: str) -> None:
    with pytest.raises(InvalidModule, match=reason):
        await node.deploy(guest, wat(guest))
    assert node.apps() == []


async def test_junk_and_empty_uploads(node: Node) -> None:
    with pytest.raises(InvalidModule, match=r"does not compile"):
        await node.deploy("junk", b"\x00asm but not really")
    with pytest.raises(InvalidModule, match=r"empty"):
        await node.deploy("empty", b"")
    assert node.apps() == []
    assert list((node.storage.data_dir / "blobs").iterdir()) == []


async def test_upload_limit(tmp_path: Path) -> None:
    async with Node(Config(data_dir=tmp_path, max_upload_mib=1)) as node:
        with pytest.raises(PayloadTooLarge):
            await node.deploy("big", b"\0asm" + b"\0" * (1 << 20))


async def test_redeploy_keeps_calls_in_flight(node: Node, wat: Wat) -> None:
    await node.deploy("app", wat("host_sleep"))
    in_flight = asyncio.create_task(node.call("app", "main", b"300"))
    await asyncio.sleep(0.05)
    record = await node.deploy("app", wat("echo"))
    assert record.version == 2
    assert await node.call("app", "echo", b"new") == b"new"
    assert await in_flight == b"300"  # finished on the old version
    assert node.status()["instances"]["live"] == 1  # the old instance was dropped


async def test_undeploy(node: Node, wat: Wat) -> None:
    await node.deploy("echo", wat("echo"))
    await node.undeploy("echo")
    with pytest.raises(UnknownApp):
        await node.call("echo", "echo", b"")
    with pytest.raises(UnknownApp):
        await node.undeploy("echo")


async def test_restart_keeps_apps_and_uses_the_compiled_cache(config: Config, wat: Wat) -> None:
    async with Node(config) as node:
        await node.deploy("echo", wat("echo"))
        await node.deploy("echo", wat("echo"))
        sha = node.app("echo").sha256
    async with Node(dataclasses.replace(config)) as node:
        assert node.app("echo").version == 2
        assert node.app("echo").sha256 == sha
        assert await node.call("echo", "echo", b"again") == b"again"
        assert b'assemblex_compile_cache_total{result="hit"} 1.0' in node.metrics_text()


async def test_the_compiled_cache_is_named_by_the_installed_wasmtime_release(
    node: Node, wat: Wat
) -> None:
    record = await node.deploy("echo", wat("echo"))
    release = importlib.metadata.version("wasmtime")  # such as 50.0.1
    assert release.count(".") == 2
    names = [p.name for p in (node.storage.data_dir / "compiled").iterdir()]
    assert names == [f"{record.sha256}-wasmtime{release}.cwasm"]


async def test_corrupt_compiled_cache_is_recompiled(config: Config, wat: Wat) -> None:
    async with Node(config) as node:
        await node.deploy("echo", wat("echo"))
    for f in (Path(config.data_dir) / "compiled").iterdir():
        f.write_bytes(b"garbage")
    async with Node(config) as node:
        assert await node.call("echo", "echo", b"ok") == b"ok"


async def test_cancelling_a_spinning_call_is_safe(node: Node, wat: Wat) -> None:
    """A client that goes away mid-call: the guest stops, its instance is dropped, no crash."""
    await node.deploy("loop", wat("loop"))
    await node.deploy("echo", wat("echo"))
    for _ in range(5):
        task = asyncio.create_task(node.call("loop", "main", b""))
        await asyncio.sleep(0.05)  # long enough to be on a worker thread
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    assert await node.call("echo", "echo", b"still here") == b"still here"
    for _ in range(100):
        if node.status()["instances"]["live"] == 1:
            break
        await asyncio.sleep(0.01)
    assert node.status()["instances"]["live"] == 1  # only echo's warm instance is left


@pytest.mark.parametrize(
    ("guest", "op"),
    [("host_sleep", "main"), ("wasi_sleep", "sleep")],
    ids=["waiting on the host", "in a WASI sleep"],
)
async def test_cancelling_a_call_while_it_waits(node: Node, wat: Wat, guest: str, op: str) -> None:
    await node.deploy("sleep", wat(guest))
    task = asyncio.create_task(node.call("sleep", op, b"10000"))
    await asyncio.sleep(0.05)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert node.status()["instances"]["live"] == 0
    assert await node.call("sleep", op, b"1") == b"1"


async def test_metrics(node: Node, wat: Wat) -> None:
    await node.deploy("echo", wat("echo"))
    await node.call("echo", "echo", b"x")
    for junk in ("nope1", "nope2"):
        with pytest.raises(GuestError):
            await node.call("echo", junk, b"")
    text = node.metrics_text().decode()
    assert 'assemblex_calls_total{app="echo",op="echo",outcome="ok"} 1.0' in text
    # Failed operations share one label value: junk names cannot grow the label set.
    assert 'assemblex_calls_total{app="echo",op="-",outcome="error"} 2.0' in text
    assert "nope1" not in text
    assert 'assemblex_reloads_total{app="echo"} 1.0' in text
    assert "assemblex_instances_live 1.0" in text
    assert 'assemblex_call_seconds_bucket{app="echo",le="+Inf"} 3.0' in text


async def test_host_call_metrics(node: Node, wat: Wat) -> None:
    await node.deploy("hc", wat("hostcall"))
    text = node.metrics_text().decode()
    for namespace in ("host", "kv", "redis", "call", "other"):  # shown from 0
        assert f'assemblex_host_calls_total{{namespace="{namespace}"}} 0.0' in text
    await node.call("hc", "main", hostcall("", "host", "echo", b"x"))
    await node.call("hc", "main", hostcall("k", "kv", "set", b"v"))
    await node.call("hc", "main", hostcall("k", "kv", "get"))
    for junk in ("files", "net"):  # namespace names come from guests: one label for all
        with pytest.raises(GuestError):
            await node.call("hc", "main", hostcall("", junk, "open"))
    text = node.metrics_text().decode()
    assert 'assemblex_host_calls_total{namespace="host"} 1.0' in text
    assert 'assemblex_host_calls_total{namespace="kv"} 2.0' in text
    assert 'assemblex_host_calls_total{namespace="other"} 2.0' in text
    assert 'namespace="files"' not in text


async def test_apps_per_node_limit(tmp_path: Path, wat: Wat) -> None:
    async with Node(Config(data_dir=tmp_path, max_apps=2)) as node:
        await node.deploy("a", wat("echo"))
        await node.deploy("b", wat("echo"))
        with pytest.raises(BadRequest, match="already has 2 apps"):
            await node.deploy("c", wat("echo"))
        await node.deploy("a", wat("host_echo"))  # a new version of an app is not a new app
        await node.undeploy("b")
        await node.deploy("c", wat("echo"))


GUEST_POINTERS_WAT = """
(module
  (import "wapc" "__guest_response" (func $guest_response (param i32 i32)))
  (import "wapc" "__host_call"
    (func $host_call (param i32 i32 i32 i32 i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (data (i32.const 0) "host")
  (data (i32.const 16) "echo")
  (func (export "__guest_call") (param $op_len i32) (param $msg_len i32) (result i32)
    (if (i32.eq (local.get $op_len) (i32.const 1))  ;; a host call payload past the memory
      (then (return (call $host_call (i32.const 0) (i32.const 0) (i32.const 0) (i32.const 4)
                                     (i32.const 16) (i32.const 4)
                                     (i32.const 65530) (i32.const 7)))))
    (if (i32.eq (local.get $op_len) (i32.const 2))  ;; a response past the memory
      (then (call $guest_response (i32.const -4) (i32.const 8))
            (return (i32.const 1))))
    ;; grow the memory during the call, then answer from the new page
    (call $guest_response (i32.const 0) (i32.const 4))
    (drop (memory.grow (i32.const 1)))
    (i32.store (i32.const 65536) (i32.const 0x776f7267))  ;; "grow"
    (call $guest_response (i32.const 65536) (i32.const 4))
    (i32.const 1)))
"""


async def test_guest_pointers_are_checked_against_the_current_memory(node: Node) -> None:
    await node.deploy("pointers", bytes(wasmtime.wat2wasm(GUEST_POINTERS_WAT)))
    with pytest.raises(GuestError, match="out of bounds"):
        await node.call("pointers", "x", b"")
    with pytest.raises(GuestError, match="out of bounds"):
        await node.call("pointers", "xx", b"")
    for _ in range(2):  # a fresh instance, then the same one with its memory grown
        assert await node.call("pointers", "xxx", b"") == b"grow"
