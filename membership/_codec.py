"""Wire codec: messages to msgpack and back, and length-prefixed framing over byte streams.

A message is a msgpack array whose first element is a small integer tag; a `Peer` is a
two-element array ``[id, address]``. Decoding checks every field's type and bound, so
whatever a peer sends either becomes a well-formed message or raises `RemoteProtocolError`
(never a msgpack, `TypeError` or `UnicodeDecodeError` leaking out).

On a byte stream (TCP) each frame is a 4-byte big-endian length and that many bytes;
`FrameDecoder` enforces the size limit before buffering a frame's body. A websocket carries
one frame per binary message and needs no prefix.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from typing import Any

import msgpack

from ._errors import LocalProtocolError, RemoteProtocolError
from ._messages import (
    Direct,
    Disconnect,
    ForwardJoin,
    Gossip,
    Graft,
    Hello,
    IHave,
    Join,
    Message,
    Neighbor,
    NeighborReply,
    Peer,
    Ping,
    Proof,
    Prune,
    Shuffle,
    ShuffleReply,
)

__all__ = [
    "DEFAULT_MAX_FRAME",
    "FrameDecoder",
    "decode",
    "encode",
    "encode_frame",
]

DEFAULT_MAX_FRAME = 1 << 20
"""Default frame size limit (1 MiB): broadcast payloads are small records, not blobs."""

_PREFIX = struct.Struct(">I")
_MAX_ID = (1 << 64) - 1
_MAX_PEERS = 1024  # far above any view sample; bounds what one Shuffle can make us allocate
_MAX_TEXT = 1024

_TAGS: dict[type, int] = {
    Join: 1,
    ForwardJoin: 2,
    Neighbor: 3,
    NeighborReply: 4,
    Disconnect: 5,
    Shuffle: 6,
    ShuffleReply: 7,
    Gossip: 10,
    IHave: 11,
    Graft: 12,
    Prune: 13,
    Direct: 14,
    Hello: 20,
    Proof: 21,
    Ping: 22,
}


def _peer_out(peer: Peer) -> list[str]:
    return [peer.id, peer.address]


def _fields(msg: Message) -> list[Any]:
    match msg:
        case Join() | Disconnect() | Prune() | Ping():
            return []
        case ForwardJoin(joiner, ttl):
            return [_peer_out(joiner), ttl]
        case Neighbor(high):
            return [high]
        case NeighborReply(accepted):
            return [accepted]
        case Shuffle(origin, nodes, ttl):
            return [_peer_out(origin), [_peer_out(p) for p in nodes], ttl]
        case ShuffleReply(nodes):
            return [[_peer_out(p) for p in nodes]]
        case Gossip(msg_id, rnd, origin, payload):
            return [msg_id, rnd, origin, payload]
        case IHave(announcements):
            return [[[i, r] for i, r in announcements]]
        case Graft(msg_id, rnd):
            return [msg_id, rnd]
        case Direct(payload):
            return [payload]
        case Hello(peer, nonce, keyed, version):
            return [_peer_out(peer), nonce, keyed, version]
        case Proof(mac):
            return [mac]
    raise LocalProtocolError(f"not a membership message: {msg!r}")


def encode(msg: Message) -> bytes:
    """The msgpack bytes of `msg` (a frame's body)."""
    tag = _TAGS.get(type(msg))
    if tag is None:
        raise LocalProtocolError(f"not a membership message: {msg!r}")
    out: bytes = msgpack.packb([tag, *_fields(msg)], use_bin_type=True)
    return out


# --- decoding: strict field checks -----------------------------------------------------------


def _fail(what: str) -> RemoteProtocolError:
    return RemoteProtocolError(f"malformed frame: {what}")


def _text(value: object) -> str:
    if not isinstance(value, str) or len(value) > _MAX_TEXT:
        raise _fail("expected a short string")
    return value


def _int(value: object, high: int = _MAX_ID) -> int:
    if type(value) is not int or not 0 <= value <= high:
        raise _fail("expected a non-negative integer in range")
    return value


def _bool(value: object) -> bool:
    if type(value) is not bool:
        raise _fail("expected a boolean")
    return value


def _bytes(value: object) -> bytes:
    if not isinstance(value, bytes):
        raise _fail("expected bytes")
    return value


def _list(value: object, limit: int = _MAX_PEERS) -> list[Any]:
    if not isinstance(value, list) or len(value) > limit:
        raise _fail("expected a bounded array")
    return value


def _peer(value: object) -> Peer:
    items = _list(value, 2)
    if len(items) != 2:
        raise _fail("a peer is [id, address]")
    return Peer(_text(items[0]), _text(items[1]))


def _peers(value: object) -> tuple[Peer, ...]:
    return tuple(_peer(item) for item in _list(value))


def _announcement(value: object) -> tuple[int, int]:
    items = _list(value, 2)
    if len(items) != 2:
        raise _fail("an announcement is [msg_id, round]")
    return _int(items[0]), _int(items[1], 0xFFFF)


_DECODERS: dict[int, tuple[int, Callable[[list[Any]], Message]]] = {
    1: (0, lambda f: Join()),
    2: (2, lambda f: ForwardJoin(_peer(f[0]), _int(f[1], 255))),
    3: (1, lambda f: Neighbor(_bool(f[0]))),
    4: (1, lambda f: NeighborReply(_bool(f[0]))),
    5: (0, lambda f: Disconnect()),
    6: (3, lambda f: Shuffle(_peer(f[0]), _peers(f[1]), _int(f[2], 255))),
    7: (1, lambda f: ShuffleReply(_peers(f[0]))),
    10: (4, lambda f: Gossip(_int(f[0]), _int(f[1], 0xFFFF), _text(f[2]), _bytes(f[3]))),
    11: (1, lambda f: IHave(tuple(_announcement(a) for a in _list(f[0])))),
    12: (2, lambda f: Graft(_int(f[0]), _int(f[1], 0xFFFF))),
    13: (0, lambda f: Prune()),
    14: (1, lambda f: Direct(_bytes(f[0]))),
    20: (4, lambda f: Hello(_peer(f[0]), _bytes(f[1]), _bool(f[2]), _int(f[3], 0xFFFF))),
    21: (1, lambda f: Proof(_bytes(f[0]))),
    22: (0, lambda f: Ping()),
}


def decode(data: bytes) -> Message:
    """Parse one frame's body.

    Raises:
        RemoteProtocolError: the bytes are not exactly one well-formed message.
    """
    try:
        obj = msgpack.unpackb(data, raw=False, use_list=True, strict_map_key=True)
    except Exception as exc:  # msgpack raises a zoo of types on garbage
        raise _fail(f"not msgpack ({type(exc).__name__})") from None
    items = _list(obj, 8)
    if not items:
        raise _fail("empty array")
    spec = _DECODERS.get(items[0]) if type(items[0]) is int else None
    if spec is None:
        raise _fail(f"unknown tag {items[0]!r}")
    arity, build = spec
    if len(items) != arity + 1:
        raise _fail(f"tag {items[0]} takes {arity} fields, got {len(items) - 1}")
    return build(items[1:])


# --- framing on byte streams ------------------------------------------------------------------


def encode_frame(body: bytes, max_frame: int = DEFAULT_MAX_FRAME) -> bytes:
    """Length prefix + `body`.

    Raises:
        LocalProtocolError: `body` is over `max_frame` bytes (nothing is sent).
    """
    if len(body) > max_frame:
        raise LocalProtocolError(f"frame of {len(body)} bytes is over the {max_frame}-byte limit")
    return _PREFIX.pack(len(body)) + body


class FrameDecoder:
    """Splits a byte stream into frames; refuses a frame over the limit before buffering it."""

    def __init__(self, max_frame: int = DEFAULT_MAX_FRAME) -> None:
        self.max_frame = max_frame
        self._buffer = bytearray()

    def feed(self, data: bytes) -> list[bytes]:
        """Add received bytes; return the frames they complete, in order.

        Raises:
            RemoteProtocolError: a length prefix announces a frame over the limit.
        """
        self._buffer += data
        frames: list[bytes] = []
        while len(self._buffer) >= _PREFIX.size:
            (length,) = _PREFIX.unpack_from(self._buffer)
            if length > self.max_frame:
                raise RemoteProtocolError(
                    f"peer announced a {length}-byte frame; the limit is {self.max_frame}"
                )
            end = _PREFIX.size + length
            if len(self._buffer) < end:
                break
            frames.append(bytes(self._buffer[_PREFIX.size : end]))
            del self._buffer[:end]
        return frames

    @staticmethod
    def header_length(header: bytes) -> int:
        """The body length a 4-byte prefix announces."""
        (length,) = _PREFIX.unpack(header)
        return int(length)
