"""wasmtime's C API as the runtime uses it: foreign functions, struct layouts, callback types.

Every use of wasmtime-py's private bindings (``wasmtime._ffi`` and the ``_from_ptr`` and
``_context`` internals) is in this module; ``_wasm`` builds the engine, instances and the waPC
imports on top of it. The bindings are private API, so wasmtime is pinned to one major version
(50; docs/dependencies.md). The sizes and offsets the runtime relies on are checked by
``tests/assemblexd/runtime/test_capi.py``, so that a wasmtime release that changes them fails
a test instead of corrupting memory.

Most functions are declared here again, with plain integers (addresses) as arguments: cheaper
than wasmtime-py's typed declarations, and what the hot paths pass.
"""

from __future__ import annotations

import ctypes
import struct
from _ctypes import CFuncPtr as CFunction
from ctypes import POINTER, byref, c_bool, c_int32, c_size_t, c_uint64, c_void_p
from typing import TypeVar

import wasmtime
from wasmtime import _ffi as ffi

__all__ = [
    "CONTINUATION_SIZE",
    "I32",
    "PYBUF_WRITE",
    "RAW_STRIDE",
    "VAL_OF",
    "VAL_SIZE",
    "AsyncCallback",
    "CFunction",
    "ContinuationCallback",
    "RawCallback",
    "call_future_delete",
    "call_future_poll",
    "context",
    "context_epoch_deadline_async_yield_and_update",
    "context_set_epoch_deadline",
    "continuation",
    "define_async_func",
    "define_func_unchecked",
    "error_from",
    "extern_t",
    "func_call_async",
    "i32_args",
    "instance_export_get",
    "instance_pre_delete",
    "instance_pre_instantiate_async",
    "instance_t",
    "instantiate_pre",
    "memory_data",
    "memory_data_size",
    "memoryview_at",
    "trap_message",
    "trap_new",
    "val_raw_t",
    "val_t",
]

_dll = ffi.dll
_T = TypeVar("_T", bound="ctypes._CData")  # a typeshed name: a string, never evaluated


def _proto(name: str, restype: type | None, *argtypes: type) -> CFunction:
    """A fresh foreign function for ``name`` with our own (cheaper) argument types.

    ctypes releases the GIL around the call: for calls that may run guest code.
    """
    return ctypes.CFUNCTYPE(restype, *argtypes)((name, _dll))


def _proto_gil(
    name: str, restype: type | None, *argtypes: type, dll: ctypes.CDLL = _dll
) -> CFunction:
    """Like :func:`_proto`, for a short call that runs no guest code: it keeps the GIL.

    A ctypes function releases the GIL around the call and takes it back after, which costs
    more than these calls themselves, and lets another thread take the GIL in between (the
    caller then waits for it). Calls made from the host callbacks and after every host call
    use these.
    """
    return ctypes.PYFUNCTYPE(restype, *argtypes)((name, dll))


# --------------------------------------------------------------------------------------------
# Structs. wasmtime-py's definitions, under the C API's names without the ``wasmtime_`` prefix.

val_t = ffi.wasmtime_val_t
"""``wasmtime_val_t``: a kind byte, then the value's union at :data:`VAL_OF`."""
val_raw_t = ffi.wasmtime_val_raw_t
"""``wasmtime_val_raw_t``: an unchecked callback's argument and result slots."""
extern_t = ffi.wasmtime_extern_t
instance_t = ffi.wasmtime_instance_t
I32 = ffi.WASMTIME_I32
"""``wasmtime_val_t.kind`` of an i32."""

VAL_SIZE = ctypes.sizeof(val_t)
VAL_OF = val_t.of.offset
"""Offset of the value in a ``wasmtime_val_t`` (an i32 is its first four bytes)."""
RAW_STRIDE = ctypes.sizeof(val_raw_t) // 4
"""``wasmtime_val_raw_t`` slots in i32 units: an unchecked callback reads its i-th argument
(an i32, the slot's first four bytes) at ``vals[i * RAW_STRIDE]``."""


def i32_args(n: int) -> struct.Struct:
    """The layout of ``n`` consecutive ``wasmtime_val_t`` holding i32s: unpacking native memory
    with it reads the ``n`` values (as u32) in one go, cheaper than a ctypes access each."""
    return struct.Struct("=" + f"{VAL_OF}xI{VAL_SIZE - VAL_OF - 4}x" * n)


# --------------------------------------------------------------------------------------------
# Host functions: callback types, and the continuation an async one hands back.

RawCallback = ctypes.CFUNCTYPE(c_size_t, c_void_p, c_void_p, POINTER(c_int32), c_size_t)
"""``wasmtime_func_unchecked_callback_t``: (env, caller, vals, nvals) -> trap or NULL."""
AsyncCallback = ctypes.CFUNCTYPE(
    None, c_void_p, c_void_p, c_void_p, c_size_t, c_void_p, c_size_t, c_void_p, c_void_p
)
"""``wasmtime_func_async_callback_t``: (env, caller, args, nargs, results, nresults,
trap_ret, continuation_ret)."""
ContinuationCallback = ctypes.CFUNCTYPE(c_bool, c_void_p)
"""``wasmtime_func_async_continuation_callback_t``: (env) -> done."""

_NULL_FINALIZER = ctypes.CFUNCTYPE(None, c_void_p)()  # a NULL function pointer

CONTINUATION_SIZE = ctypes.sizeof(ffi.wasmtime_async_continuation_t)


def continuation(callback: CFunction) -> bytes:
    """The bytes of a ``wasmtime_async_continuation_t`` that calls ``callback`` (no env, no
    finalizer): an async callback copies them to its ``continuation_ret``."""
    return bytes(
        ffi.wasmtime_async_continuation_t(
            ctypes.cast(callback, ffi.wasmtime_func_async_continuation_callback_t),
            None,
            _NULL_FINALIZER,
        )
    )


