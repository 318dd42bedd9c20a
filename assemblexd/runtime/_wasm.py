"""The engine, compiled modules, instances and their call futures, on wasmtime's async C API.

Theory of operation
-------------------
Every use of wasmtime-py's private bindings is in ``_capi`` (they are private API, so wasmtime
is pinned to one major version: docs/dependencies.md); this module builds on it.

* One :class:`Engine` per node, with epoch interruption on. A daemon thread (:class:`EpochTicker`)
  increments the epoch every tick while any guest is running; every store is set to *yield* to
  its poller at each tick (``epoch_deadline_async_yield_and_update``), so no guest can hold a
  thread for longer than one tick between two chances for the scheduler to look at it.
* A waPC call is a :class:`CallFuture` (``wasmtime_func_call_async``): each :meth:`poll` runs the
  guest on its own fiber until it returns, yields at an epoch tick, or suspends in an async host
  function. ctypes releases the GIL around a poll, so guests polled from several OS threads run
  in parallel.
* ``__host_call`` is an *async* host function: its callback only records the request on the
  current :class:`CallFuture` (``pending``) and hands wasmtime a continuation that says "not
  yet" until the scheduler has run the host operation on the asyncio loop and stored the
  outcome (``resume``). The guest holds no OS thread meanwhile.
* The other eight waPC imports are synchronous, defined with the unchecked (raw values) API,
  which is the cheapest way into Python that wasmtime offers.
* Host callbacks find their call future in a thread-local set right before each poll: a thread
  polls one future at a time, and the guest's fiber runs on the polling thread.
* Where ``__console_log`` lines go is the engine's ``log_sink``, copied onto each instance.
* ctypes callback objects are module globals: wasmtime may call them for the life of the
  process, and a collected callback is a crash.
"""

from __future__ import annotations

import ctypes
import importlib.metadata
import os
import struct
import threading
import time
from collections.abc import Callable
from ctypes import c_int32, c_void_p
from dataclasses import dataclass
from typing import TYPE_CHECKING

import wasmtime

from . import _capi
from ._capi import (
    CONTINUATION_SIZE,
    PYBUF_WRITE,
    RAW_STRIDE,
    VAL_OF,
    VAL_SIZE,
    AsyncCallback,
    CFunction,
    ContinuationCallback,
    RawCallback,
    call_future_delete,
    call_future_poll,
    context_epoch_deadline_async_yield_and_update,
    context_set_epoch_deadline,
    func_call_async,
    i32_args,
    instance_export_get,
    instance_pre_instantiate_async,
    memory_data,
    memory_data_size,
    memoryview_at,
    trap_new,
)
from .errors import ModuleError, WasmTrap
from .future import HostCall, Sleep
from .wasmbin import Resources, read_resources, rename_imports

__all__ = [
    "HOST_IMPORTS",
    "TABLE_ELEMENT_BYTES",
    "TABLE_SHARE",
    "WASMTIME_VERSION",
    "CallFuture",
    "CompiledModule",
    "Engine",
    "Instance",
    "Invocation",
    "LogSink",
    "ModuleError",
    "WasmTrap",
]


def _installed_version() -> str:
    """The installed wasmtime-py's version, from its package metadata (the module has no
    ``__version__``). It names compiled-module cache files: a new release must not be handed
    the previous one's cache (wasmtime would reject it, but only after reading it)."""
    try:
        return importlib.metadata.version("wasmtime")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


WASMTIME_VERSION: str = _installed_version()

# --------------------------------------------------------------------------------------------
# The state host callbacks work on: the CallFuture being polled (``Invocation``, below).

_tls = threading.local()

LogSink = Callable[["Instance", bytes], None]
"""Where an engine's ``__console_log`` lines go: ``sink(instance, line)``, on the thread
running the guest (the loop or a worker). Given to :class:`Engine`."""


# --------------------------------------------------------------------------------------------
# The waPC imports.


_NO_MEMORY = memoryview(b"")


def _trap(message: str) -> int:
    raw = message.encode()
    return int(trap_new(raw, len(raw)) or 0)


# The engine is configured so that linear memories never move (``memory_may_move`` off): an
# instance's memory base is read once. Callbacks reach the memory through a memoryview of it
# (``Instance.memory``), as slicing costs less than a ctypes call. The view covers the memory
# as it was last seen, and memories only grow: a pointer past the view's end makes the callback
# ask wasmtime for the current size, which is what keeps every guest pointer inside the
# guest's own memory, and, if the memory grew, make a new view. The view is dropped when the
# store is freed, and never leaves the callbacks (they copy out of it).
#
# A zero-length buffer is accepted at any pointer, as the reference hosts do (current Zig gives
# a zero-length allocation the pointer 0xFFFFFFFF): nothing is read or written, so only the
# buffers of one byte or more are checked.


def _guest_memory(inst: Instance, end: int) -> memoryview:
    """The instance's memory, checked to cover ``[0, end)``; raises IndexError if it does not."""
    mem: memoryview = inst.memory
    if end <= len(mem):
        return mem
    if not inst.memory_addr:
        raise IndexError("the guest's memory is not bound yet")
    size = memory_data_size(inst.ctx, inst.memory_addr)
    if end > size:
        raise IndexError(f"guest pointer out of bounds: {end} > {size}")
    mem = inst.memory = memoryview_at(inst.memory_base, size, PYBUF_WRITE)
    return mem


def _read(inv: Invocation, ptr: int, length: int) -> bytes:
    length &= 0xFFFFFFFF
    if not length:
        return b""
    ptr &= 0xFFFFFFFF
    end = ptr + length
    return bytes(_guest_memory(inv.instance, end)[ptr:end])


