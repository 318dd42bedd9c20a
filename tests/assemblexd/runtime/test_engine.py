"""The real engine through the runtime's public boundary: a guest run end to end with the
scheduler, and the console-log sink that each engine has for itself."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from assemblexd.runtime import Engine, Scheduler

Wat = Callable[[str], bytes]


def no_host(binding: str, namespace: str, operation: str, payload: bytes) -> Awaitable[bytes]:
    raise AssertionError("no host call expected")


async def call(engine: Engine, wasm: bytes, tag: str, payload: bytes) -> bytes:
    scheduler = Scheduler(engine, workers=1)
    try:
        compiled = engine.compile(wasm)
        inst = engine.new_instance(compiled, 1 << 20, tag)
        await scheduler.run(inst.instantiate(), 1.0, no_host)
        inst.bind()
        fut = inst.guest_call(b"main", payload)
        assert await scheduler.run(fut, 1.0, no_host) == 1
        inst.close()
        return fut.response or b""
    finally:
        scheduler.close()


async def test_each_engine_sends_console_lines_to_its_own_sink(wat: Wat) -> None:
    lines: dict[str, list[tuple[object, bytes]]] = {"a": [], "b": []}
    a = Engine(log_sink=lambda inst, line: lines["a"].append((inst.tag, line)))
    b = Engine(log_sink=lambda inst, line: lines["b"].append((inst.tag, line)))
    silent = Engine()  # no sink: the lines go nowhere, the call still succeeds
    try:
        wasm = wat("console_log")
        assert await call(a, wasm, "app-a", b"from a") == b"logged"
        assert await call(b, wasm, "app-b", b"from b") == b"logged"
        assert await call(silent, wasm, "app-s", b"from s") == b"logged"
    finally:
        for engine in (a, b, silent):
            engine.close()
    assert lines["a"] == [("app-a", b"from a"), ("app-a", b"second line")]
    assert lines["b"] == [("app-b", b"from b"), ("app-b", b"second line")]
