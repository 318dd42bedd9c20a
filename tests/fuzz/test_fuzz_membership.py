"""Fuzzing membership's wire: the frame codec and the overlay core it feeds.

What a peer sends goes ``FrameDecoder.feed`` (TCP) or one websocket message, then ``decode``,
then ``Overlay.on_message``. The only exception a peer may cause on that path is a
``MembershipError`` (the I/O adapter closes that one link on ``RemoteProtocolError``); anything
else would escape the link's reader task. Inputs: arbitrary bytes, arbitrary msgpack values
under a known tag, valid frames mutated (bit flips, cut, spliced, bytes inserted), streams cut
at arbitrary points, and sequences of well-formed messages from arbitrary peers.

Bounded: every test has a fixed example count and no deadline (the machine is shared), and
the folder runs in well under a minute.
"""

from __future__ import annotations

import random
import struct

import msgpack
import pytest
from fuzz_settings import SCALE, fuzz_settings
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from membership_strategies import message_strategy

from membership import MembershipError, Overlay, Peer, RemoteProtocolError
from membership._codec import DEFAULT_MAX_FRAME, FrameDecoder, decode, encode, encode_frame
from membership._messages import (
    Direct,
    Disconnect,
    ForwardJoin,
    Gossip,
    Graft,
    IHave,
    Join,
    Message,
    Neighbor,
    NeighborReply,
    Prune,
    Shuffle,
    ShuffleReply,
)

FUZZ = fuzz_settings(200)

texts = st.text(max_size=30)
peers = st.builds(Peer, texts, texts)
ttls = st.integers(0, 255)
blobs = st.binary(max_size=64)

messages = message_strategy(text_size=30, list_size=8, blob_size=64, ihave_size=6)

# Anything msgpack can carry, to reach the field checks behind a valid tag.
msgpack_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**64 - 1)
    | st.floats(allow_nan=True)
    | st.text(max_size=20)
    | st.binary(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=5), inner, max_size=3)
    ),
    max_leaves=10,
)


def _decode_or_refuse(data: bytes) -> Message | None:
    """decode(data), or None when it raised the documented error; any other error fails."""
    try:
        msg = decode(data)
    except RemoteProtocolError:
        return None
    # What was accepted is a well-formed message: it encodes, and means the same again.
    assert decode(encode(msg)) == msg
    return msg


@st.composite
def mutated(draw: st.DrawFn, source: st.SearchStrategy[bytes]) -> bytes:
    """A valid frame with one to four mutations."""
    data = bytearray(draw(source))
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(["flip", "set", "cut", "insert", "delete", "splice"]))
        pos = draw(st.integers(0, max(len(data) - 1, 0)))
        if kind == "flip" and data:
            data[pos] ^= 1 << draw(st.integers(0, 7))
        elif kind == "set" and data:
            data[pos] = draw(st.sampled_from([0x00, 0x7F, 0x80, 0xC0, 0xC1, 0xD9, 0xDC, 0xFF]))
        elif kind == "cut":
            del data[pos:]
        elif kind == "insert":
            data[pos:pos] = draw(st.binary(min_size=1, max_size=8))
        elif kind == "delete" and data:
            del data[pos : pos + draw(st.integers(1, 8))]
        elif kind == "splice":
            other = draw(source)
            data[pos:] = other[draw(st.integers(0, len(other))) :]
    return bytes(data)


@FUZZ
@given(st.binary(max_size=512))
def test_arbitrary_bytes(data: bytes) -> None:
    _decode_or_refuse(data)


@FUZZ
@given(mutated(messages.map(encode)))
def test_mutated_frames(data: bytes) -> None:
    _decode_or_refuse(data)


@settings(FUZZ, max_examples=120 * SCALE)
@given(
    st.sampled_from([0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 20, 21, 22, 23, 255]),
    st.lists(msgpack_values, max_size=6),
)
def test_any_fields_under_a_tag(tag: int, fields: list[object]) -> None:
    _decode_or_refuse(msgpack.packb([tag, *fields], use_bin_type=True))


@settings(FUZZ, max_examples=100 * SCALE)
@given(msgpack_values)
def test_any_msgpack_value(value: object) -> None:
    _decode_or_refuse(msgpack.packb(value, use_bin_type=True))