def _write(inv: Invocation, ptr: int, data: bytes) -> None:
    if not data:
        return
    ptr &= 0xFFFFFFFF
    end = ptr + len(data)
    _guest_memory(inv.instance, end)[ptr:end] = data


if TYPE_CHECKING:
    # An unchecked callback's argument and result slots, as i32s (see ``_capi.RAW_STRIDE``).
    Vals = ctypes._Pointer[c_int32]


def _raw_import(fn: Callable[[Invocation, Vals], int | None]) -> CFunction:
    """Wrap ``fn(inv, vals)`` as an unchecked wasmtime callback; exceptions become traps."""

    def callback(_env: int, _caller: int, vals: Vals, _n: int) -> int:
        try:
            inv: Invocation = _tls.inv
            result = fn(inv, vals)
            if result is not None:
                vals[0] = result
            return 0
        except Exception as exc:
            return _trap(f"waPC host: {exc}")

    return RawCallback(callback)


S = RAW_STRIDE


def _guest_request(inv: Invocation, v: Vals) -> None:
    op_ptr = v[0] & 0xFFFFFFFF
    ptr = v[S] & 0xFFFFFFFF
    op, payload = inv.op, inv.payload
    op_end, end = op_ptr + len(op), ptr + len(payload)
    # Empty ones need no room (a slice past the view's end is empty: nothing is written).
    mem = _guest_memory(inv.instance, max(op_end if op else 0, end if payload else 0))
    mem[op_ptr:op_end] = op
    mem[ptr:end] = payload


def _guest_response(inv: Invocation, v: Vals) -> None:
    inv.response = _read(inv, v[0], v[S])


def _guest_error(inv: Invocation, v: Vals) -> None:
    inv.guest_error = _read(inv, v[0], v[S])


def _host_response_len(inv: Invocation, _v: Vals) -> int:
    return len(inv.host_response)


def _host_response(inv: Invocation, v: Vals) -> None:
    _write(inv, v[0], inv.host_response)


def _host_error_len(inv: Invocation, _v: Vals) -> int:
    return len(inv.host_error)


def _host_error(inv: Invocation, v: Vals) -> None:
    _write(inv, v[0], inv.host_error)


def _console_log(inv: Invocation, v: Vals) -> None:
    line = _read(inv, v[0], v[S])
    sink = inv.instance.log_sink
    if sink is not None:
        sink(inv.instance, line)


_SYNC_IMPORTS: dict[str, tuple[int, int, CFunction]] = {
    # name: (params, results, callback)
    "__guest_request": (2, 0, _raw_import(_guest_request)),
    "__guest_response": (2, 0, _raw_import(_guest_response)),
    "__guest_error": (2, 0, _raw_import(_guest_error)),
    "__host_response_len": (0, 1, _raw_import(_host_response_len)),
    "__host_response": (1, 0, _raw_import(_host_response)),
    "__host_error_len": (0, 1, _raw_import(_host_error_len)),
    "__host_error": (1, 0, _raw_import(_host_error)),
    "__console_log": (2, 0, _raw_import(_console_log)),
}

HOST_IMPORTS = (*_SYNC_IMPORTS, "__host_call")
"""Every ``wapc`` import the host offers."""


# ``env.abort``: what an AssemblyScript module built without ``--use abort=...`` calls on a
# failed assertion or a runtime error (the Go reference host provides it too).

_ABORT_MAX_BYTES = 2048
"""The most of each string of an abort that goes into the error text (1,024 UTF-16 units)."""

_ABORT_UNREADABLE = "abort (the guest's message is not readable)"


def _as_string(inv: Invocation, ptr: int) -> str | None:
    """An AssemblyScript string: UTF-16LE at ``ptr``, its byte length in the u32 at
    ``ptr - 4`` (the object header's ``rtSize``). None for a null pointer; raises IndexError
    when the string is not inside the guest's memory."""
    ptr &= 0xFFFFFFFF
    if ptr == 0:
        return None
    if ptr < 4:
        raise IndexError("string header before address 0")
    (length,) = struct.unpack("<I", _read(inv, ptr - 4, 4))
    _guest_memory(inv.instance, ptr + length)  # the whole string is in memory
    data = _read(inv, ptr, min(length, _ABORT_MAX_BYTES) & ~1)
    return data.decode("utf-16-le", "replace") + ("..." if length > _ABORT_MAX_BYTES else "")


def _abort_text(inv: Invocation, v: Vals) -> str:
    """``abort: <message> at <file>:<line>:<column>``, the form of the SDK's own abort."""
    try:
        message, file = _as_string(inv, v[0]), _as_string(inv, v[S])
    except (IndexError, struct.error):
        return _ABORT_UNREADABLE
    line, column = v[2 * S] & 0xFFFFFFFF, v[3 * S] & 0xFFFFFFFF
    text = f"abort: {message}" if message else "abort"
    return f"{text} at {file}:{line}:{column}" if file else text


def _abort(_env: int, _caller: int, vals: Vals, _n: int) -> int:
    inv: Invocation = _tls.inv
    try:
        text = _abort_text(inv, vals)
    except Exception:  # never a crash in a callback: any failure is the generic text
        text = _ABORT_UNREADABLE
    # The guest's error text, as if it had sent it through __guest_error; the trap ends the
    # run, and the caller's error is "<text>; guest trapped: ..." (WasmTrap.describe).
    inv.guest_error = text.encode()
    return _trap("env.abort")


_ABORT = RawCallback(_abort)

# __host_call's eight i32 arguments, read from its wasmtime_val_t array in one go. (Reading
# and writing native memory through a ctypes array made ``from_address`` costs less than a
# call of a foreign function such as ``string_at`` or ``memmove``.)
_HOST_CALL_ARGS = i32_args(8)
_HostCallArgs = ctypes.c_char * _HOST_CALL_ARGS.size


