"""The sizes and offsets of wasmtime's C structs that the runtime relies on (64-bit, wasmtime
50's headers), checked on the installed bindings: a release that moves them fails here rather
than corrupting guest or host memory.

What depends on each: ``__host_call``, ``poll_oneoff`` and ``random_get`` read their i32
arguments from a ``wasmtime_val_t`` array in one ``struct`` unpack (``_capi.i32_args``) and
write their i32 result at ``VAL_OF``; ``__guest_call``'s arguments and result are ``c_int32``
views at ``VAL_OF``; the unchecked callbacks index their ``wasmtime_val_raw_t`` slots as i32s
(``RAW_STRIDE``); the async callbacks copy a prebuilt ``wasmtime_async_continuation_t`` into
``continuation_ret`` as bytes (``CONTINUATION_SIZE``).
"""

from __future__ import annotations

import ctypes
import struct

import pytest

from assemblexd.runtime import _capi, _wasm

POINTER_SIZE = ctypes.sizeof(ctypes.c_void_p)

pytestmark = pytest.mark.skipif(POINTER_SIZE != 8, reason="the layouts are a 64-bit host's")


def test_wasmtime_val_t() -> None:
    # struct { wasmtime_valkind_t kind; /* uint8 */ wasmtime_valunion_t of; } where the union
    # (i32 ... v128, and the GC references) is 24 bytes and 8-aligned.
    assert _capi.VAL_OF == 8
    assert _capi.VAL_SIZE == 32
    assert _capi.val_t.kind.offset == 0
    assert _capi.val_t.kind.size == 1
    assert _capi.I32.value == 0  # WASMTIME_I32
    # i32 is the union's first four bytes: the code reads and writes it at VAL_OF.
    union = type(_capi.val_t().of)
    assert ctypes.sizeof(union) == 24
    assert union.i32.offset == 0
    assert union.i32.size == 4


def test_wasmtime_val_raw_t() -> None:
    # A union of 16 bytes (v128) whose i32 member is at offset 0: slot i of an unchecked
    # callback is vals[i * RAW_STRIDE] when vals is an int32_t*.
    assert ctypes.sizeof(_capi.val_raw_t) == 16
    assert _capi.val_raw_t.i32.offset == 0
    assert _capi.RAW_STRIDE == 4
    assert _wasm.S == _capi.RAW_STRIDE


def test_wasmtime_extern_t_and_instance_t() -> None:
    # extern: { uint8 kind; union of; } with an 8-aligned union; the code takes the address of
    # of.func and of.memory and hands it to wasmtime.
    assert _capi.extern_t.of.offset == 8
    assert ctypes.sizeof(_capi.extern_t) == 32
    union = type(_capi.extern_t().of)
    assert union.func.offset == 0
    assert union.memory.offset == 0
    # instance: { uint64_t store_id; size_t __private; }, filled in by instantiation.
    assert ctypes.sizeof(_capi.instance_t) == 16


def test_wasmtime_async_continuation_t() -> None:
    # { callback; void *env; finalizer; }: three pointers.
    assert _capi.CONTINUATION_SIZE == 3 * POINTER_SIZE
    callback = _capi.ContinuationCallback(lambda _env: True)
    raw = _capi.continuation(callback)
    assert len(raw) == _capi.CONTINUATION_SIZE
    address = ctypes.cast(callback, ctypes.c_void_p).value
    assert struct.unpack("=QQQ", raw) == (address, 0, 0)  # the callback, no env, no finalizer


@pytest.mark.parametrize("n", [2, 4, 8])
def test_i32_args_reads_an_array_of_wasmtime_val_t(n: int) -> None:
    layout = _capi.i32_args(n)
    assert layout.size == n * _capi.VAL_SIZE
    vals = (_capi.val_t * n)()
    values = [7, -1, 0x7FFFFFFF, -(2**31), 42, 0, 1, 65536][:n]
    for i, v in enumerate(values):
        vals[i].kind = _capi.I32
        vals[i].of.i32 = v
    raw = (ctypes.c_char * layout.size).from_address(ctypes.addressof(vals))
    assert layout.unpack_from(raw) == tuple(v & 0xFFFFFFFF for v in values)
    # ...and a result written the way the callbacks write it lands in the val's i32.
    ctypes.c_int32.from_address(ctypes.addressof(vals) + _capi.VAL_OF).value = 123
    assert vals[0].of.i32 == 123


def test_raw_slots_read_as_i32() -> None:
    vals = (_capi.val_raw_t * 4)()
    for i, v in enumerate((1, -2, 3, 2**31 - 1)):
        vals[i].i32 = v
    as_i32 = ctypes.cast(vals, ctypes.POINTER(ctypes.c_int32))
    assert [as_i32[i * _capi.RAW_STRIDE] for i in range(4)] == [1, -2, 3, 2**31 - 1]


def test_wasi_poll_oneoff_layouts() -> None:
    """WASI preview 1's subscription (48 bytes: userdata u64, tag u8 at 8, the union at 16;
    a clock: id u32, timeout u64 at +8, precision u64 at +16, flags u16 at +24; an fd: u32)
    and event (32 bytes: userdata u64, error u16 at 8, type u8 at 10, nbytes u64 at 16,
    flags u16 at 24), as ``_wasm._wasi_poll`` reads and writes them."""
    assert (_wasm._SUB_SIZE, _wasm._EVENT_SIZE) == (48, 32)
    assert _wasm._SUBSCRIPTION.size == 16
    sub = struct.pack("<QB7x", 0xDEAD, 0) + struct.pack("<I4xQQH6x", 1, 5_000, 10, 1)
    assert len(sub) == _wasm._SUB_SIZE
    assert _wasm._SUBSCRIPTION.unpack_from(sub, 0) == (0xDEAD, 0)
    assert _wasm._SUB_CLOCK.unpack_from(sub, 16) == (1, 5_000, 10, 1)
    assert _wasm._EVENT.size == _wasm._EVENT_SIZE
    event = _wasm._EVENT.pack(0xBEEF, 28, 2, 1, 0)
    assert struct.unpack_from("<Q", event, 0) == (0xBEEF,)
    assert struct.unpack_from("<H", event, 8) == (28,)
    assert struct.unpack_from("<B", event, 10) == (2,)
    assert struct.unpack_from("<Q", event, 16) == (1,)
