"""Replica: the store API, conflict resolution, limits and the size of deltas."""

from __future__ import annotations

from collections.abc import Callable

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
from crdt._state import _ENTRY_OVERHEAD, _SWEEP_MIN, State
from crdt._types import MAX_INT, CtrEntry, Delta
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


def test_a_snapshot_is_the_whole_state_cut_at_the_chunk_size_with_the_claims_last() -> None:
    """What compaction writes: every entry once, a delta cut as soon as it reaches
    ``chunk_bytes``, and the version vector claimed (from 0) in the last delta only."""
    reg = 3 + _ENTRY_OVERHEAD + 43  # key "kNN", a 43-byte value: 70 bytes
    ctr = 11 + _ENTRY_OVERHEAD  # key "counter-kNN": 35 bytes
    limits = Limits(chunk_bytes=4 * reg)
    a, b = State("a", limits), State("b", limits)
    for i in range(10):
        a.write(f"k{i:02}", bytes([i]) * 43, now=1.0 + i)
    for i in range(19):
        a.incr(f"counter-k{i:02}", i + 1, now=20.0 + i)
    a.apply(b.incr("counter-k19", 7, now=50.0))
    assert 2 * reg + 4 * ctr == 8 * ctr == limits.chunk_bytes

    chunks = list(a.snapshot())

    assert [(len(d.regs), len(d.ctrs)) for d in chunks] == [
        (4, 0),
        (4, 0),
        (2, 4),
        (0, 8),
        (0, 8),
        (0, 0),
    ]
    assert all(d.claims == () for d in chunks[:-1])
    assert chunks[-1].claims == (("a", 0, a.vv["a"]), ("b", 0, a.vv["b"]))
    assert all(d.clock == a.clock for d in chunks)
    copy = State("c", limits)
    for d in chunks:
        copy.apply(d)
    assert copy.canonical() == a.canonical()
    assert copy.vv == a.vv


# -- the pure state's rules (crdt/_state.py) ---------------------------------------------------

_REG = 3 + _ENTRY_OVERHEAD + 43  # what a register "kNN" with a 43-byte value costs in a delta


def test_a_local_stamp_is_the_wall_clock_in_ms_or_one_past_the_clock() -> None:
    s = State("a", Limits())
    assert (s.clock, s.local_version()) == (0, 0)
    assert s.write("k", b"", now=0.0).clock == 1  # the wall clock at 0: one past a fresh clock
    assert s.write("k", b"", now=1.5).clock == 1500 << 16  # milliseconds, 16 low bits spare
    assert s.write("k", b"", now=1.5).clock == (1500 << 16) + 1  # the same millisecond
    assert s.write("k", b"", now=-5.0).clock == (1500 << 16) + 2  # a wall clock gone back
    assert s.local_version() == (1500 << 16) + 2
    far = State("b", Limits())
    assert far.write("k", b"", now=1e30).clock == (MAX_INT >> 16) << 16  # clamped, not wrapped


def test_the_clock_and_counters_stop_at_max_int() -> None:
    s = State("a", Limits())
    s.clock = MAX_INT - 1  # as after a peer's far-future stamp
    assert s.write("k", b"", now=0.0).clock == MAX_INT
    with pytest.raises(
        LocalError, match=r"^the hybrid clock is exhausted \(a peer sent a far-future stamp\)$"
    ):
        s.write("k", b"", now=0.0)
    c = State("a", Limits())
    c.incr("n", MAX_INT - 1, now=1.0)
    c.incr("n", 1, now=2.0)
    assert c.value("n") == MAX_INT
    with pytest.raises(LocalError, match=r"^counter overflow$"):
        c.incr("n", 1, now=3.0)


def test_reads_of_what_is_not_there() -> None:
    s = State("a", Limits())
    assert s.counter("none").slots == {}
    s.write("k", b"v", now=1.0)
    s.incr("c", 2, now=2.0)
    assert s.canonical() == (
        [("k", LWWRegister(1000 << 16, "a", b"v"))],
        [("c", "a", (2, 2000 << 16))],
    )


