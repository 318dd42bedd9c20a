"""Bytes for deltas and digests, and back, checking every limit before allocating.

Delta (``D``, version 1)::

    b"D\\x01" clock:u64
    nodes:  count, then per node   len:varint utf8
    claims: count, then per claim  node:u16 lo:u64 hi:u64
    regs:   count, then per entry  len:varint key:utf8 node:u16 ts:u64 tag:u8 [len:varint value]
    ctrs:   count, then per entry  len:varint key:utf8 node:u16 count:u64 ts:u64

Node ids are written once in a table and referred to by index. Digest (``G``, version 1)::

    b"G\\x01" count:varint, then per node (strictly ascending)  len:varint utf8 ts:u64

Integers are big-endian; varints are LEB128 of at most 4 bytes here. Decoding fails with
:class:`RemoteError` on anything but exactly one well-formed object within the limits: wrong
magic, a count larger than the bytes left could hold, a length or number past its limit,
invalid UTF-8, duplicate node ids, a dangling index, trailing bytes.
"""

from __future__ import annotations

import struct
from collections.abc import Mapping

from ._errors import RemoteError
from ._types import MAX_INT, CtrEntry, Delta, Limits, LWWRegister

__all__ = ["decode_delta", "decode_digest", "encode_delta", "encode_digest"]

DELTA_MAGIC = b"D\x01"
DIGEST_MAGIC = b"G\x01"

_U64 = struct.Struct(">Q")
_CLAIM = struct.Struct(">HQQ")
_REG = struct.Struct(">HQB")
_CTR = struct.Struct(">HQQ")
_MAX_VARINT = 1 << 28

# Smallest encoded size of one item, to reject counts the remaining bytes cannot hold.
_MIN_NODE = 2
_MIN_REG = 1 + _REG.size
_MIN_CTR = 1 + _CTR.size
_MIN_DIGEST_ITEM = 2 + _U64.size


_SMALL = [bytes((i,)) for i in range(0x80)]


def _varint(n: int) -> bytes:
    if n < 0x80:
        return _SMALL[n]
    out = bytearray()
    while n >= 0x80:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


class _Reader:
    """A cursor over untrusted bytes; every read is bounds-checked."""

    __slots__ = ("data", "end", "pos")

    def __init__(self, data: bytes, pos: int = 0) -> None:
        self.data = data
        self.pos = pos
        self.end = len(data)

    def fail(self, what: str) -> RemoteError:
        return RemoteError(f"malformed input at byte {self.pos}: {what}")

    def varint(self, limit: int) -> int:
        data, pos = self.data, self.pos
        if pos < self.end and data[pos] < 0x80 and data[pos] <= limit:  # one byte: most
            self.pos = pos + 1
            return data[pos]
        result = shift = 0
        while True:
            if pos >= self.end:
                raise self.fail("truncated varint")
            b = data[pos]
            pos += 1
            result |= (b & 0x7F) << shift
            if b < 0x80:
                break
            shift += 7
            if shift >= 28:
                raise self.fail("varint too long")
        if result > limit:
            raise self.fail(f"{result} exceeds the limit {limit}")
        self.pos = pos
        return result

    def count(self, min_item: int, limit: int) -> int:
        n = self.varint(_MAX_VARINT)
        if n > limit or n * min_item > self.end - self.pos:
            raise self.fail(f"count {n} is larger than allowed or than the bytes left")
        return n

    def take(self, n: int) -> bytes:
        if n > self.end - self.pos:
            raise self.fail("truncated")
        start = self.pos
        self.pos = start + n
        return self.data[start : self.pos]

    def text(self, limit: int, *, empty_ok: bool = True) -> str:
        n = self.varint(limit)
        if not n and not empty_ok:
            raise self.fail("empty string")
        raw = self.take(n)
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            raise self.fail("invalid UTF-8") from None

    def unpack(self, s: struct.Struct) -> tuple[int, ...]:
        if s.size > self.end - self.pos:
            raise self.fail("truncated")
        values: tuple[int, ...] = s.unpack_from(self.data, self.pos)
        self.pos += s.size
        return values

    def done(self) -> None:
        if self.pos != self.end:
            raise self.fail(f"{self.end - self.pos} trailing bytes")


