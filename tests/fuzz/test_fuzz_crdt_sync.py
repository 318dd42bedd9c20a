"""Fuzzing the replica's sync path: ``decode_message`` and ``AntiEntropy.on_message``.

This is the daemon's path for a peer's bytes (``cluster.Cluster._events``): decode the
message, hand it to the anti-entropy core, which makes the replica parse and merge what it
carries. The promise (crdt/_sync.py, crdt/_errors.py): bad input raises ``RemoteError`` with
nothing changed and nothing sent; any other exception would end the daemon's sync task.

Inputs: arbitrary bytes; valid messages (pushes, requests and answers built from a peer
replica with random writes) mutated by bit flips, cuts, splices and insertions; the same on a
replica kept on disk, reopened after the run to check that what was accepted is what is
replayed.
"""

from __future__ import annotations

import itertools
import random
import tempfile
import time
from pathlib import Path
from typing import Any

import pytest
from fuzz_settings import SCALE, fuzz_settings
from hypothesis import given, settings
from hypothesis import strategies as st

import crdt
from crdt import (
    AntiEntropy,
    Push,
    RemoteError,
    Replica,
    SyncRequest,
    SyncResponse,
    decode_message,
    encode_message,
)

FUZZ = fuzz_settings(150)

KEYS = ["apps/a", "apps/a/version", "apps/b", "members/x", "kv/a/k"]
writes = st.lists(
    st.tuples(st.sampled_from(["set", "delete", "incr"]), st.sampled_from(KEYS),
              st.binary(max_size=16)),
    max_size=8,
)  # fmt: skip


def _clock(start: float) -> Any:
    ticks = itertools.count()
    return lambda: start + next(ticks) * 0.001


def _apply(replica: Replica, ops: list[tuple[str, str, bytes]]) -> None:
    for op, key, value in ops:
        if op == "set":
            replica.set(key, value)
        elif op == "delete":
            replica.delete(key)
        else:
            replica.incr(key, 1 + len(value))


def _snapshot(replica: Replica) -> tuple[Any, ...]:
    """Everything merge could change: data, version vector, clock (the last two private)."""
    state = replica._state
    return replica.digest(), state.canonical(), dict(state.vv), state.clock


def _messages(peer: Replica, target: Replica) -> list[bytes]:
    """Valid encoded messages the peer could send the target."""
    out: list[crdt.Message] = [SyncRequest(peer.digest()), SyncRequest(target.digest())]
    delta, _ = peer.local_delta(0)
    if delta is not None:
        out.append(Push(delta))
    chunk = peer.delta_chunk(target.digest())
    out.append(SyncResponse(chunk.delta, chunk.more, peer.digest()))
    out.append(SyncResponse(chunk.delta, False, None))
    return [encode_message(m) for m in out]


@st.composite
def mutate(draw: st.DrawFn, data: bytes, pool: list[bytes]) -> bytes:
    buf = bytearray(data)
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(["flip", "set", "cut", "insert", "delete", "splice"]))
        pos = draw(st.integers(0, max(len(buf) - 1, 0)))
        if kind == "flip" and buf:
            buf[pos] ^= 1 << draw(st.integers(0, 7))
        elif kind == "set" and buf:
            buf[pos] = draw(st.sampled_from([0x00, 0x01, 0x7F, 0x80, 0xFF]))
        elif kind == "cut":
            del buf[pos:]
        elif kind == "insert":
            buf[pos:pos] = draw(st.binary(min_size=1, max_size=8))
        elif kind == "delete" and buf:
            del buf[pos : pos + draw(st.integers(1, 8))]
        elif kind == "splice":
            other = draw(st.sampled_from(pool))
            buf[pos:] = other[draw(st.integers(0, len(other))) :]
    return bytes(buf)


