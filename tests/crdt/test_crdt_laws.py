"""Merge is a join: commutative, associative, idempotent, for each type and whole replicas."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from crdt import GCounter, LWWRegister, Replica
from crdt.testing import FakeClock, canonical

nodes = st.sampled_from(["a", "b", "c"])
# Small ranges so that ties on the stamp, and even on (stamp, node), are common.
registers = st.builds(LWWRegister, st.integers(1, 4), nodes, st.none() | st.binary(max_size=3))
slots = st.tuples(st.integers(1, 4), st.integers(1, 4))
counters = st.builds(GCounter, st.dictionaries(nodes, slots))


@settings(deadline=None)
@given(registers, registers)
def test_register_merge_commutes(a: LWWRegister, b: LWWRegister) -> None:
    assert a.merge(b) == b.merge(a)


@settings(deadline=None)
@given(registers, registers, registers)
def test_register_merge_associates(a: LWWRegister, b: LWWRegister, c: LWWRegister) -> None:
    assert a.merge(b).merge(c) == a.merge(b.merge(c))


@settings(deadline=None)
@given(registers, registers)
def test_register_merge_is_idempotent(a: LWWRegister, b: LWWRegister) -> None:
    assert a.merge(a) == a
    assert a.merge(b).merge(b) == a.merge(b)


@settings(deadline=None)
@given(counters, counters)
def test_counter_merge_commutes(a: GCounter, b: GCounter) -> None:
    assert a.merge(b) == b.merge(a)


@settings(deadline=None)
@given(counters, counters, counters)
def test_counter_merge_associates(a: GCounter, b: GCounter, c: GCounter) -> None:
    assert a.merge(b).merge(c) == a.merge(b.merge(c))


@settings(deadline=None)
@given(counters, counters)
def test_counter_merge_is_idempotent_and_grows(a: GCounter, b: GCounter) -> None:
    assert a.merge(a) == a
    assert a.merge(b).merge(b) == a.merge(b)
    assert a.merge(b).value >= max(a.value, b.value)


def test_register_order() -> None:
    assert LWWRegister(2, "a", b"x").wins_over(LWWRegister(1, "z", b"y"))
    # A tie on the stamp goes to the greater node id, whichever side merges.
    a, z = LWWRegister(5, "a", b"x"), LWWRegister(5, "z", b"y")
    assert a.merge(z) is z
    assert z.merge(a) is z
    # A tombstone is a write like any other.
    assert LWWRegister(6, "a", None).merge(z).value is None


ops = st.lists(
    st.tuples(
        st.sampled_from(["set", "delete", "incr"]),
        st.sampled_from(["k1", "k2", "k3"]),
        st.integers(0, 3),
        st.integers(-2, 2),
    ),
    max_size=12,
)


def replica_from(node: str, script: list[tuple[str, str, int, int]]) -> Replica:
    clock = FakeClock()
    r = Replica(node, clock=clock)
    for op, key, n, dt in script:
        clock.now += dt * 0.0005  # the wall clock may stall or go back: stamps still tie
        if op == "set":
            r.set(key, bytes([n]))
        elif op == "delete":
            r.delete(key)
        else:
            r.incr(key, n)
    return r


def full(r: Replica) -> bytes:
    return r.delta(Replica("empty").digest())


@settings(max_examples=60, deadline=None)
@given(ops, ops, ops)
def test_replica_merge_is_a_join(x: list, y: list, z: list) -> None:  # type: ignore[type-arg]
    a, b, c = replica_from("a", x), replica_from("b", y), replica_from("c", z)
    da, db, dc = full(a), full(b), full(c)
    orders = [(da, db, dc), (dc, db, da), (db, dc, da, db, da), (da, da, dc, db, dc)]
    states = []
    for order in orders:
        r = Replica("fresh")
        for d in order:
            r.merge(d)
        states.append(canonical(r))
    assert all(s == states[0] for s in states)
    # Merging into one of the writers gives the same join.
    for d in (db, dc):
        a.merge(d)
    assert canonical(a) == states[0]
