"""Bytes of the anti-entropy messages, for transports that carry bytes.

Every message starts with ``b"S\\x01"`` and a kind byte::

    Q  SyncRequest   digest (the rest)
    R  SyncResponse  flags:u8 (1 delta, 2 more, 4 digest) [len:u32 delta] [digest (the rest)]
    P  Push          delta (the rest)

Only the framing is checked here (and the total size); the digest and delta inside are
parsed, with their own limits, by the replica that receives them.
"""

from __future__ import annotations

import struct

from ._errors import RemoteError
from ._messages import Message, Push, SyncRequest, SyncResponse
from ._types import DEFAULT_LIMITS, Limits

__all__ = ["decode_message", "encode_message", "max_message_bytes"]

_MAGIC = b"S\x01"
_LEN = struct.Struct(">I")
_DELTA, _MORE, _DIGEST = 1, 2, 4


def max_message_bytes(limits: Limits = DEFAULT_LIMITS) -> int:
    """The largest message a peer with these limits accepts."""
    return len(_MAGIC) + 2 + _LEN.size + limits.max_delta_bytes + limits.max_digest_bytes


def encode_message(msg: Message) -> bytes:
    """The bytes of ``msg``."""
    if isinstance(msg, SyncRequest):
        return _MAGIC + b"Q" + msg.digest
    if isinstance(msg, Push):
        return _MAGIC + b"P" + msg.delta
    if isinstance(msg, SyncResponse):
        flags = (
            (_DELTA if msg.delta is not None else 0)
            | (_MORE if msg.more else 0)
            | (_DIGEST if msg.digest is not None else 0)
        )
        parts = [_MAGIC, b"R", bytes([flags])]
        if msg.delta is not None:
            parts += (_LEN.pack(len(msg.delta)), msg.delta)
        if msg.digest is not None:
            parts.append(msg.digest)
        return b"".join(parts)
    raise TypeError(f"not a crdt message: {msg!r}")


def decode_message(data: bytes, limits: Limits = DEFAULT_LIMITS) -> Message:
    """Parse a message; :class:`RemoteError` if its framing is wrong or it is too large."""
    if len(data) > max_message_bytes(limits):
        raise RemoteError(f"message of {len(data)} bytes is too large")
    if data[:2] != _MAGIC or len(data) < 3:
        raise RemoteError("not a crdt message (bad magic or version)")
    kind, body = data[2:3], data[3:]
    if kind == b"Q":
        return SyncRequest(body)
    if kind == b"P":
        return Push(body)
    if kind != b"R" or not body:
        raise RemoteError(f"unknown message kind {kind!r}")
    flags, pos = body[0], 1
    if flags & ~(_DELTA | _MORE | _DIGEST):
        raise RemoteError(f"unknown flags {flags:#x}")
    delta = None
    if flags & _DELTA:
        if len(body) < pos + _LEN.size:
            raise RemoteError("truncated response")
        (n,) = _LEN.unpack_from(body, pos)
        pos += _LEN.size
        if n > len(body) - pos:
            raise RemoteError("truncated response")
        delta, pos = body[pos : pos + n], pos + n
    digest = None
    if flags & _DIGEST:
        digest = body[pos:]
    elif pos != len(body):
        raise RemoteError("trailing bytes")
    return SyncResponse(delta, bool(flags & _MORE), digest)
