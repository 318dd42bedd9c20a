"""Replica: the store API, conflict resolution, limits and the size of deltas."""

from __future__ import annotations

import pytest

from crdt import (
    ClosedError,
    Error,
    Limits,
    LocalError,
    LWWRegister,
    Replica,
    SyncResponse,
    encode_message,
)
from crdt._codec import decode_delta, encode_delta
from crdt._types import Delta
from crdt.testing import FakeClock, canonical, exchange, full_exchange


def test_registers_and_counters() -> None:
    r = Replica("a")
    assert r.get("k") is None
    assert r.value("c") == 0
    r.set("k", b"v1")
    r.set("k", bytearray(b"v2"))
    assert r.get("k") == b"v2"
    r.delete("k")
    assert r.get("k") is None
    assert r.incr("c") == 1
    assert r.incr("c", 5) == 6
    assert r.incr("c", 0) == 6
    assert r.value("c") == 6
    # Separate namespaces, as in the local store they replace.
    r.set("c", b"register")
    assert r.value("c") == 6
    assert r.get("c") == b"register"
    r.set("app/x", b"1")
    r.set("app/y", b"2")
    r.delete("app/y")
    assert r.keys("app/") == ["app/x"]
    r.incr("app/n")
    r.incr("app/m", 0)  # no write: no counter
    assert r.counter_keys("app/") == ["app/n"]
    assert r.counter_keys() == ["app/n", "c"]


def test_local_misuse_raises_local_error() -> None:
    r = Replica("a", limits=Limits(max_key_bytes=8, max_value_bytes=4))
    for call in (
        lambda: r.incr("c", -1),
        lambda: r.incr("c", True),
        lambda: r.set("k" * 9, b""),
        lambda: r.set("k", b"12345"),
        lambda: r.set("\ud800", b""),
        lambda: r.set("k", "text"),  # type: ignore[arg-type]
    ):
        with pytest.raises(LocalError):
            call()
    with pytest.raises(ValueError, match="grow"):  # LocalError is a ValueError too
        r.incr("c", -1)
    with pytest.raises(LocalError):
        Replica("")
    r.close()
    with pytest.raises(ClosedError):
        r.set("k", b"")
    assert issubclass(ClosedError, Error)


def test_tie_on_the_clock_resolves_the_same_everywhere() -> None:
    clock = FakeClock()
    a, b, c = (Replica(n, clock=clock) for n in ("a", "b", "c"))
    for r in (a, b, c):  # the same wall time, each the first write: the same stamp
        r.set("k", r.node_id.encode())
    assert {r._state.regs["k"].ts for r in (a, b, c)} == {a._state.regs["k"].ts}
    exchange(a, b)
    exchange(c, a)
    exchange(b, c)
    assert a.get("k") == b.get("k") == c.get("k") == b"c"


def test_a_write_that_has_seen_another_wins() -> None:
    ahead, behind = FakeClock(1_000_003_600.0), FakeClock(1_000_000_000.0)
    z, a = Replica("z", clock=ahead), Replica("a", clock=behind)
    z.set("k", b"from z")
    exchange(z, a)
    # a's wall clock is an hour late and its id is smaller: having seen z's write, it wins.
    a.set("k", b"from a, after z")
    exchange(a, z)
    assert z.get("k") == a.get("k") == b"from a, after z"
    # Concurrent writes (no sync between) go to the later stamp.
    z.set("k", b"z again")
    a.set("k", b"a again")
    exchange(a, z)
    assert a.get("k") == z.get("k") == b"z again"


def test_delete_wins_like_a_write() -> None:
    clock = FakeClock()
    a, b = Replica("a", clock=clock), Replica("b", clock=clock)
    a.set("k", b"1")
    exchange(a, b)
    clock.now += 1
    b.delete("k")
    clock.now += 1
    a.set("other", b"x")
    exchange(a, b)
    assert a.get("k") is None
    assert b.get("k") is None
    clock.now += 1
    a.set("k", b"back")
    exchange(a, b)
    assert b.get("k") == b"back"