def test_apply_returns_what_changed_with_its_claims_made_absolute() -> None:
    a, b = State("a", Limits()), State("b", Limits())
    w = b.write("k", b"1", now=1.0)
    i = b.incr("c", 2, now=2.0)
    delta = Delta(b.clock, (("b", 0, b.clock),), w.regs, i.ctrs)
    assert a.apply(delta) == (Delta(b.clock, (("b", 0, b.clock),), w.regs, i.ctrs), {"k", "c"})
    assert a.clock == b.clock
    assert a.apply(delta) == (None, set())  # nothing new the second time
    # Entries alone, without a claim: still what changed.
    e = b.write("e", b"2", now=3.0)
    assert a.apply(Delta(e.clock, (), e.regs)) == (Delta(e.clock, (), e.regs), {"e"})
    # A claim alone that extends what we have, recorded from 0; one with a gap is not.
    assert a.apply(Delta(5, (("b", 3, e.clock + 9),), (), ())) == (
        Delta(a.clock, (("b", 0, e.clock + 9),), (), ()),
        set(),
    )
    assert a.apply(Delta(5, (("x", 1, 7),), (), ())) == (None, set())
    # A claim from 0 to 1 by a node never seen: taken.
    fresh = State("f", Limits())
    assert fresh.apply(Delta(0, (("x", 0, 1),), (), ())) == (
        Delta(0, (("x", 0, 1),), (), ()),
        set(),
    )
    assert fresh.clock == 0  # the clock follows stamps and this node's own version only
    assert fresh.apply(Delta(3, (("f", 0, 100),), (), ()))[0] is not None
    assert fresh.clock == 100
    assert fresh.apply(Delta(1, (), (("z", LWWRegister(2, "y", None)),)))[1] == {"z"}
    assert fresh.clock == 100  # never goes back
    ahead = State("h", Limits())
    ahead.apply(Delta(500, (), (("z", LWWRegister(500, "y", None)),)))  # a peer's later stamp
    ahead.apply(Delta(1, (), (("q", LWWRegister(2, "y", None)),)))
    assert ahead.clock == 500  # not back to the older delta's stamps


def _sweep_point(s: State, write: Callable[[], object]) -> tuple[int, int]:
    """How many overwrites until the writer's stale dots are swept, and the dots left."""
    dots = s._dots[s.node_id]
    for n in range(1, 4 * _SWEEP_MIN):
        before = len(dots.items)
        write()
        if len(dots.items) < before:
            return n, len(dots.items)
    raise AssertionError("never swept")


def test_stale_dots_are_swept_once_they_outnumber_the_live_ones() -> None:
    now = iter(range(1, 1 << 20))
    s = State("a", Limits())
    s.write("k", b"", now=next(now))
    s.incr("c", 1, now=next(now))
    for _ in range(2):  # the count starts again after a sweep
        # Past _SWEEP_MIN stale dots, and more stale than live: only the live ones are kept
        # (the register's and the counter's), then the new one.
        assert _sweep_point(s, lambda: s.write("k", b"", now=next(now))) == (_SWEEP_MIN + 1, 3)
        assert _sweep_point(s, lambda: s.incr("c", 1, now=next(now))) == (_SWEEP_MIN + 1, 3)
    assert s.delta_for({})[0] == Delta(
        s.clock,
        (("a", 0, s.clock),),
        (("k", s.regs["k"]),),
        (CtrEntry("c", "a", s.ctrs["c"]["a"][0], s.ctrs["c"]["a"][1]),),
    )
    # With many live entries, the stale ones must outnumber them first.
    big = State("a", Limits())
    for i in range(2000):
        big.write(f"k{i}", b"", now=next(now))
    assert _sweep_point(big, lambda: big.write("k0", b"", now=next(now))) == (2000, 2001)


def test_what_a_peer_lacks() -> None:
    s = State("a", Limits())
    s.write("k", b"", now=1.0)
    have = s.vv["a"]
    assert not s.lacks({})
    assert not s.lacks({"a": have})
    assert not s.lacks({"b": 0})
    assert s.lacks({"a": have + 1})
    assert s.lacks({"b": 1})


