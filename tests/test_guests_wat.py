"""Every hand-written WAT guest compiles, and each is valid or invalid as its name promises."""

from __future__ import annotations

from pathlib import Path

import pytest
import wasmtime
from helpers import WAT_DIR, load_wat

from assemblexd.runtime._wasm import WASI_UNSTABLE_SAME

WAT_FILES = sorted(WAT_DIR.glob("*.wat"))
INVALID = {"no_guest_call", "no_memory", "unknown_import", "bad_signature", "wasi_unstable_seek"}
VALID = {
    "echo",
    "error",
    "noerror",
    "trap",
    "loop",
    "memhog",
    "host_echo",
    "host_sleep",
    "hostcall",
    "recursion",
    "console_log",
    "init_order",
    "wasi_exit",
    "spin",
    "big_response",
    "stack_overflow",
    "start_loop",
    "hostcall_flood",
    "response_flood",
    "table_grow",
    "wasi_unstable",
    "panic",
    "init_panic",
    "as_abort",
    "zero_length",
    "wasi_sleep",
    "wasi_random",
    "spin_echo",
    "actor_store",
}
# Valid by their types, refused by a deploy for what they would allocate (more than one
# memory, a shared memory, minimums over the limits, wasm GC): tests/assemblexd/test_runtime.py.
OVER_LIMITS = {
    "many_memories",
    "shared_memory",
    "huge_memory_min",
    "huge_table_min",
    "gc_arrays",
}

# The host's imports as (module, name) -> (params, results); every parameter is i32.
WAPC_IMPORTS = {
    "__guest_request": (2, 0),
    "__guest_response": (2, 0),
    "__guest_error": (2, 0),
    "__host_call": (8, 1),
    "__host_response_len": (0, 1),
    "__host_response": (1, 0),
    "__host_error_len": (0, 1),
    "__host_error": (1, 0),
    "__console_log": (2, 0),
}


def test_the_folder_has_guests() -> None:
    assert {p.stem for p in WAT_FILES} >= VALID | INVALID | OVER_LIMITS


@pytest.mark.parametrize("path", WAT_FILES, ids=[p.stem for p in WAT_FILES])
def test_wat_compiles(path: Path) -> None:
    wasm = load_wat(path.stem)
    assert wasm[:4] == b"\0asm"
    wasmtime.Module.validate(wasmtime.Engine(), wasm)


def _problems(module: wasmtime.Module) -> list[str]:
    """What a deploy check would reject, found from the module's types alone."""
    i32 = wasmtime.ValType.i32()
    problems = []
    exports = {e.name: e.type for e in module.exports}
    if not isinstance(exports.get("memory"), wasmtime.MemoryType):
        problems.append("no memory export")
    call = exports.get("__guest_call")
    if not (
        isinstance(call, wasmtime.FuncType) and call.params == [i32, i32] and call.results == [i32]
    ):
        problems.append("no __guest_call(i32, i32) -> i32 export")
    for imp in module.imports:
        if (
            imp.module == "wasi_snapshot_preview1"
            or (imp.module == "wasi_unstable" and imp.name in WASI_UNSTABLE_SAME)
            or (imp.module, imp.name) == ("env", "abort")
        ):
            continue
        if imp.module != "wapc" or imp.name not in WAPC_IMPORTS:
            problems.append(f"unknown import {imp.module}.{imp.name}")
            continue
        params, results = WAPC_IMPORTS[imp.name]
        ty = imp.type
        if not (
            isinstance(ty, wasmtime.FuncType)
            and ty.params == [i32] * params
            and ty.results == [i32] * results
        ):
            problems.append(f"bad signature for wapc.{imp.name}")
    return problems


@pytest.mark.parametrize("path", WAT_FILES, ids=[p.stem for p in WAT_FILES])
def test_validity_matches_the_name(path: Path) -> None:
    module = wasmtime.Module(wasmtime.Engine(), load_wat(path.stem))
    problems = _problems(module)
    if path.stem in INVALID:
        assert len(problems) == 1, problems
    else:
        assert problems == []