def _host_call_continue(_env: int) -> bool:
    inv: Invocation = _tls.inv
    if not inv.host_done:
        return False
    if inv.host_results_addr:
        c_int32.from_address(inv.host_results_addr + VAL_OF).value = 1 if inv.host_ok else 0
    inv.host_results_addr = 0
    inv.host_done = False
    return True


_HOST_CALL_CONTINUE = ContinuationCallback(_host_call_continue)
# What __host_call hands wasmtime, copied out as bytes (see _HOST_CALL_ARGS).
_Continuation = ctypes.c_char * CONTINUATION_SIZE
_CONTINUATION_BYTES = _capi.continuation(_HOST_CALL_CONTINUE)


def _host_call(
    _env: int,
    _caller: int,
    args: int,
    _nargs: int,
    results: int,
    _nresults: int,
    trap_ret: int,
    continuation_ret: int,
) -> None:
    inv: Invocation = _tls.inv
    try:
        b, b_len, ns, ns_len, op, op_len, p, p_len = _HOST_CALL_ARGS.unpack_from(
            _HostCallArgs.from_address(args)
        )
        b_end, ns_end, op_end, p_end = b + b_len, ns + ns_len, op + op_len, p + p_len
        # Only non-empty buffers need room; an empty one reads as an empty slice anywhere.
        mem = _guest_memory(
            inv.instance,
            max(
                b_end if b_len else 0,
                ns_end if ns_len else 0,
                op_end if op_len else 0,
                p_end if p_len else 0,
            ),
        )
        inv.host_response = b""
        inv.host_error = b""
        inv.pending = (
            str(mem[b:b_end], "utf-8", "replace"),
            str(mem[ns:ns_end], "utf-8", "replace"),
            str(mem[op:op_end], "utf-8", "replace"),
            bytes(mem[p:p_end]),
        )
        inv.host_done = False
        inv.host_results_addr = results
        _Continuation.from_address(continuation_ret).raw = _CONTINUATION_BYTES
    except Exception as exc:
        c_void_p.from_address(trap_ret).value = _trap(f"waPC host: {exc}")
        _Continuation.from_address(continuation_ret).raw = _CONTINUATION_BYTES
        inv.pending = None
        inv.host_results_addr = 0
        inv.host_done = True
        inv.host_ok = False


_HOST_CALL = AsyncCallback(_host_call)


# WASI's poll_oneoff, the one WASI function that can block (a sleep: std::thread::sleep,
# time.Sleep, nanosleep). wasmtime's own would block the polling thread (the event loop, or a
# worker) for the whole wait, where no epoch tick can reach it; this one is an async host
# function like __host_call: it writes the events the guest will see, and if it must wait, it
# records the wait as the invocation's host request (a Sleep) and parks the guest until the
# scheduler has slept on the loop. Semantics follow wasmtime's (wasmtime-wasi preview1): with
# nothing open but the empty stdin and the discarding stdout and stderr, every fd
# subscription is ready at once, so only clocks wait.

_ERRNO_BADF, _ERRNO_INVAL = 8, 28
_SUBSCRIPTION = struct.Struct("<QB7x")  # userdata, tag; the union follows at 16
_SUB_CLOCK = struct.Struct("<I4xQQH")  # clock id, timeout, precision, flags
_SUB_FD = struct.Struct("<I")
_EVENT = struct.Struct("<QHB5xQH6x")  # userdata, error, type, nbytes, flags
_SUB_SIZE, _EVENT_SIZE = 48, 32
_MAX_SUBSCRIPTIONS = 1024
"""More in one poll_oneoff is EINVAL (wasmtime has no limit; with at most three fds open,
more are duplicates, and each costs about a microsecond here)."""
_CLOCK_REALTIME, _CLOCK_MONOTONIC = 0, 1
_ABSTIME = 1
_EVENT_CLOCK, _EVENT_FD_READ, _EVENT_FD_WRITE = 0, 1, 2
_POLL_ARGS = i32_args(4)
_PollArgs = ctypes.c_char * _POLL_ARGS.size