def test_counter_is_the_sum_of_all_increments() -> None:
    replicas = [Replica(f"n{i}") for i in range(4)]
    for i, r in enumerate(replicas):
        for _ in range(i + 1):
            r.incr("c", i)
    full_exchange(replicas)
    assert [r.value("c") for r in replicas] == [0 * 1 + 1 * 2 + 2 * 3 + 3 * 4] * 4
    assert replicas[0].counter("c").slots["n3"][0] == 12


def test_merge_is_idempotent_and_reports_change() -> None:
    a, b = Replica("a"), Replica("b")
    a.set("k", b"v")
    d = a.delta(b.digest())
    assert b.merge(d) is True
    assert b.merge(d) is False
    assert b.get("k") == b"v"
    # Nothing to send: still a valid (empty) delta.
    assert b.merge(a.delta(b.digest())) is False


def test_delta_costs_what_changed_not_the_store() -> None:
    clock = FakeClock()
    a, b = Replica("a", clock=clock), Replica("b", clock=clock)
    for i in range(10_000):
        a.set(f"app/app{i % 50}/key{i}", b"x" * 100)
    exchange(a, b)
    assert canonical(a) == canonical(b)
    for i in range(0, 100, 10):
        a.set(f"app/app{i % 50}/key{i}", b"y" * 100)
    digest = b.digest()
    delta = a.delta(digest)
    assert len(digest) < 64
    assert 10 * 100 < len(delta) < 2_000
    b.merge(delta)
    assert canonical(a) == canonical(b)
    # Nothing left either way: the deltas carry no entry, and a sync sends none.
    for src, dst in ((a, b), (b, a)):
        left = decode_delta(src.delta(dst.digest()), Limits())
        assert (left.regs, left.ctrs) == ((), ())
        assert src.delta_chunk(dst.digest()).delta is None
    assert len(b.delta(a.digest())) < 16


def test_large_deltas_are_cut_and_resume() -> None:
    limits = Limits(chunk_bytes=4096)
    a = Replica("a", limits=limits)
    b = Replica("b", limits=limits)
    c = Replica("c", limits=limits)
    for i in range(300):
        a.set(f"k{i}", b"x" * 100)
        c.incr(f"n{i % 7}")
    exchange(a, c)  # c now holds a's writes: two origins to send from
    chunks = 0
    while True:
        chunk = c.delta_chunk(b.digest())
        assert chunk.delta is not None
        assert len(chunk.delta) < 2 * limits.chunk_bytes
        b.merge(chunk.delta)
        chunks += 1
        if not chunk.more:
            break
    assert chunks > 5
    assert canonical(b) == canonical(a) == canonical(c)
    assert c.delta_chunk(b.digest()).delta is None


def test_an_entry_larger_than_a_chunk_still_goes() -> None:
    limits = Limits(chunk_bytes=1024)
    a, b = Replica("a", limits=limits), Replica("b", limits=limits)
    a.set("small", b"s")
    a.set("big", b"x" * 100_000)
    a.set("after", b"a")
    exchange(a, b)
    assert canonical(a) == canonical(b)


def test_behind_flag() -> None:
    a, b = Replica("a"), Replica("b")
    a.set("k", b"1")
    assert b.delta_chunk(a.digest()).behind is True
    assert a.delta_chunk(b.digest()).behind is False


def test_what_a_replica_sends_fits_a_1_mib_frame() -> None:
    r = Replica("r")
    big = b"x" * r.limits.max_value_bytes
    for i in range(1000):  # a thousand writers, some of them writing the largest values
        node = f"node-{i:04}-{'n' * 100}"
        value = big if i % 100 == 0 else b"v" * 100
        reg = LWWRegister(1000 + i, node, value)
        r.merge(encode_delta(Delta(1000 + i, ((node, 0, 1000 + i),), ((f"k{i}", reg),))))
    empty = Replica("empty")
    sizes = []
    while True:
        chunk = r.delta_chunk(empty.digest())
        if chunk.delta is None:
            break
        msg = encode_message(SyncResponse(chunk.delta, chunk.more, r.digest()))
        sizes.append(len(msg))
        empty.merge(chunk.delta)
    assert canonical(empty) == canonical(r)
    assert len(sizes) > 3
    assert max(sizes) < 1 << 20