def _feed(core: AntiEntropy, replica: Replica, data: bytes, now: float) -> bool:
    """Feed bytes as the daemon does; True if accepted. Checks the promise on refusal."""
    before = _snapshot(replica)
    try:
        msg = decode_message(data, replica.limits)
        core.on_message("peer", msg, now)
    except RemoteError:
        assert _snapshot(replica) == before, "a refused message changed the replica"
        assert core.take_outbox() == [], "a refused message made the core send something"
        return False
    core.take_outbox()
    return True


@FUZZ
@given(st.binary(max_size=256))
def test_arbitrary_bytes(data: bytes) -> None:
    replica = Replica("target", clock=_clock(1000.0))
    _apply(replica, [("set", "apps/a", b"x"), ("incr", "apps/a/version", b"")])
    core = AntiEntropy(replica, random.Random(0))
    core.add_peer("peer", 0.0)
    core.take_outbox()
    _feed(core, replica, data, 1.0)
    _feed(core, replica, b"S\x01" + data, 1.0)
    for kind in (b"Q", b"P", b"R"):
        _feed(core, replica, b"S\x01" + kind + data, 1.0)


@FUZZ
@given(writes, writes, st.data())
def test_mutated_messages(mine: list[Any], theirs: list[Any], data: st.DataObject) -> None:
    target = Replica("target", clock=_clock(1000.0))
    peer = Replica("peer", clock=_clock(2000.0))
    _apply(target, mine)
    _apply(peer, theirs)
    pool = _messages(peer, target)
    core = AntiEntropy(target, random.Random(0))
    core.add_peer("peer", 0.0)
    core.take_outbox()
    for _ in range(data.draw(st.integers(1, 4))):
        original = data.draw(st.sampled_from(pool))
        _feed(core, target, data.draw(mutate(original, pool)), 1.0)
    # Valid messages still work after whatever came before, and merging is idempotent.
    for message in pool:
        assert _feed(core, target, message, 2.0)
    after = _snapshot(target)
    for message in pool:
        if message[2:3] == b"P":
            _feed(core, target, message, 3.0)
            assert _snapshot(target)[:3] == after[:3]


@settings(FUZZ, max_examples=40 * SCALE)
@given(writes, writes, st.data())
def test_durable_replica_replays_what_it_accepted(
    mine: list[Any], theirs: list[Any], data: st.DataObject
) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "replica.log"
        target = Replica("target", path, clock=_clock(1000.0))
        peer = Replica("peer", clock=_clock(2000.0))
        _apply(target, mine)
        _apply(peer, theirs)
        pool = _messages(peer, target)
        core = AntiEntropy(target, random.Random(0))
        for _ in range(data.draw(st.integers(1, 5))):
            candidate = data.draw(st.sampled_from(pool) | mutate(pool[0], pool))
            _feed(core, target, candidate, 1.0)
        before = _snapshot(target)
        target.close()
        with Replica("target", path) as again:
            assert _snapshot(again)[:3] == before[:3]


def test_far_future_stamp_from_a_peer_leaves_local_writes_possible() -> None:
    from crdt._codec import encode_delta
    from crdt._types import MAX_INT, Delta, LWWRegister

    replica = Replica("victim")
    stamp = MAX_INT
    delta = Delta(
        stamp, (("evil", 0, stamp),), (("members/evil", LWWRegister(stamp, "evil", b"x")),)
    )
    before = replica.digest()
    with pytest.raises(RemoteError, match="ahead of this replica's clock"):
        replica.merge(encode_delta(delta))
    assert replica.digest() == before  # refused whole: nothing merged
    replica.set("apps/mine", b"still writable")
    assert replica.get("apps/mine") == b"still writable"
    # A peer a little ahead (an hour) is accepted: clocks drift.
    ahead = ((int(time.time()) + 3600) * 1000) << 16
    replica.merge(
        encode_delta(
            Delta(ahead, (("fast", 0, ahead),), (("k", LWWRegister(ahead, "fast", b"v")),))
        )
    )
    assert replica.get("k") == b"v"