def _wasi_poll(inv: Invocation, subs: int, events: int, n: int, nevents: int) -> tuple[int, int]:
    """Answer a poll_oneoff at once: (errno, nanoseconds to wait before the guest resumes).

    Writes the events (and their count) the guest sees when it resumes. Errors are wasmtime's:
    no subscriptions, an unknown clock, tag or flag is EINVAL (and, ours, more than
    _MAX_SUBSCRIPTIONS); an fd other than stdin (read)
    or stdout and stderr (write) is EBADF. A misaligned pointer, or subscriptions or events
    outside the memory, raise: the guest traps, as the WASI spec says (checked first, where
    wasmtime reads the subscriptions one by one and may meet another error on the way).
    """
    if n == 0:
        return _ERRNO_INVAL, 0  # wasmtime: waiting forever is not supported
    if subs % 8 or events % 8 or nevents % 4:
        raise ValueError("misaligned pointer")
    mem = _guest_memory(
        inv.instance, max(subs + n * _SUB_SIZE, events + n * _EVENT_SIZE, nevents + 4)
    )
    if n > _MAX_SUBSCRIPTIONS:
        return _ERRNO_INVAL, 0  # parsing them all would hold the polling thread
    ready: list[tuple[int, int]] = []  # (userdata, event type) of the subscriptions ready now
    clocks: list[tuple[int, int]] = []  # (userdata, ns from now) of the clocks still to come
    for at in range(subs, subs + n * _SUB_SIZE, _SUB_SIZE):
        userdata, tag = _SUBSCRIPTION.unpack_from(mem, at)
        if tag == _EVENT_CLOCK:
            clock, timeout, _precision, flags = _SUB_CLOCK.unpack_from(mem, at + 16)
            if flags & ~_ABSTIME:
                return _ERRNO_INVAL, 0
            if flags & _ABSTIME:
                if clock == _CLOCK_MONOTONIC:
                    timeout -= time.monotonic_ns() - inv.instance.wasi_clock
                elif clock == _CLOCK_REALTIME:
                    timeout -= time.time_ns()
                else:
                    return _ERRNO_INVAL, 0
            elif clock not in (_CLOCK_MONOTONIC, _CLOCK_REALTIME):
                return _ERRNO_INVAL, 0
            if timeout <= 0:
                ready.append((userdata, _EVENT_CLOCK))
            else:
                clocks.append((userdata, timeout))
        elif tag in (_EVENT_FD_READ, _EVENT_FD_WRITE):
            (fd,) = _SUB_FD.unpack_from(mem, at + 16)
            if fd not in ((0,) if tag == _EVENT_FD_READ else (1, 2)):
                return _ERRNO_BADF, 0
            ready.append((userdata, tag))
        else:
            return _ERRNO_INVAL, 0
    wait = 0
    if not ready:
        # Only clocks: the earliest fires (with any that fire at the same time).
        wait = min(timeout for _, timeout in clocks)
        ready = [(userdata, _EVENT_CLOCK) for userdata, timeout in clocks if timeout == wait]
    for i, (userdata, kind) in enumerate(ready):
        nbytes = 0 if kind == _EVENT_CLOCK else 1  # as wasmtime: stdio is always "ready"
        _EVENT.pack_into(mem, events + i * _EVENT_SIZE, userdata, 0, kind, nbytes, 0)
    struct.pack_into("<I", mem, nevents, len(ready))
    return 0, wait


def _poll_oneoff(
    _env: int,
    _caller: int,
    args: int,
    _nargs: int,
    results: int,
    _nresults: int,
    trap_ret: int,
    continuation_ret: int,
) -> None:
    inv: Invocation = _tls.inv
    try:
        subs, events, n, nevents = _POLL_ARGS.unpack_from(_PollArgs.from_address(args))
        errno, wait = _wasi_poll(inv, subs, events, n, nevents)
        c_int32.from_address(results + VAL_OF).value = errno
        inv.host_results_addr = 0  # the continuation has nothing to write
        if wait > 0:
            inv.pending = Sleep(wait / 1e9)
            inv.host_done = False
        else:
            inv.pending = None
            inv.host_done = True
    except Exception as exc:
        c_void_p.from_address(trap_ret).value = _trap(f"WASI poll_oneoff: {exc}")
        inv.pending = None
        inv.host_results_addr = 0
        inv.host_done = True
    # The same continuation as __host_call: "not ready" until the scheduler marks the wait
    # done (CallFuture.resume), at once if there is nothing to wait for.
    _Continuation.from_address(continuation_ret).raw = _CONTINUATION_BYTES


_POLL_ONEOFF = AsyncCallback(_poll_oneoff)


# WASI's random_get fills guest memory from the host's CSPRNG, all in one host call: tens of
# MiB take hundreds of milliseconds on the polling thread, out of reach of the epoch ticks.
# This one is async: the continuation fills one chunk per poll (os.urandom), so the guest is
# polled, preempted and moved to a worker like one that computes, and the fill counts as its
# guest time.

_RANDOM_CHUNK = 1 << 18
"""Bytes of random_get filled per poll (about a millisecond of os.urandom)."""
_RANDOM_ARGS = i32_args(2)
_RandomArgs = ctypes.c_char * _RANDOM_ARGS.size


def _random_get(
    _env: int,
    _caller: int,
    args: int,
    _nargs: int,
    results: int,
    _nresults: int,
    trap_ret: int,
    continuation_ret: int,
) -> None:
    inv: Invocation = _tls.inv
    try:
        buf, n = _RANDOM_ARGS.unpack_from(_RandomArgs.from_address(args))
        _guest_memory(inv.instance, buf + n)  # out of bounds: a trap, as in wasmtime
        c_int32.from_address(results + VAL_OF).value = 0
        inv.fill = (buf, buf + n)
    except Exception as exc:
        c_void_p.from_address(trap_ret).value = _trap(f"WASI random_get: {exc}")
        inv.fill = (0, 0)
    _Continuation.from_address(continuation_ret).raw = _RANDOM_CONTINUATION_BYTES


def _random_continue(_env: int) -> bool:
    inv: Invocation = _tls.inv
    at, end = inv.fill
    if at < end:
        upto = min(end, at + _RANDOM_CHUNK)
        _guest_memory(inv.instance, upto)[at:upto] = os.urandom(upto - at)
        inv.fill = (upto, end)
        return upto == end
    return True


_RANDOM_GET = AsyncCallback(_random_get)
_RANDOM_CONTINUE = ContinuationCallback(_random_continue)
_RANDOM_CONTINUATION_BYTES = _capi.continuation(_RANDOM_CONTINUE)


# --------------------------------------------------------------------------------------------
# Engine, epoch ticker, modules.


