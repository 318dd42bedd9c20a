"""The waPC runtime: wasmtime, the scheduler that drives guests, warm pools, host functions.

The public boundary of the subpackage is what this module exports; everything else in it is
private. ``runtime`` imports nothing of ``assemblexd`` outside itself: what it needs of the
daemon comes in as arguments (limits as numbers, a log sink per engine, a metrics callback per
host, the node's call path as a coroutine function), and the errors it raises live in
``runtime.errors`` (re-exported by ``assemblexd.errors``). ``tests/test_layering.py`` checks it.

Modules:

* ``_capi``: the ctypes bindings of wasmtime's C API (wasmtime-py's private ``_ffi``): foreign
  functions and struct layouts, nothing else.
* ``_wasm``: :class:`Engine`, :class:`CompiledModule`, :class:`Instance` and the waPC imports,
  on top of ``_capi``.
* ``scheduler``: :class:`Scheduler`, and the :class:`CallFuture` protocol it drives.
* ``pool``: :class:`AppPool` and the node-wide :class:`InstanceCap`.
* ``hostfuncs``: the host side of ``__host_call`` and the namespace registry
  (:data:`NAMESPACES`).
* ``wasmbin``: reading a module's memories and tables from its bytes.

The heavy modules (wasmtime, redis) are imported when one of their names is first used, so
that importing ``runtime.errors`` (as the CLI does) stays cheap.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from .errors import (
    AssemblexError,
    CallTimeout,
    GuestError,
    HostError,
    ModuleError,
    Overloaded,
    WasmTrap,
)

if TYPE_CHECKING:
    from ._wasm import WASMTIME_VERSION, CompiledModule, Engine, Instance, LogSink
    from .hostfuncs import NAMESPACES, Grant, Host, KVQuota, KVStore, ReplicaKV
    from .pool import AppPool, InstanceCap
    from .scheduler import CallFuture, HostCall, HostHandler, Scheduler, Sleep

__all__ = [
    "NAMESPACES",
    "WASMTIME_VERSION",
    "AppPool",
    "AssemblexError",
    "CallFuture",
    "CallTimeout",
    "CompiledModule",
    "Engine",
    "Grant",
    "GuestError",
    "Host",
    "HostCall",
    "HostError",
    "HostHandler",
    "Instance",
    "InstanceCap",
    "KVQuota",
    "KVStore",
    "LogSink",
    "ModuleError",
    "Overloaded",
    "ReplicaKV",
    "Scheduler",
    "Sleep",
    "WasmTrap",
]

_LAZY = {
    "WASMTIME_VERSION": "_wasm",
    "CompiledModule": "_wasm",
    "Engine": "_wasm",
    "Instance": "_wasm",
    "LogSink": "_wasm",
    "NAMESPACES": "hostfuncs",
    "Grant": "hostfuncs",
    "Host": "hostfuncs",
    "KVQuota": "hostfuncs",
    "KVStore": "hostfuncs",
    "ReplicaKV": "hostfuncs",
    "AppPool": "pool",
    "InstanceCap": "pool",
    "CallFuture": "scheduler",
    "HostCall": "scheduler",
    "HostHandler": "scheduler",
    "Scheduler": "scheduler",
    "Sleep": "scheduler",
}


def __getattr__(name: str) -> object:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value