def encode_delta(delta: Delta) -> bytes:
    """The bytes of ``delta`` (assumed valid: it was built by this package)."""
    index: dict[str, int] = {}
    names: list[bytes] = []

    def ref(node: str) -> int:
        i = index.get(node)
        if i is None:
            i = index[node] = len(names)
            raw = node.encode("utf-8")
            names.append(_varint(len(raw)) + raw)
        return i

    body: list[bytes] = [_varint(len(delta.claims))]
    for node, lo, hi in delta.claims:
        body.append(_CLAIM.pack(ref(node), lo, hi))
    body.append(_varint(len(delta.regs)))
    for key, reg in delta.regs:
        raw = key.encode("utf-8")
        body.append(_varint(len(raw)))
        body.append(raw)
        if reg.value is None:
            body.append(_REG.pack(ref(reg.node), reg.ts, 0))
        else:
            body.append(_REG.pack(ref(reg.node), reg.ts, 1))
            body.append(_varint(len(reg.value)))
            body.append(reg.value)
    body.append(_varint(len(delta.ctrs)))
    for key, node, count, ts in delta.ctrs:
        raw = key.encode("utf-8")
        body.append(_varint(len(raw)))
        body.append(raw)
        body.append(_CTR.pack(ref(node), count, ts))
    head = [DELTA_MAGIC, _U64.pack(delta.clock), _varint(len(names)), *names]
    return b"".join(head + body)


def _check_int(r: _Reader, value: int, what: str, *, low: int = 1) -> None:
    if not low <= value <= MAX_INT:
        raise r.fail(f"{what} {value} out of range")


def decode_delta(data: bytes, limits: Limits) -> Delta:
    """Parse a delta from a peer or the log; :class:`RemoteError` if it is not a valid one."""
    if not isinstance(data, bytes):
        raise RemoteError("a delta is bytes")
    if len(data) > limits.max_delta_bytes:
        raise RemoteError(f"delta of {len(data)} bytes; the limit is {limits.max_delta_bytes}")
    if data[:2] != DELTA_MAGIC:
        raise RemoteError("not a delta (bad magic or version)")
    r = _Reader(data, 2)
    (clock,) = r.unpack(_U64)
    _check_int(r, clock, "clock", low=0)

    n_nodes = r.count(_MIN_NODE, limits.max_nodes)
    nodes = [r.text(limits.max_node_id_bytes, empty_ok=False) for _ in range(n_nodes)]
    if len(set(nodes)) != n_nodes:
        raise r.fail("duplicate node id")

    claims: list[tuple[str, int, int]] = []
    seen: set[int] = set()
    for _ in range(r.count(_CLAIM.size, n_nodes)):
        i, lo, hi = r.unpack(_CLAIM)
        if i >= n_nodes or i in seen:
            raise r.fail("bad or repeated node in a claim")
        _check_int(r, lo, "claim start", low=0)
        _check_int(r, hi, "claim end")
        if lo >= hi:
            raise r.fail("empty claim")
        seen.add(i)
        claims.append((nodes[i], lo, hi))

    regs: list[tuple[str, LWWRegister]] = []
    for _ in range(r.count(_MIN_REG, _MAX_VARINT)):
        key = r.text(limits.max_key_bytes)
        i, ts, tag = r.unpack(_REG)
        if i >= n_nodes:
            raise r.fail("node index out of range")
        _check_int(r, ts, "timestamp")
        if tag == 0:
            value = None
        elif tag == 1:
            value = r.take(r.varint(limits.max_value_bytes))
        else:
            raise r.fail(f"unknown register tag {tag}")
        regs.append((key, LWWRegister(ts, nodes[i], value)))

    ctrs: list[CtrEntry] = []
    for _ in range(r.count(_MIN_CTR, _MAX_VARINT)):
        key = r.text(limits.max_key_bytes)
        i, count, ts = r.unpack(_CTR)
        if i >= n_nodes:
            raise r.fail("node index out of range")
        _check_int(r, count, "count")
        _check_int(r, ts, "timestamp")
        ctrs.append(CtrEntry(key, nodes[i], count, ts))
    r.done()
    return Delta(clock, tuple(claims), tuple(regs), tuple(ctrs))


def encode_digest(vv: Mapping[str, int]) -> bytes:
    """The bytes of a version vector (node -> highest timestamp covered)."""
    parts = [DIGEST_MAGIC, _varint(len(vv))]
    for node in sorted(vv):
        raw = node.encode("utf-8")
        parts += (_varint(len(raw)), raw, _U64.pack(vv[node]))
    return b"".join(parts)


def decode_digest(data: bytes, limits: Limits) -> dict[str, int]:
    """Parse a digest; :class:`RemoteError` if it is not a valid, canonical one."""
    if not isinstance(data, bytes):
        raise RemoteError("a digest is bytes")
    if len(data) > limits.max_digest_bytes:
        raise RemoteError(f"digest of {len(data)} bytes; the limit is {limits.max_digest_bytes}")
    if data[:2] != DIGEST_MAGIC:
        raise RemoteError("not a digest (bad magic or version)")
    r = _Reader(data, 2)
    vv: dict[str, int] = {}
    last: str | None = None
    for _ in range(r.count(_MIN_DIGEST_ITEM, limits.max_nodes)):
        node = r.text(limits.max_node_id_bytes, empty_ok=False)
        if last is not None and node <= last:
            raise r.fail("digest nodes not in strictly ascending order")
        (ts,) = r.unpack(_U64)
        _check_int(r, ts, "timestamp")
        vv[node] = ts
        last = node
    r.done()
    return vv
