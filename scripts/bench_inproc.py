#!/usr/bin/env python3
"""In-process cost of one waPC echo call, against a raw wasmtime-py call and the Extism SDK.

Three ways to answer b"hello" from wasm, all in this process, no HTTP:

  ours     await node.call("echo", "echo", b"hello") on an assemblexd Node (guests/wat/echo.wat):
           pool acquire/release, waPC __guest_request/__guest_response, the scheduler's
           fast path, metrics.
  raw      wasmtime-py's public API: instance.exports(store)["f"](store, 42) on a WAT function
           that returns its argument (the floor: one call into wasm and back, no payload).
  extism   the Extism Python SDK (PyPI `extism`): plugin.call("echo", b"hello") on a WAT plugin
           written against Extism's kernel imports (extism:host/env), copying the input into
           kernel memory and setting it as output, as the Rust PDK does.
  extism0  the same SDK with the smallest possible echo plugin: output_set(input_offset,
           input_length), no copy (a floor for Extism).

Each round times a batch of calls of every variant, in a rotating order (interleaved, so that
noise from other processes falls on all of them alike); the figures are medians over rounds of
microseconds per call. Goal: ours no slower than extism.

Run: .venv/bin/python scripts/bench_inproc.py [-n CALLS] [-r ROUNDS]
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import signal
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import wasmtime

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from assemblexd.config import Config  # noqa: E402
from assemblexd.node import Node  # noqa: E402

PAYLOAD = b"hello"

RAW_WAT = """
(module
  (func (export "f") (param i32) (result i32) (local.get 0)))
"""

# An Extism echo plugin the way the Rust PDK does it: read the input 8 bytes at a time
# (input_load_u64, then input_load_u8 for the tail) into a kernel block from `alloc`
# (store_u64 / store_u8), then make that block the output (output_set).
EXTISM_WAT = """
(module
  (import "extism:host/env" "input_length" (func $input_length (result i64)))
  (import "extism:host/env" "input_load_u8" (func $input_load_u8 (param i64) (result i32)))
  (import "extism:host/env" "input_load_u64" (func $input_load_u64 (param i64) (result i64)))
  (import "extism:host/env" "alloc" (func $alloc (param i64) (result i64)))
  (import "extism:host/env" "store_u8" (func $store_u8 (param i64 i32)))
  (import "extism:host/env" "store_u64" (func $store_u64 (param i64 i64)))
  (import "extism:host/env" "output_set" (func $output_set (param i64 i64)))
  (memory (export "memory") 1)
  (func (export "echo") (result i32)
    (local $len i64) (local $out i64) (local $i i64)
    (local.set $len (call $input_length))
    (local.set $out (call $alloc (local.get $len)))
    (block $tail
      (loop $words
        (br_if $tail (i64.gt_u (i64.add (local.get $i) (i64.const 8)) (local.get $len)))
        (call $store_u64 (i64.add (local.get $out) (local.get $i))
                         (call $input_load_u64 (local.get $i)))
        (local.set $i (i64.add (local.get $i) (i64.const 8)))
        (br $words)))
    (block $done
      (loop $bytes
        (br_if $done (i64.ge_u (local.get $i) (local.get $len)))
        (call $store_u8 (i64.add (local.get $out) (local.get $i))
                        (call $input_load_u8 (local.get $i)))
        (local.set $i (i64.add (local.get $i) (i64.const 1)))
        (br $bytes)))
    (call $output_set (local.get $out) (local.get $len))
    (i32.const 0)))
"""

# The least an Extism echo can do: the input block becomes the output block.
EXTISM_MIN_WAT = """
(module
  (import "extism:host/env" "input_offset" (func $input_offset (result i64)))
  (import "extism:host/env" "input_length" (func $input_length (result i64)))
  (import "extism:host/env" "output_set" (func $output_set (param i64 i64)))
  (memory (export "memory") 1)
  (func (export "echo") (result i32)
    (call $output_set (call $input_offset) (call $input_length))
    (i32.const 0)))
