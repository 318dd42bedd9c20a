"""The wire codec: every message round-trips, and garbage only ever raises
RemoteProtocolError."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given
from hypothesis import strategies as st
from membership_strategies import message_strategy

from membership import LocalProtocolError, RemoteProtocolError
from membership._codec import FrameDecoder, decode, encode, encode_frame
from membership._messages import (
    Message,
    Peer,
)

texts = st.text(max_size=40)
peers = st.builds(Peer, texts, texts)

messages = message_strategy(text_size=40, list_size=12, blob_size=200, ihave_size=8)


@given(messages)
def test_every_message_round_trips(msg: Message) -> None:
    assert decode(encode(msg)) == msg


@given(st.binary(max_size=300))
def test_garbage_raises_only_remote_protocol_error(data: bytes) -> None:
    with contextlib.suppress(RemoteProtocolError):
        decode(data)


@given(messages, st.data())
def test_truncated_frames_are_refused(msg: Message, data: st.DataObject) -> None:
    """Every proper prefix of an encoded message is refused: none decodes to a message, this
    one or another (a frame is one whole msgpack array)."""
    frame = encode(msg)
    cut = data.draw(st.integers(0, len(frame) - 1), label="cut")
    with pytest.raises(RemoteProtocolError):
        decode(frame[:cut])


@pytest.mark.parametrize(
    "obj",
    [
        [],  # no tag
        [99],  # unknown tag
        [1, "extra"],  # Join takes no field
        [2, ["a", "b"], -1],  # negative ttl
        [2, ["a", "b"], 300],  # ttl over 255
        [2, ["a"], 3],  # a peer is [id, address]
        [3, 1],  # Neighbor wants a boolean, not an int
        [10, 1, 0, "o", "text"],  # Gossip payload must be bytes
        [10, -5, 0, "o", b""],  # negative id
        [6, ["a", "b"], [["c", "d"]] * 2000, 3],  # too many peers
        {"tag": 1},  # not an array
    ],
)
def test_malformed_messages(obj: object) -> None:
    import msgpack

    with pytest.raises(RemoteProtocolError):
        decode(msgpack.packb(obj, use_bin_type=True))


def test_frames_split_across_reads() -> None:
    frames = [b"", b"a", b"hello" * 100]
    stream = b"".join(encode_frame(f) for f in frames)
    decoder = FrameDecoder()
    got: list[bytes] = []
    for i in range(0, len(stream), 3):
        got += decoder.feed(stream[i : i + 3])
    assert got == frames


def test_oversized_frames_are_refused_both_ways() -> None:
    with pytest.raises(LocalProtocolError):
        encode_frame(b"x" * 2000, max_frame=1024)
    decoder = FrameDecoder(max_frame=1024)
    with pytest.raises(RemoteProtocolError):
        decoder.feed((5000).to_bytes(4, "big"))  # refused from the prefix, before the body


def test_encoding_a_foreign_object_is_a_local_error() -> None:
    with pytest.raises(LocalProtocolError):
        encode("not a message")  # type: ignore[arg-type]
