#!/usr/bin/env python3
"""In-process cost of one waPC host call (``__host_call`` to ``host/echo``), no HTTP.

A `Node` runs guests/wat/hostcall_n.wat, whose every operation makes N host calls
host/echo(b"hello"), reads each response back (``__host_response_len``, ``__host_response``)
and answers. Variants, each ``await node.call("hostcall_n", "main", str(N))``:

  n0      N = 0: a plain call (pool, waPC request/response, scheduler fast path, metrics)
  n100    N = 100
  n1000   N = 1,000 (past the scheduler's yield every 16 host calls many times over)

and, as a reference, *direct*: the same ``host/echo`` coroutine awaited 100 times from Python
through the node's host handler (capability check, metrics), with no guest at all: what a host
call costs before any wasm is involved.

Each round times a batch of every variant, in a rotating order (interleaved, so that noise from
other processes falls on all of them alike); figures are medians over rounds. µs per host call
is (t(n100) - t(n0)) / 100, and the same for n1000. ``--profile`` then runs n1000 calls under
cProfile and prints the hottest functions.

Run: .venv/bin/python scripts/bench_hostcall.py [-n CALLS] [-r ROUNDS] [--profile]
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import gc
import pstats
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
from assemblexd.runtime import Host  # noqa: E402

APP = "hostcall_n"


class _NoKV:
    """The direct reference uses host/echo only: no store."""

    def get(self, key: str) -> bytes | None:
        raise AssertionError("not used")

    def set(self, key: str, value: bytes) -> None:
        raise AssertionError("not used")

    def delete(self, key: str) -> None:
        raise AssertionError("not used")

    def incr(self, key: str, n: int = 1) -> int:
        raise AssertionError("not used")

    def value(self, key: str) -> int:
        raise AssertionError("not used")


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument(
        "-n",
        "--calls",
        type=int,
        default=2000,
        help="plain calls per batch (default 2000); n100 makes 1/50 as many, n1000 1/500",
    )
    p.add_argument("-r", "--rounds", type=int, default=9, help="rounds (default 9)")
    p.add_argument("--profile", action="store_true", help="then profile n1000 calls with cProfile")
    return p.parse_args()


async def time_batch(fn: Callable[[], Awaitable[object]], n: int) -> float:
    """Microseconds per call of a batch of n awaited calls."""
    gc.collect()
    t0 = time.perf_counter()
    for _ in range(n):
        await fn()
    return (time.perf_counter() - t0) / n * 1e6


def direct_handler(node: Node) -> Callable[[], Awaitable[bytes]]:
    """100 awaits of host/echo through a Host handler like the node's, with no guest."""

    async def no_calls(app: str, op: str, payload: bytes, depth: int) -> bytes:
        raise AssertionError("not used")

    host = Host(_NoKV(), no_calls, {}, 32, on_host_call=node.metrics.host_call)
    handle = host.handler(node.app(APP), 0)

    async def hundred() -> bytes:
        data = b""
        for _ in range(100):
            data = await handle("", "host", "echo", b"hello")
        return data

    return hundred


async def main() -> int:
    args = parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    from importlib.metadata import version

    print(f"python {sys.version.split()[0]}, wasmtime-py {version('wasmtime')}")
    wasm = bytes(wasmtime.wat2wasm((ROOT / "guests/wat/hostcall_n.wat").read_text()))
    with tempfile.TemporaryDirectory(prefix="bench-hostcall-") as tmp:
        cfg = Config(data_dir=Path(tmp), mdns=False)
        async with Node(cfg) as node:
            await node.deploy(APP, wasm)
            for n in (0, 1, 100, 1000):
                assert await node.call(APP, "main", str(n).encode()) == str(n).encode()

            def guest(n: int) -> Callable[[], Awaitable[bytes]]:
                payload = str(n).encode()
                return lambda: node.call(APP, "main", payload)

            variants: dict[str, tuple[Callable[[], Awaitable[object]], int]] = {
                "n0": (guest(0), args.calls),
                "n100": (guest(100), max(1, args.calls // 50)),
                "n1000": (guest(1000), max(1, args.calls // 500)),
                "direct": (direct_handler(node), max(1, args.calls // 50)),
            }
            names = list(variants)
            for fn, n in variants.values():  # warm-up
                await time_batch(fn, max(1, n // 10))
            results: dict[str, list[float]] = {k: [] for k in names}
            per_host: dict[str, list[float]] = {"n100": [], "n1000": []}
            print(
                f"{args.rounds} rounds; batches: "
                + ", ".join(f"{k} x{n}" for k, (_, n) in variants.items())
                + " (order rotates each round)"
            )
            print(
                "round  "
                + "  ".join(f"{k:>9}" for k in names)
                + "   (us/call)   us/host call: n100     n1000"
            )
            for r in range(args.rounds):
                order = names[r % len(names) :] + names[: r % len(names)]
                row: dict[str, float] = {}
                for name in order:
                    fn, n = variants[name]
                    row[name] = await time_batch(fn, n)
                    results[name].append(row[name])
                per_host["n100"].append((row["n100"] - row["n0"]) / 100)
                per_host["n1000"].append((row["n1000"] - row["n0"]) / 1000)
                print(
                    f"{r + 1:>5}  "
                    + "  ".join(f"{row[k]:9.1f}" for k in names)
                    + f"   {per_host['n100'][-1]:21.1f} {per_host['n1000'][-1]:9.1f}",
                    flush=True,
                )
            med = {k: statistics.median(v) for k, v in results.items()}
            print()
            print("median us/call: " + ", ".join(f"{k} {v:.1f}" for k, v in med.items()))
            for key, vals in per_host.items():
                print(
                    f"us per host call ({key}): median {statistics.median(vals):.1f} "
                    f"(min {min(vals):.1f}, max {max(vals):.1f})"
                )
            print(f"us per direct await of the host handler: {med['direct'] / 100:.1f}")
            print(f"host call / plain call: {statistics.median(per_host['n100']) / med['n0']:.2f}")

            if args.profile:
                fn, _ = variants["n1000"]
                prof = cProfile.Profile()
                prof.enable()
                for _ in range(20):
                    await fn()
                prof.disable()
                print("\ncProfile, 20 calls of n1000 (20,000 host calls), by own time:")
                stats = pstats.Stats(prof, stream=sys.stdout)
                stats.sort_stats("tottime").print_stats(25)
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