"""


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("-n", "--calls", type=int, default=5000, help="calls per batch (default 5000)")
    p.add_argument("-r", "--rounds", type=int, default=9, help="rounds (default 9)")
    p.add_argument(
        "--no-extism", action="store_true", help="skip the Extism variants (if extism is missing)"
    )
    return p.parse_args()


def make_raw() -> Callable[[], object]:
    engine = wasmtime.Engine()
    store = wasmtime.Store(engine)
    module = wasmtime.Module(engine, wasmtime.wat2wasm(RAW_WAT))
    instance = wasmtime.Instance(store, module, [])
    f = instance.exports(store)["f"]
    assert isinstance(f, wasmtime.Func)
    assert f(store, 42) == 42

    def call() -> object:
        return f(store, 42)

    return call


def make_extism(wat: str) -> Callable[[], bytes]:
    import extism

    plugin = extism.Plugin(bytes(wasmtime.wat2wasm(wat)), wasi=False)
    got = plugin.call("echo", PAYLOAD)
    assert bytes(got) == PAYLOAD, got
    long = b"0123456789abcdefXYZ"
    assert bytes(plugin.call("echo", long)) == long

    def call() -> bytes:
        return plugin.call("echo", PAYLOAD)  # type: ignore[no-any-return]

    return call


def rss_mib() -> float:
    """Resident memory of this process (VmRSS), MiB: a leak in any variant shows as growth."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


def time_sync(fn: Callable[[], object], n: int) -> float:
    """Microseconds per call of a batch of n calls."""
    gc.collect()
    t0 = time.perf_counter()
    for _ in range(n):
        fn()
    return (time.perf_counter() - t0) / n * 1e6


async def time_async(fn: Callable[[], Awaitable[object]], n: int) -> float:
    gc.collect()
    t0 = time.perf_counter()
    for _ in range(n):
        await fn()
    return (time.perf_counter() - t0) / n * 1e6


async def main() -> int:
    args = parse_args()
    # SIGTERM (e.g. from `timeout`) raises SystemExit: the node and its temporary dir are closed.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    from importlib.metadata import version

    extism_v = "-"
    if not args.no_extism:
        try:
            extism_v = f"{version('extism')} (extism-sys {version('extism-sys')})"
        except Exception:
            extism_v = "not installed"
    print(f"python {sys.version.split()[0]}, wasmtime-py {version('wasmtime')}, extism {extism_v}")
    variants: dict[str, Callable[[int], Awaitable[float]]] = {}

    with tempfile.TemporaryDirectory(prefix="bench-inproc-") as tmp:
        cfg = Config(data_dir=Path(tmp), mdns=False)
        async with Node(cfg) as node:
            await node.deploy(
                "echo", bytes(wasmtime.wat2wasm((ROOT / "guests/wat/echo.wat").read_text()))
            )
            assert await node.call("echo", "echo", PAYLOAD) == PAYLOAD

            async def ours(n: int) -> float:
                return await time_async(lambda: node.call("echo", "echo", PAYLOAD), n)

            variants["ours"] = ours
            raw = make_raw()

            async def raw_v(n: int) -> float:
                return time_sync(raw, n)

            variants["raw"] = raw_v
            if not args.no_extism:
                try:
                    ext = make_extism(EXTISM_WAT)
                    ext0 = make_extism(EXTISM_MIN_WAT)
                except ImportError:
                    print("extism is not installed: .venv/bin/pip install extism (or --no-extism)")
                    return 2

                async def ext_v(n: int) -> float:
                    return time_sync(ext, n)

                async def ext0_v(n: int) -> float:
                    return time_sync(ext0, n)

                variants["extism"] = ext_v
                variants["extism0"] = ext0_v

            names = list(variants)
            # warm-up: one short batch each
            for name in names:
                await variants[name](max(100, args.calls // 10))
            results: dict[str, list[float]] = {k: [] for k in names}
            ratios: dict[str, list[float]] = {"ours/extism": [], "ours/extism0": [], "ours/raw": []}
            print(
                f"{args.rounds} rounds x {args.calls} calls per variant (order rotates each round)"
            )
            print("round  " + "  ".join(f"{k:>9}" for k in names) + "   (us/call)   rss MiB")
            for r in range(args.rounds):
                order = names[r % len(names) :] + names[: r % len(names)]
                row: dict[str, float] = {}
                for name in order:
                    row[name] = await variants[name](args.calls)
                    results[name].append(row[name])
                for key in ratios:
                    other = key.split("/")[1]
                    if other in row:
                        ratios[key].append(row["ours"] / row[other])
                print(
                    f"{r + 1:>5}  "
                    + "  ".join(f"{row[k]:9.2f}" for k in names)
                    + f"   {rss_mib():13.1f}",
                    flush=True,
                )

    print()
    print(
        "median us/call: "
        + ", ".join(f"{k} {statistics.median(v):.2f}" for k, v in results.items())
    )
    for key, vals in ratios.items():
        if vals:
            print(
                f"{key:>13}: median {statistics.median(vals):.2f}  "
                f"(min {min(vals):.2f}, max {max(vals):.2f})"
            )
    if ratios["ours/extism"]:
        med = statistics.median(ratios["ours/extism"])
        verdict = "met" if med <= 1.0 else "MISSED"
        print(f"goal ours/extism <= 1.0: {verdict} ({med:.2f})")
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
