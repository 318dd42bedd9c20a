"""Deltas, digests and messages: round trips, and every kind of bad input refused."""

from __future__ import annotations

import contextlib
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from crdt import (
    DEFAULT_LIMITS,
    Limits,
    Push,
    RemoteError,
    Replica,
    SyncRequest,
    SyncResponse,
    decode_message,
    encode_message,
)
from crdt._codec import decode_delta, decode_digest, encode_delta, encode_digest
from crdt._types import MAX_INT, CtrEntry, Delta, LWWRegister
from crdt.testing import canonical

texts = st.text(max_size=8)
node_ids = st.text(min_size=1, max_size=6)
stamps = st.integers(1, MAX_INT)
deltas = st.builds(
    Delta,
    st.integers(0, MAX_INT),
    st.lists(
        st.tuples(node_ids, st.integers(0, 100), st.integers(101, MAX_INT)),
        unique_by=lambda c: c[0],
        max_size=3,
    ).map(tuple),
    st.lists(
        st.tuples(texts, st.builds(LWWRegister, stamps, node_ids, st.none() | st.binary())),
        max_size=5,
    ).map(tuple),
    st.lists(st.builds(CtrEntry, texts, node_ids, stamps, stamps), max_size=5).map(tuple),
)


@settings(deadline=None)
@given(deltas)
def test_delta_round_trip(delta: Delta) -> None:
    assert decode_delta(encode_delta(delta), DEFAULT_LIMITS) == delta


@settings(deadline=None)
@given(st.dictionaries(node_ids, stamps, max_size=6))
def test_digest_round_trip(vv: dict[str, int]) -> None:
    assert decode_digest(encode_digest(vv), DEFAULT_LIMITS) == vv


@settings(max_examples=30, deadline=None)
@given(deltas)
def test_every_truncation_is_refused(delta: Delta) -> None:
    data = encode_delta(delta)
    for n in range(len(data)):
        with pytest.raises(RemoteError):
            decode_delta(data[:n], DEFAULT_LIMITS)
    with pytest.raises(RemoteError):
        decode_delta(data + b"\0", DEFAULT_LIMITS)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=64), st.sampled_from([b"D\x01", b"G\x01", b"S\x01Q", b"S\x01R"]))
def test_random_bytes_raise_remote_error_or_parse(tail: bytes, head: bytes) -> None:
    for parse in (
        lambda d: decode_delta(d, DEFAULT_LIMITS),
        lambda d: decode_digest(d, DEFAULT_LIMITS),
        decode_message,
    ):
        with contextlib.suppress(RemoteError):
            parse(head + tail)


def delta_with(*, nodes: list[bytes], body: bytes) -> bytes:
    table = bytes([len(nodes)]) + b"".join(bytes([len(n)]) + n for n in nodes)
    return b"D\x01" + struct.pack(">Q", 1) + table + body


def reg(key: bytes, node: int, ts: int, tag: int, value: bytes = b"") -> bytes:
    out = bytes([len(key)]) + key + struct.pack(">HQB", node, ts, tag)
    return out + (bytes([len(value)]) + value if tag == 1 else b"")


@pytest.mark.parametrize(
    ("data", "why"),
    [
        (b"", "empty"),
        (b"X\x01" + bytes(20), "magic"),
        (b"D\x02" + bytes(20), "version"),
        (delta_with(nodes=[b"a", b"a"], body=b"\0\0\0"), "duplicate node"),
        (delta_with(nodes=[b""], body=b"\0\0\0"), "empty node id"),
        (delta_with(nodes=[b"\xff"], body=b"\0\0\0"), "bad UTF-8 node"),
        (delta_with(nodes=[b"a"], body=b"\0\x01" + reg(b"k", 1, 5, 0) + b"\0"), "dangling"),
        (delta_with(nodes=[b"a"], body=b"\0\x01" + reg(b"k", 0, 0, 0) + b"\0"), "ts 0"),
        (delta_with(nodes=[b"a"], body=b"\0\x01" + reg(b"k", 0, 1 << 63, 0) + b"\0"), "ts"),
        (delta_with(nodes=[b"a"], body=b"\0\x01" + reg(b"k", 0, 5, 2) + b"\0"), "tag"),
        (delta_with(nodes=[b"a"], body=b"\0\x01" + reg(b"\xc3", 0, 5, 0) + b"\0"), "utf-8"),
        (delta_with(nodes=[b"a"], body=b"\0\xff\xff\xff\x7f"), "huge count"),
        (delta_with(nodes=[b"a"], body=b"\x01" + struct.pack(">HQQ", 0, 5, 5) + b"\0\0"), "lo=hi"),
        (delta_with(nodes=[b"a"], body=b"\0\0\0\0"), "trailing"),
        (delta_with(nodes=[b"a"], body=b"\0\0\0"), "ok"),
    ],
)
def test_malformed_deltas(data: bytes, why: str) -> None:
    if why == "ok":
        assert decode_delta(data, DEFAULT_LIMITS) == Delta(1)
        return
    with pytest.raises(RemoteError):
        decode_delta(data, DEFAULT_LIMITS)