@settings(FUZZ, max_examples=100 * SCALE)
@given(st.lists(messages, min_size=1, max_size=6), st.lists(st.integers(0, 64), max_size=12))
def test_stream_cut_anywhere(msgs: list[Message], cuts: list[int]) -> None:
    """Frames split at arbitrary points come out whole and in order."""
    stream = b"".join(encode_frame(encode(m)) for m in msgs)
    decoder = FrameDecoder()
    frames: list[bytes] = []
    pos = 0
    for n in cuts:
        frames += decoder.feed(stream[pos : pos + n])
        pos += n
    frames += decoder.feed(stream[pos:])
    assert [decode(f) for f in frames] == msgs


@FUZZ
@given(st.lists(st.binary(max_size=64), max_size=8), st.integers(16, 4096))
def test_stream_garbage_is_bounded(chunks: list[bytes], limit: int) -> None:
    """Garbage yields frames no larger than the limit, or RemoteProtocolError; the decoder
    never holds more than one frame's worth of bytes."""
    decoder = FrameDecoder(max_frame=limit)
    for chunk in chunks:
        try:
            frames = decoder.feed(chunk)
        except RemoteProtocolError:
            return
        assert all(len(f) <= limit for f in frames)
        for frame in frames:
            _decode_or_refuse(frame)
        assert len(decoder._buffer) <= limit + 4 + 64


def test_oversized_prefix_is_refused_before_buffering() -> None:
    decoder = FrameDecoder()
    with pytest.raises(RemoteProtocolError):
        decoder.feed(struct.pack(">I", DEFAULT_MAX_FRAME + 1) + b"x")


# -- the overlay core behind the codec -----------------------------------------------------------

ME = Peer("me", "ws://127.0.0.1:1/peer")
KNOWN = [Peer(f"n{i}", f"ws://127.0.0.1:{10 + i}/peer") for i in range(8)]
# Peers in messages: known ones, odd ones, and ourselves (a peer may name us anywhere).
any_peer = st.sampled_from([ME, *KNOWN]) | peers
core_messages = st.one_of(
    st.just(Join()),
    st.builds(ForwardJoin, any_peer, ttls),
    st.builds(Neighbor, st.booleans()),
    st.builds(NeighborReply, st.booleans()),
    st.just(Disconnect()),
    st.builds(Shuffle, any_peer, st.lists(any_peer, max_size=8).map(tuple), ttls),
    st.builds(ShuffleReply, st.lists(any_peer, max_size=8).map(tuple)),
    st.builds(Gossip, st.integers(0, 20), st.integers(0, 8), st.sampled_from(["me", "n1", "x"]),
              blobs),
    st.builds(IHave, st.lists(st.tuples(st.integers(0, 20), st.integers(0, 8)), max_size=4)
              .map(tuple)),
    st.builds(Graft, st.integers(0, 20), st.integers(0, 8)),
    st.just(Prune()),
    st.builds(Direct, blobs),
)  # fmt: skip


@settings(max_examples=100 * SCALE, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.integers(0, 2**32),
    st.lists(
        st.tuples(any_peer, core_messages, st.floats(0, 30), st.booleans()),
        min_size=1,
        max_size=40,
    ),
)
def test_overlay_survives_any_message_sequence(
    seed: int, inputs: list[tuple[Peer, Message, float, bool]]
) -> None:
    """Well-formed messages in any order, from any peer (ourselves included), at any time:
    the core raises nothing but MembershipError and keeps its views sane."""
    overlay = Overlay(ME, random.Random(seed), 0.0)
    overlay.join(KNOWN[0], 0.0)
    now = 0.0
    for src, msg, dt, unreachable in inputs:
        now += dt
        try:
            overlay.on_message(src, msg, now)  # type: ignore[arg-type]
            if unreachable:
                overlay.on_unreachable(src, now)
            overlay.tick(now)
        except MembershipError:
            pass
        outbox = overlay.take_outbox()
        overlay.take_events()
        active, passive = overlay.active_view(), overlay.passive_view()
        assert ME not in active
        assert ME not in passive
        assert not set(active) & set(passive)
        assert len(active) <= overlay.membership.config.active_size
        assert len(passive) <= overlay.membership.config.passive_size
        for dst, out in outbox:
            assert dst != ME
            encode(out)  # everything the core sends can be framed
