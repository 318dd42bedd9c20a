"""wasmbin reads every memory and table a module declares, exported or not."""

from __future__ import annotations

import pytest
import wasmtime

from assemblexd.runtime.wasmbin import Memory, Resources, Table, read_resources, rename_imports


def resources(wat: str) -> Resources:
    wasm = bytes(wasmtime.wat2wasm(wat))
    config = wasmtime.Config()
    config.wasm_memory64 = True
    wasmtime.Module.validate(wasmtime.Engine(config), wasm)  # only what wasmtime accepts
    return read_resources(wasm)


def test_hidden_memories_and_tables_are_counted() -> None:
    got = resources(
        """(module
             (import "wapc" "__console_log" (func (param i32 i32)))
             (import "env" "g" (global i32))
             (memory (export "memory") 2) (memory 3 10) (memory 1 1 shared)
             (table 5 funcref) (table 7 100 externref))"""
    )
    page = 65536
    assert got.memories == (
        Memory(2 * page, shared=False),
        Memory(3 * page, shared=False),
        Memory(1 * page, shared=True),
    )
    assert got.tables == (Table(5), Table(7))


def test_imported_memories_and_tables_come_first() -> None:
    got = resources(
        """(module
             (import "env" "t" (table 3 funcref))
             (import "env" "m" (memory 4))
             (memory 1) (table 9 funcref))"""
    )
    assert got.memories == (Memory(4 * 65536, False, imported=True), Memory(65536, False))
    assert got.tables == (Table(3, imported=True), Table(9))


def test_memory64_and_a_module_without_any() -> None:
    assert resources("(module (memory i64 70000))").memories == (Memory(70000 * 65536, False),)
    assert resources("(module)") == Resources(memories=(), tables=())


def test_not_a_module() -> None:
    with pytest.raises(ValueError, match="not a wasm module"):
        read_resources(b"junk")
    with pytest.raises(ValueError, match="unexpected end"):
        read_resources(b"\0asm\x01\0\0\0\x05\x05\x01")


def test_a_table_with_an_initializer() -> None:
    # Its expression is not parsed: the tables after it are counted, their minimums unknown (0).
    wasm = bytes(
        wasmtime.wat2wasm(
            """(module (func $f) (elem declare func $f)
                 (table 2 (ref func) (ref.func $f)) (table 4 funcref) (memory 1))"""
        )
    )
    wasmtime.Module.validate(wasmtime.Engine(), wasm)
    assert read_resources(wasm).tables == (Table(2), Table(0))


def test_rename_imports_renames_the_named_ones_only() -> None:
    wasm = bytes(
        wasmtime.wat2wasm(
            """(module
                 (import "old" "a" (func (param i32)))
                 (import "old" "b" (func))
                 (import "other" "a" (memory 1))
                 (func (export "f") (call 0 (i32.const 1))))"""
        )
    )
    renamed = rename_imports(wasm, "old", "brand_new_module", frozenset({"a"}))
    module = wasmtime.Module(wasmtime.Engine(), renamed)
    assert [(i.module, i.name) for i in module.imports] == [
        ("brand_new_module", "a"),
        ("old", "b"),
        ("other", "a"),
    ]
    assert [e.name for e in module.exports] == ["f"]
    assert read_resources(renamed) == read_resources(wasm)
    assert rename_imports(wasm, "old", "new", frozenset({"zzz"})) is wasm