def test_limits_are_enforced_on_input() -> None:
    small = Limits(
        max_key_bytes=4, max_value_bytes=8, max_nodes=4, max_delta_bytes=4096, chunk_bytes=1024
    )
    ok = Delta(1, (), (("key", LWWRegister(1, "a", b"12345678")),))
    assert decode_delta(encode_delta(ok), small) == ok
    counter_ok = Delta(1, (), (), (CtrEntry("keyz", "a", 1, 1),))
    assert decode_delta(encode_delta(counter_ok), small) == counter_ok
    for bad in (
        Delta(1, (), (("key5x", LWWRegister(1, "a", b"")),)),
        Delta(1, (), (("key", LWWRegister(1, "a", b"123456789")),)),
        Delta(1, (), (), (CtrEntry("key5x", "a", 1, 1),)),
    ):
        with pytest.raises(RemoteError):
            decode_delta(encode_delta(bad), small)
    with pytest.raises(RemoteError, match="limit"):
        decode_delta(b"D\x01" + bytes(small.max_delta_bytes), small)
    with pytest.raises(RemoteError, match="limit"):
        decode_digest(b"G\x01" + bytes(DEFAULT_LIMITS.max_digest_bytes), DEFAULT_LIMITS)
    many = Limits(max_nodes=2)
    with pytest.raises(RemoteError):
        decode_digest(encode_digest({"a": 1, "b": 1, "c": 1}), many)


def test_a_delta_may_name_at_most_max_nodes_writers() -> None:
    small = Limits(max_nodes=4)

    def delta(writers: int) -> Delta:
        regs = tuple((f"k{i}", LWWRegister(1, f"n{i}", b"")) for i in range(writers))
        return Delta(1, (), regs)

    assert decode_delta(encode_delta(delta(4)), small) == delta(4)
    with pytest.raises(RemoteError):
        decode_delta(encode_delta(delta(5)), small)


def test_digest_must_be_canonical() -> None:
    good = encode_digest({"a": 1, "b": 2})
    swapped = b"G\x01\x02" + good[3 + 10 :] + good[3 : 3 + 10]
    with pytest.raises(RemoteError, match="ascending"):
        decode_digest(swapped, DEFAULT_LIMITS)


@settings(deadline=None)
@given(
    st.one_of(
        st.builds(SyncRequest, st.binary()),
        st.builds(Push, st.binary()),
        st.builds(SyncResponse, st.none() | st.binary(), st.booleans(), st.none() | st.binary()),
    )
)
def test_message_round_trip(msg: SyncRequest | SyncResponse | Push) -> None:
    assert decode_message(encode_message(msg)) == msg


@pytest.mark.parametrize(
    "data",
    [b"", b"S\x01", b"S\x01X", b"S\x01R", b"S\x01R\x08", b"S\x01R\x01\0\0\0\x09ab", b"S\x01R\x00x"],
)
def test_malformed_messages(data: bytes) -> None:
    with pytest.raises(RemoteError):
        decode_message(data)


def test_bad_delta_changes_nothing() -> None:
    r = Replica("r")
    r.set("k", b"v")
    r.incr("c", 2)
    before, digest, version = canonical(r), r.digest(), r.local_version()
    good = Replica("p")
    good.set("k", b"w")
    good.set("k2", b"x")
    data = good.delta(r.digest())
    oversized = data + bytes(DEFAULT_LIMITS.max_delta_bytes)
    for bad in (data[:-1], data + b"\0", b"X" + data[1:], b"D\x01" + bytes(9), oversized):
        with pytest.raises(RemoteError):
            r.merge(bad)
        assert canonical(r) == before
        assert r.digest() == digest
        assert r.local_version() == version
    with pytest.raises(RemoteError):
        r.delta(b"G\x01\x05")