class EpochTicker:
    """Increments the engine's epoch every tick, from its own OS thread, while guests run.

    An asyncio task could not do this: while the loop thread is inside a poll it cannot tick.
    After a while with no guest running, the thread sleeps on an event, so an idle node costs
    nothing. ``enter``/``leave`` are called from the loop thread only and cost a few
    attribute operations (no lock): the thread clears the event itself, then re-checks.
    """

    IDLE_TICKS = 50
    """Ticks with no guest running before the thread goes to sleep."""

    def __init__(self, engine: wasmtime.Engine, tick: float) -> None:
        self._engine = engine
        self._tick = tick
        self.running = 0
        self.ticks = 0
        """Epoch increments so far (written by the ticker thread only)."""
        self._busy = threading.Event()
        self._stop = False
        self._thread = threading.Thread(target=self._run, name="assemblex-epoch", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        increment = self._engine.increment_epoch
        idle = 0
        while not self._stop:
            self._busy.wait()
            time.sleep(self._tick)
            increment()
            self.ticks += 1
            if self.running:
                idle = 0
                continue
            idle += 1
            if idle > self.IDLE_TICKS:
                self._busy.clear()
                if self.running:  # a guest started between the check and the clear
                    self._busy.set()

    def enter(self) -> None:
        self.running += 1
        if not self._busy.is_set():
            self._busy.set()

    def leave(self) -> None:
        self.running -= 1

    def close(self) -> None:
        self._stop = True
        self._busy.set()
        self._thread.join(timeout=1)


def _functype(params: int, results: int) -> wasmtime.FuncType:
    i32 = wasmtime.ValType.i32()
    return wasmtime.FuncType([i32] * params, [i32] * results)


class Engine:
    """The node's wasmtime engine and the linker that offers the waPC host to every module."""

    def __init__(self, tick: float = 0.002, log_sink: LogSink | None = None) -> None:
        """``tick``: seconds between epoch ticks. ``log_sink``: where the guests'
        ``__console_log`` lines go (dropped without one)."""
        self.log_sink = log_sink
        config = wasmtime.Config()
        config.epoch_interruption = True
        config.memory_may_move = False
        # No wasm GC: its heap lives outside linear memory, a second budget beside
        # --max-memory that no waPC SDK needs (a GC module fails to compile at deploy).
        config.wasm_gc = False
        self.engine = wasmtime.Engine(config)
        self.linker = wasmtime.Linker(self.engine)
        self.linker.define_wasi()
        # poll_oneoff and random_get replace WASI's own, which hold the polling thread for as
        # long as they take (see _poll_oneoff, _random_get).
        self.linker.allow_shadowing = True
        define = _capi.define_func_unchecked
        for name, (params, results, cb) in _SYNC_IMPORTS.items():
            self._check(define(self.linker, "wapc", name, _functype(params, results), cb))
        self._check(define(self.linker, "env", "abort", _functype(4, 0), _ABORT))
        define = _capi.define_async_func
        self._check(define(self.linker, "wapc", "__host_call", _functype(8, 1), _HOST_CALL))
        wasi = "wasi_snapshot_preview1"
        self._check(define(self.linker, wasi, "poll_oneoff", _functype(4, 1), _POLL_ONEOFF))
        self._check(define(self.linker, wasi, "random_get", _functype(2, 1), _RANDOM_GET))
        self.linker.allow_shadowing = False
        self.ticker = EpochTicker(self.engine, tick)

    @staticmethod
    def _check(err: int) -> None:
        if err:
            raise ModuleError(str(_capi.error_from(err)))

    def compile(self, wasm: bytes) -> CompiledModule:
        """Compile and check a module against the waPC host. Raises ModuleError. Blocks."""
        try:
            module = wasmtime.Module(self.engine, _legacy_wasi(wasm))
        except wasmtime.WasmtimeError as exc:
            raise ModuleError(f"module does not compile: {_with_cause(exc)}") from exc
        return self._prepare(module, wasm)

    def deserialize(self, data: bytes, wasm: bytes) -> CompiledModule:
        """Load a module this engine serialized from ``wasm``. Raises ModuleError (e.g. a
        stale cache)."""
        try:
            module = wasmtime.Module.deserialize(self.engine, data)
        except wasmtime.WasmtimeError as exc:
            raise ModuleError(f"cached module rejected: {_first_line(exc)}") from exc
        return self._prepare(module, wasm)

    def _prepare(self, module: wasmtime.Module, wasm: bytes) -> CompiledModule:
        exports = {e.name: e.type for e in module.exports}
        guest_call = exports.get("__guest_call")
        if guest_call is None:
            raise ModuleError("module does not export __guest_call")
        if not isinstance(guest_call, wasmtime.FuncType) or (
            [str(p) for p in guest_call.params],
            [str(r) for r in guest_call.results],
        ) != (["i32", "i32"], ["i32"]):
            raise ModuleError("__guest_call must be a function (i32, i32) -> i32")
        if not isinstance(exports.get("memory"), wasmtime.MemoryType):
            raise ModuleError("module does not export a memory named 'memory'")
        for name in ("_initialize", "_start", "wapc_init"):
            ty = exports.get(name)
            if ty is not None and (
                not isinstance(ty, wasmtime.FuncType) or list(ty.params) or list(ty.results)
            ):
                raise ModuleError(f"{name} must be a function with no parameters and no results")
        resources = _resources(wasm)
        imports = [(i.module, i.name or "") for i in module.imports]
        for mod, name in imports:
            if mod == "wapc" and name not in HOST_IMPORTS:
                raise ModuleError(f"module imports wapc.{name}, which the host does not offer")
            if mod == "wasi_unstable":  # the ones _legacy_wasi did not rename
                raise ModuleError(
                    f"module imports wasi_unstable.{name}, which the host does not offer"
                    + (
                        f": its types differ from wasi_snapshot_preview1.{name}'s"
                        if name in WASI_UNSTABLE_DIFFERENT
                        else ""
                    )
                )
            if mod not in ("wapc", "wasi_snapshot_preview1") and (mod, name) != ("env", "abort"):
                raise ModuleError(f"module imports {mod}.{name}, which the host does not offer")
        pre, err = _capi.instantiate_pre(self.linker, module)
        if err:
            message = str(_capi.error_from(err))
            raise ModuleError(f"module cannot link against the host: {_first_line(message)}")
        wasi = any(mod == "wasi_snapshot_preview1" for mod, _ in imports)
        inits = tuple(n for n in ("_initialize", "_start", "wapc_init") if n in exports)
        return CompiledModule(module, pre, wasi, inits, resources)

    def new_instance(self, compiled: CompiledModule, max_memory: int, tag: object) -> Instance:
        """A new instance of ``compiled`` in a store of its own (see :class:`Instance`)."""
        return Instance(self, compiled, max_memory, tag)

    def close(self) -> None:
        self.ticker.close()


WASI_UNSTABLE_SAME = frozenset(
    """args_get args_sizes_get environ_get environ_sizes_get clock_res_get clock_time_get
    fd_advise fd_allocate fd_close fd_datasync fd_fdstat_get fd_fdstat_set_flags
    fd_fdstat_set_rights fd_filestat_set_size fd_filestat_set_times fd_pread fd_prestat_get
    fd_prestat_dir_name fd_pwrite fd_read fd_readdir fd_renumber fd_sync fd_tell fd_write
    path_create_directory path_filestat_set_times path_link path_open path_readlink
    path_remove_directory path_rename path_symlink path_unlink_file proc_exit proc_raise
    random_get sched_yield sock_recv sock_send sock_shutdown""".split()
)
"""The functions of WASI's first snapshot (``wasi_unstable``) whose signatures, types and
meaning are those of the same function in ``wasi_snapshot_preview1``."""

WASI_UNSTABLE_DIFFERENT = frozenset(
    ("fd_seek", "fd_filestat_get", "path_filestat_get", "poll_oneoff")
)
"""The rest of ``wasi_unstable``: ``whence`` numbered differently (fd_seek), ``filestat``
with a 32-bit link count (the two filestat_get), a clock subscription with one more field
(poll_oneoff). Not offered."""


def _legacy_wasi(wasm: bytes) -> bytes:
    """``wasm`` with its ``wasi_unstable`` imports of ``WASI_UNSTABLE_SAME`` imported from
    ``wasi_snapshot_preview1`` instead (what wasmtime's linker offers).

    wasmtime's C API links preview 1 only and cannot alias a definition under another name;
    renaming the imports in the module's bytes gives a guest built against the first snapshot
    (TinyGo's, for one) the very same functions, with nothing run in Python.
    """
    try:
        return rename_imports(wasm, "wasi_unstable", "wasi_snapshot_preview1", WASI_UNSTABLE_SAME)
    except ValueError:
        return wasm  # not a module wasmtime accepts either: it says why


def _resources(wasm: bytes) -> Resources:
    """The module's memories and tables, checked against what an instance may have.

    One memory: the waPC imports read and write the memory exported as ``memory``, and the
    budget of ``--max-memory`` is one memory's (wasmtime's store limits are per memory). Not
    shared: a shared memory is another kind of extern, which this host does not bind.
    """
    try:
        resources = read_resources(wasm)
    except ValueError as exc:
        raise ModuleError(f"cannot read the module's memories and tables: {exc}") from exc
    if len(resources.memories) != 1:
        raise ModuleError(
            f"module has {len(resources.memories)} memories; the host runs modules with one"
        )
    if resources.memories[0].shared:
        raise ModuleError("module's memory is shared (threads); the host runs unshared memories")
    return resources


TABLE_SHARE = 8
"""An instance's tables together may hold up to 1/TABLE_SHARE of ``--max-memory``..."""
TABLE_ELEMENT_BYTES = 8
"""...at this many bytes an element (a reference: wasmtime stores one in a machine word)."""


@dataclass(frozen=True)
class StoreLimits:
    """What one instance's store may allocate (wasmtime's store limiter).

    wasmtime limits each memory and each table on its own, and counts them: with the counts
    set to what the module declares, every table gets an equal part of the tables' budget.
    """

    memory_bytes: int
    table_elements: int
    """Per table."""
    tables: int
    memories: int = 1

    @classmethod
    def of(cls, resources: Resources, max_memory: int) -> StoreLimits:
        tables = len(resources.tables)
        total = max_memory // TABLE_SHARE // TABLE_ELEMENT_BYTES
        return cls(max_memory, total // max(tables, 1), tables)


def _with_cause(exc: object) -> str:
    """The first line of a wasmtime error and of its cause ("failed to parse WebAssembly
    module: <what and where>"): the first alone rarely says what is wrong."""
    text = str(exc).strip()
    first = _first_line(text)
    if "Caused by:" not in text:
        return first
    return f"{first}: {_first_line(text.split('Caused by:', 1)[1])}"


def _first_line(exc: object) -> str:
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__


@dataclass(eq=False)
class CompiledModule:
    """A compiled module, ready to be instantiated cheaply (an ``InstancePre``)."""

    module: wasmtime.Module
    pre: int
    """The ``wasmtime_instance_pre_t*`` (freed with the module)."""
    wasi: bool
    init_functions: tuple[str, ...]
    resources: Resources

    def limits(self, max_memory: int) -> StoreLimits:
        """The store limits of an instance of this module under a ``max_memory`` budget."""
        return StoreLimits.of(self.resources, max_memory)

    def check_limits(self, max_memory: int) -> None:
        """Raise ModuleError if an instance could not even start under ``max_memory``: its
        declared minimums (memory, tables) are over the limits (``limits``)."""
        limits = self.limits(max_memory)
        memory = self.resources.memories[0]
        if memory.min_bytes > limits.memory_bytes:
            raise ModuleError(
                f"module's memory starts at {_mib(memory.min_bytes)}, over this node's limit"
                f" of {_mib(limits.memory_bytes)} (--max-memory)"
            )
        for table in self.resources.tables:
            if table.min_elements > limits.table_elements:
                raise ModuleError(
                    f"module's table starts at {table.min_elements:,} elements, over this"
                    f" node's limit of {limits.table_elements:,} a table (1/{TABLE_SHARE} of"
                    f" --max-memory, {TABLE_ELEMENT_BYTES} bytes an element, shared by"
                    f" {len(self.resources.tables)} table(s))"
                )

    def serialize(self) -> bytes:
        return bytes(self.module.serialize())

    # The function is bound at definition: at interpreter exit, module globals may be gone
    # before the last modules are collected.
    def __del__(self, _delete: CFunction = _capi.instance_pre_delete) -> None:
        pre, self.pre = self.pre, 0
        if pre:
            _delete(pre)


def _mib(n: int) -> str:
    return f"{n / (1 << 20):g} MiB"


# --------------------------------------------------------------------------------------------
# Instances and calls.


class CallFuture:
    """One run of guest code on one instance (a waPC call, an instantiation, an init function),
    and the state its host callbacks work on. Poll until done, then ``finish()``.

    It is the :class:`~assemblexd.runtime.future.CallFuture` the scheduler drives: ``pending``
    and ``guest_time`` are plain attributes, written by the host callbacks and :meth:`poll`, as
    the scheduler reads them after every poll. The host callbacks find it in a thread-local
    (``_tls.inv``) set before each poll; the node reads the guest's ``response`` and
    ``guest_error`` on it after the run.

    Its out-parameters (trap, error, result) live in the instance: a store runs one future at
    a time, so they are allocated once per instance instead of once per call.
    """

    __slots__ = (
        "_keep",
        "_ptr",
        "fill",
        "guest_error",
        "guest_time",
        "host_done",
        "host_error",
        "host_ok",
        "host_response",
        "host_results_addr",
        "instance",
        "op",
        "payload",
        "pending",
        "response",
    )

    def __init__(
        self,
        instance: Instance,
        ptr: int,
        keep: object = None,
        op: bytes = b"",
        payload: bytes = b"",
    ) -> None:
        self.instance = instance
        self._ptr = ptr
        self._keep = keep  # what wasmtime reads during the run (an init function's extern)
        self.op = op
        self.payload = payload
        self.response: bytes | None = None
        self.guest_error: bytes | None = None
        self.host_response = b""
        self.host_error = b""
        self.pending: HostCall | Sleep | None = None
        """What the guest waits on (an async host call, a WASI sleep) until it is answered."""
        self.host_done = False
        """``pending`` was answered: the continuation resumes the guest at the next poll."""
        self.host_ok = False
        self.host_results_addr = 0
        self.guest_time = 0.0
        """Seconds spent inside :meth:`poll` so far."""
        # A WASI random_get in progress: the guest addresses still to fill, [start, end).
        self.fill = (0, 0)

    @property
    def invocation(self) -> CallFuture:
        """The run's state: the future itself (the node reads ``response`` on it)."""
        return self

    def poll(self) -> bool:
        """Run the guest until it finishes (True), yields or waits on the host (False).

        Blocks the calling thread for at most about one epoch tick of guest execution.
        """
        _tls.inv = self
        t0 = time.perf_counter()
        try:
            return bool(call_future_poll(self._ptr))
        finally:
            self.guest_time += time.perf_counter() - t0

    def resume(self, ok: bool, data: bytes, *, rearm: bool) -> None:
        """Answer ``pending`` (a response, or an error text); the next poll resumes the guest
        with it, with a fresh epoch deadline if ``rearm``."""
        if ok:
            self.host_response, self.host_error = data, b""
        else:
            self.host_response, self.host_error = b"", data
        self.host_ok = ok
        self.host_done = True
        self.pending = None
        if rearm:
            self.instance.rearm()

    def poison(self) -> None:
        self.instance.poisoned = True

    def finish(self) -> int:
        """Release the future; return the i32 result, or raise WasmTrap."""
        self.close()
        inst = self.instance
        trap, error = inst._trap.value, inst._error.value
        if not (trap or error):
            return int(inst._result.value)
        text = self.guest_error.decode("utf-8", "replace") if self.guest_error else None
        if trap:
            inst._trap.value = None
            raise WasmTrap(_trap_message(_capi.trap_message(trap)), guest_error=text)
        assert error is not None
        inst._error.value = None
        err = _capi.error_from(error)  # an ExitTrap for a WASI proc_exit
        if isinstance(err, wasmtime.ExitTrap):
            raise WasmTrap(f"guest exited with code {err.code}", err.code, text)
        raise WasmTrap(_trap_message(str(err)), guest_error=text)

    def close(self) -> None:
        """Delete the future (cancels the call if it has not finished). Idempotent.

        Must not be called while another thread polls this future.
        """
        ptr, self._ptr = self._ptr, 0
        if ptr:
            call_future_delete(ptr)
            inst = self.instance
            inst.running = False
            if inst.close_requested:
                inst.close()


Invocation = CallFuture
"""What the host callbacks call it: the state of the run they serve."""


def _trap_message(message: str) -> str:
    """The reason of a trap, without wasmtime's backtrace.

    wasmtime formats a trap as "error while executing at wasm backtrace: <frames>" followed by
    "Caused by: <reason>"; the reason is what a user needs.
    """
    text = message.strip()
    if "Caused by:" in text:
        text = text.split("Caused by:", 1)[1]
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[0] if lines else "trap"


class Instance:
    """One instance of a module in its own store, with its limits. Not shared between calls."""

    __slots__ = (
        "__weakref__",
        "_arg0",
        "_arg1",
        "_args",
        "_error",
        "_error_addr",
        "_guest_call",
        "_guest_call_addr",
        "_memory",
        "_result",
        "_results",
        "_results_addr",
        "_trap",
        "_trap_addr",
        "close_requested",
        "compiled",
        "ctx",
        "instance",
        "log_sink",
        "memory",
        "memory_addr",
        "memory_base",
        "poisoned",
        "running",
        "store",
        "tag",
        "wasi_clock",
    )

    def __init__(
        self, engine: Engine, compiled: CompiledModule, max_memory: int, tag: object
    ) -> None:
        self.compiled = compiled
        self.tag = tag
        self.log_sink = engine.log_sink
        self.store = wasmtime.Store(engine.engine)
        limits = compiled.limits(max_memory)
        self.store.set_limits(
            memory_size=limits.memory_bytes,
            table_elements=limits.table_elements,
            tables=limits.tables,
            memories=limits.memories,
        )
        if compiled.wasi:
            self.store.set_wasi(wasmtime.WasiConfig())
        # The origin of the guest's WASI monotonic clock (its WASI context's creation), read
        # just after it so that an absolute deadline never fires early (_wasi_poll).
        self.wasi_clock = time.monotonic_ns()
        self.ctx = _capi.context(self.store)
        context_epoch_deadline_async_yield_and_update(self.ctx, 1)
        self.instance = _capi.instance_t()
        self._memory = _capi.extern_t()
        self.memory_addr = 0
        self.memory_base = 0
        self.memory = _NO_MEMORY
        self._guest_call = _capi.extern_t()
        self._guest_call_addr = 0
        # Out-parameters of this store's (single) running future, and __guest_call's args.
        self._trap = c_void_p()
        self._error = c_void_p()
        self._trap_addr = ctypes.addressof(self._trap)
        self._error_addr = ctypes.addressof(self._error)
        self._results = (_capi.val_t * 1)()
        self._results_addr = ctypes.addressof(self._results)
        self._result = c_int32.from_address(self._results_addr + VAL_OF)
        self._args = (_capi.val_t * 2)()
        self._args[0].kind = _capi.I32
        self._args[1].kind = _capi.I32
        base = ctypes.addressof(self._args)
        self._arg0 = c_int32.from_address(base + VAL_OF)
        self._arg1 = c_int32.from_address(base + VAL_SIZE + VAL_OF)
        self.poisoned = False
        # A future of this store is alive: the store must outlive it (see close()).
        self.running = False
        self.close_requested = False

    def rearm(self) -> None:
        """Give the guest a fresh tick before it runs again (after a host wait)."""
        context_set_epoch_deadline(self.ctx, 1)

    def instantiate(self) -> CallFuture:
        """Start instantiating; when the future finishes, call :meth:`bind`."""
        context_set_epoch_deadline(self.ctx, 1)
        ptr = instance_pre_instantiate_async(
            self.compiled.pre,
            self.ctx,
            ctypes.addressof(self.instance),
            self._trap_addr,
            self._error_addr,
        )
        self.running = True
        return CallFuture(self, ptr)

    def bind(self) -> None:
        """Look up the exports a call needs (after instantiation finished)."""
        for name, ext in (("memory", self._memory), ("__guest_call", self._guest_call)):
            self._export(name, ext)
        self.memory_addr = ctypes.addressof(self._memory.of.memory)
        self.memory_base = memory_data(self.ctx, self.memory_addr) or 0
        self.memory = _NO_MEMORY  # a view is made at the first access (_guest_memory)
        self._guest_call_addr = ctypes.addressof(self._guest_call.of.func)

    def call_function(self, name: str) -> CallFuture:
        """Start a call of an exported ``() -> ()`` function (the init functions)."""
        ext = _capi.extern_t()
        self._export(name, ext)
        context_set_epoch_deadline(self.ctx, 1)
        ptr = func_call_async(
            self.ctx,
            ctypes.addressof(ext.of.func),
            None,
            0,
            None,
            0,
            self._trap_addr,
            self._error_addr,
        )
        self.running = True
        return CallFuture(self, ptr, ext)

    def guest_call(self, op: bytes, payload: bytes) -> CallFuture:
        """Start ``__guest_call(len(op), len(payload))``."""
        self._arg0.value = len(op)
        self._arg1.value = len(payload)
        context_set_epoch_deadline(self.ctx, 1)
        ptr = func_call_async(
            self.ctx,
            self._guest_call_addr,
            self._args_addr(),
            2,
            self._results_addr,
            1,
            self._trap_addr,
            self._error_addr,
        )
        self.running = True
        return CallFuture(self, ptr, op=op, payload=payload)

    def _export(self, name: str, ext: _capi.extern_t) -> None:
        """Look up the export ``name`` into ``ext``; raises ModuleError without one."""
        raw = name.encode()
        found = instance_export_get(
            self.ctx, ctypes.addressof(self.instance), raw, len(raw), ctypes.addressof(ext)
        )
        if not found:
            raise ModuleError(f"instance has no export {name}")

    def _args_addr(self) -> int:
        return ctypes.addressof(self._args)

    def close(self) -> None:
        """Free the store (and with it the instance and its memory).

        If a future of this store is still alive (a worker thread may be inside a poll of a
        cancelled call), the store is freed when that future is deleted instead.
        """
        if self.running:
            self.close_requested = True
            return
        self.memory_addr = 0
        self.memory_base = 0
        self.memory = _NO_MEMORY
        self.store.close()