def _address(pointer: ctypes._Pointer[_T]) -> int:
    """A pointer's address; 0 for NULL."""
    return ctypes.cast(pointer, c_void_p).value or 0


def _name(s: str) -> tuple[ctypes.Array[ctypes.c_char], int]:
    raw = s.encode()
    return ctypes.create_string_buffer(raw, len(raw)), len(raw)


def define_func_unchecked(
    linker: wasmtime.Linker, module: str, name: str, ty: wasmtime.FuncType, cb: CFunction
) -> int:
    """Define ``module.name`` in ``linker`` as the unchecked callback ``cb``; returns a
    ``wasmtime_error_t*`` (0 on success, see :func:`error_from`). ``cb`` must live as long as
    the process (wasmtime may call it until then)."""
    err = ffi.wasmtime_linker_define_func_unchecked(
        linker.ptr(), *_name(module), *_name(name), ty.ptr(),
        ctypes.cast(cb, ffi.wasmtime_func_unchecked_callback_t), None, _NULL_FINALIZER,
    )  # fmt: skip
    return _address(err)


def define_async_func(
    linker: wasmtime.Linker, module: str, name: str, ty: wasmtime.FuncType, cb: CFunction
) -> int:
    """Define ``module.name`` in ``linker`` as the async callback ``cb`` (as
    :func:`define_func_unchecked`)."""
    err = ffi.wasmtime_linker_define_async_func(
        linker.ptr(), *_name(module), *_name(name), ty.ptr(),
        ctypes.cast(cb, ffi.wasmtime_func_async_callback_t), None, _NULL_FINALIZER,
    )  # fmt: skip
    return _address(err)


# --------------------------------------------------------------------------------------------
# Foreign functions.

call_future_poll = _proto("wasmtime_call_future_poll", c_bool, c_void_p)
call_future_delete = _proto("wasmtime_call_future_delete", None, c_void_p)
memory_data = _proto("wasmtime_memory_data", c_void_p, c_void_p, c_void_p)
memory_data_size = _proto_gil("wasmtime_memory_data_size", c_size_t, c_void_p, c_void_p)
memoryview_at = _proto_gil(
    "PyMemoryView_FromMemory",
    ctypes.py_object,
    c_void_p,
    ctypes.c_ssize_t,
    ctypes.c_int,
    dll=ctypes.pythonapi,
)
"""A memoryview of native memory (Python's C API): (address, size, flags)."""
PYBUF_WRITE = 0x200
trap_new = _proto("wasmtime_trap_new", c_void_p, ctypes.c_char_p, c_size_t)
func_call_async = _proto(
    "wasmtime_func_call_async",
    c_void_p,
    c_void_p,  # context
    c_void_p,  # func
    c_void_p,  # args
    c_size_t,
    c_void_p,  # results
    c_size_t,
    c_void_p,  # trap_ret
    c_void_p,  # error_ret
)
instance_pre_instantiate_async = _proto(
    "wasmtime_instance_pre_instantiate_async",
    c_void_p,
    c_void_p,  # instance_pre
    c_void_p,  # context
    c_void_p,  # instance out
    c_void_p,  # trap_ret
    c_void_p,  # error_ret
)
context_set_epoch_deadline = _proto_gil(
    "wasmtime_context_set_epoch_deadline", None, c_void_p, c_uint64
)
# async.h declares a wasmtime_error_t* result, but the implementation returns nothing:
# reading that result would free garbage.
context_epoch_deadline_async_yield_and_update = _proto(
    "wasmtime_context_epoch_deadline_async_yield_and_update", None, c_void_p, c_uint64
)
instance_export_get = _proto(
    "wasmtime_instance_export_get",
    c_bool,
    c_void_p,  # context
    c_void_p,  # instance
    ctypes.c_char_p,  # name
    c_size_t,
    c_void_p,  # extern out
)
instance_pre_delete = _proto("wasmtime_instance_pre_delete", None, c_void_p)


def instantiate_pre(linker: wasmtime.Linker, module: wasmtime.Module) -> tuple[int, int]:
    """``wasmtime_linker_instantiate_pre``: (the ``wasmtime_instance_pre_t*``, 0) or (0, the
    ``wasmtime_error_t*``). The caller frees the first with :func:`instance_pre_delete`."""
    pre = POINTER(ffi.wasmtime_instance_pre_t)()
    err = ffi.wasmtime_linker_instantiate_pre(linker.ptr(), module.ptr(), byref(pre))
    if err:
        return 0, _address(err)
    return _address(pre), 0


# --------------------------------------------------------------------------------------------
# wasmtime-py internals: a store's context, and errors and traps from their pointers.


def context(store: wasmtime.Store) -> int:
    """The address of ``store``'s ``wasmtime_context_t``."""
    return ctypes.cast(store._context(), c_void_p).value or 0


def trap_message(trap: int) -> str:
    """The message of a ``wasm_trap_t*`` (taking ownership: the trap is freed)."""
    message: str = wasmtime.Trap._from_ptr(ctypes.cast(trap, POINTER(ffi.wasm_trap_t))).message
    return message


def error_from(error: int) -> wasmtime.WasmtimeError:
    """The exception for a ``wasmtime_error_t*`` (taking ownership): an ``ExitTrap`` for a WASI
    ``proc_exit``, else a ``WasmtimeError``."""
    err: wasmtime.WasmtimeError = wasmtime.WasmtimeError._from_ptr(
        ctypes.cast(error, POINTER(ffi.wasmtime_error_t))
    )
    return err