def test_a_delta_for_a_peer_names_every_origin_and_cuts_at_the_budget() -> None:
    s = State("a", Limits(chunk_bytes=2 * _REG))
    # Entries of a writer we hold no claim for, a claim without entries, our own writes.
    s.apply(Delta(1, (), (("w00", LWWRegister(1, "w", bytes(43))),)))
    s.apply(Delta(1, (("x", 0, 1),), (), ()))
    s.write("k00", bytes(43), now=1.0)
    s.write("k00", bytes(43), now=2.0)  # an overwrite: the stale entry is not sent
    delta, more = s.delta_for({})
    assert more is False
    assert delta == Delta(
        s.clock,
        (("a", 0, s.vv["a"]), ("x", 0, 1)),
        (("k00", s.regs["k00"]), ("w00", s.regs["w00"])),
        (),
    )
    # Our two entries fit the budget exactly; the writer after us is cut, unclaimed.
    s.write("k01", bytes(43), now=3.0)
    delta, more = s.delta_for({"x": 1})
    assert more is True
    assert delta == Delta(
        s.clock, (("a", 0, s.vv["a"]),), (("k00", s.regs["k00"]), ("k01", s.regs["k01"])), ()
    )


def test_counters_are_cut_at_the_budget_too() -> None:
    ctr = 3 + _ENTRY_OVERHEAD
    s = State("a", Limits(chunk_bytes=2 * ctr))
    for i in range(3):
        s.incr(f"c{i:02}", 1, now=1.0 + i)
    delta, more = s.delta_for({})
    assert more is True
    assert [e.key for e in delta.ctrs] == ["c00", "c01"]
    assert delta.claims == (("a", 0, s.ctrs["c02"]["a"][1] - 1),)


def test_local_writes_since_a_stamp_for_an_eager_push() -> None:
    s = State("a", Limits(chunk_bytes=2 * _REG))
    assert s.local_since(0) == (None, 0)  # nothing written yet
    stamps = [s.write(f"k{i:02}", bytes(43), now=1.0 + i).clock for i in range(3)]
    assert s.local_since(stamps[2]) == (None, stamps[2])
    delta, upto = s.local_since(0)
    assert upto == stamps[2] - 1  # cut before the third: claimed up to just before it
    assert delta is not None
    assert delta.claims == (("a", 0, upto),)
    assert [k for k, _ in delta.regs] == ["k00", "k01"]
    delta, upto = s.local_since(upto)
    assert upto == stamps[2]
    assert delta is not None
    assert delta.claims == (("a", stamps[2] - 1, stamps[2]),)
    assert [k for k, _ in delta.regs] == ["k02"]


def test_an_eager_push_holds_only_own_writes_up_to_the_own_version() -> None:
    s = State("a", Limits())
    s.write("k", b"1", now=1.0)
    have = s.vv["a"]
    # An entry of ours stamped past what we claim (an older run's write, come back unclaimed):
    # anti-entropy sends it like any other, the push of our version does not.
    s.apply(Delta(have + 7, (), (("z", LWWRegister(have + 7, "a", b"")),)))
    delta, upto = s.local_since(0)
    assert upto == have
    assert delta is not None
    assert [k for k, _ in delta.regs] == ["k"]


def test_a_snapshot_counts_every_byte_toward_the_cut() -> None:
    """One byte past a whole number of entries: the cut comes an entry later, at every
    restart of the count; keys are counted in UTF-8 bytes."""
    ctr = 11 + _ENTRY_OVERHEAD
    s = State("a", Limits(chunk_bytes=4 * _REG + 1))
    for i in range(10):
        s.write(f"k{i:02}", bytes(43), now=1.0 + i)
    for i in range(20):
        s.incr(f"counter-k{i:02}", 1, now=20.0 + i)
    assert 8 * ctr < s.limits.chunk_bytes < 9 * ctr
    shape = [(len(d.regs), len(d.ctrs)) for d in s.snapshot()]
    assert shape == [(5, 0), (5, 0), (0, 9), (0, 9), (0, 2)]
    wide = 3 + _ENTRY_OVERHEAD + 10  # "é0": 2 characters, 3 bytes
    u = State("u", Limits(chunk_bytes=2 * wide))
    for i in range(4):
        u.write(f"\u00e9{i}", bytes(10), now=1.0 + i)
    assert [len(d.regs) for d in u.snapshot()] == [2, 2, 0]
