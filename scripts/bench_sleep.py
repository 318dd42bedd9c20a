#!/usr/bin/env python3
"""2,000 calls in flight at once, each waiting 500 ms in the host (`host/sleep`).

Starts the daemon as a subprocess (`--max-instances 4096`, open-file limit raised for it and
for this client), deploys guests/wat/host_sleep.wat as `sleep`, then fires N concurrent
`POST /call/sleep/main` with body `500` from one aiohttp client (connector without a
connection limit) and measures the wall time until the last answer: first a cold burst (each
call opens its connection: 2,000 TCP handshakes on the same two cores), then a warm burst on
the same, kept-alive, connections. Meanwhile a thread samples
`Threads:` in /proc/<daemon pid>/status every 20 ms; the peak is reported. Several rounds;
medians reported. For scale, the same load goes to a bare aiohttp server whose handler
does `await asyncio.sleep(0.5)` (the floor of this client and aiohttp on this machine),
alternating with the daemon, and the same 2,000 calls go to a Node inside this process
(`node.call`, no HTTP at all: what the runtime alone costs).
Goals: all 200, wall time < 2.5 s, peak threads <= 32.

Run: .venv/bin/python scripts/bench_sleep.py [-n CALLS] [-r ROUNDS] [-s SLEEP_MS]
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import aiohttp
from bench_http import (
    ROOT,
    Daemon,
    Profiler,
    exit_on_sigterm,
    raise_nofile,
    run_bare_server,
    threads_of,
    wat,
)

sys.path.insert(0, str(ROOT))
from assemblexd.config import Config
from assemblexd.node import Node


class ThreadSampler:
    """Samples the thread count of `pid` every `interval` seconds on a daemon thread."""

    def __init__(self, pid: int, interval: float = 0.02) -> None:
        self.pid = pid
        self.interval = interval
        self.peak = 0
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, threads_of(self.pid))
            self.samples += 1
            self._stop.wait(self.interval)

    def __enter__(self) -> ThreadSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def listen_overflows() -> int:
    """TcpExt ListenOverflows of this network namespace: connections the kernel dropped because
    a listening socket's accept queue (its backlog) was full; the client retries the SYN after
    about 1 s. (Counts every listener in the namespace, not only ours.)"""
    try:
        lines = Path("/proc/net/netstat").read_text().splitlines()
    except OSError:
        return -1
    for head, vals in zip(lines[::2], lines[1::2], strict=False):
        if head.startswith("TcpExt:"):
            return int(
                dict(zip(head.split(), vals.split(), strict=False)).get("ListenOverflows", -1)
            )
    return -1


async def burst(
    session: aiohttp.ClientSession, url: str, n: int, body: bytes
) -> tuple[float, collections.Counter[str], list[float]]:
    """n concurrent POSTs of `body` to `url`: (wall seconds, status counts, latencies)."""
    statuses: collections.Counter[str] = collections.Counter()
    latencies: list[float] = []

    async def call() -> None:
        t0 = time.perf_counter()
        try:
            async with session.post(url, data=body) as resp:
                got = await resp.read()
                key = str(resp.status)
                if resp.status == 200 and got != body:
                    key = "200-wrong-body"
                elif resp.status != 200:
                    key = f"{resp.status} {got[:80]!r}"
        except Exception as exc:
            key = type(exc).__name__
        statuses[key] += 1
        latencies.append(time.perf_counter() - t0)

    t0 = time.perf_counter()
    await asyncio.gather(*(call() for _ in range(n)))
    return time.perf_counter() - t0, statuses, latencies


def session(timeout: float) -> aiohttp.ClientSession:
    # limit=0: no cap on connections; keep-alive so that the warm burst reuses them.
    connector = aiohttp.TCPConnector(limit=0, keepalive_timeout=60)
    return aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=timeout))


async def amain(args: argparse.Namespace) -> int:
    exit_on_sigterm()
    nofile = raise_nofile()
    print(f"client open-file limit: {nofile}")
    body = str(args.sleep_ms).encode()
    async with contextlib.AsyncExitStack() as stack:
        return await _amain(args, body, stack)


async def _amain(args: argparse.Namespace, body: bytes, stack: contextlib.AsyncExitStack) -> int:
    with (
        Daemon(
            "--max-instances", str(args.max_instances), "--pool-size", str(args.pool_size)
        ) as daemon,
        run_bare_server() as bare,
    ):
        # The same calls on a Node inside this process, without HTTP: what the runtime costs.
        # (The stack closes the node before its temporary directory.)
        tmp = stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-sleep-inproc-"))
        inproc_cfg = Config(
            data_dir=Path(tmp),
            mdns=False,
            max_instances=args.max_instances,
            pool_size=args.pool_size,
        )
        node = await stack.enter_async_context(Node(inproc_cfg))
        await node.deploy("sleep", wat("host_sleep"))
        assert await node.call("sleep", "main", b"1") == b"1"
        inproc_walls: list[float] = []
        inproc_peaks: list[int] = []
        limits = Path(f"/proc/{daemon.pid}/limits").read_text().splitlines()  # noqa: ASYNC240
        line = next((x for x in limits if x.startswith("Max open files")), "").split()
        print(
            f"daemon pid {daemon.pid}, open-file limit {line[3] if len(line) > 3 else '?'}, "
            f"threads at start {threads_of(daemon.pid)}"
        )
        daemon.deploy("sleep", wat("host_sleep"))
        assert daemon.call("sleep", "main", b"1") == b"1"
        targets = {"daemon": (f"{daemon.url}/call/sleep/main", daemon.pid)}
        if not args.no_bare:
            targets["bare"] = (f"{bare.url}/call/sleep/main", bare.pid)
        walls: dict[tuple[str, str], list[float]] = {
            (k, kind): [] for k in targets for kind in ("cold", "warm")
        }
        peaks: dict[str, list[int]] = {k: [] for k in targets}
        all_ok = True
        print(
            f"{args.rounds} rounds of {args.calls} concurrent POST /call/sleep/main, body "
            f"{body.decode()!r}; daemon and bare aiohttp (asyncio.sleep handler) alternate;\n"
            "each: a cold burst (2000 new connections) then a warm one (the same connections, "
            "kept alive)"
        )
        for r in range(args.rounds):
            order = list(targets) if r % 2 == 0 else list(reversed(targets))
            for name in order:
                url, pid = targets[name]
                async with session(args.timeout) as sess:
                    for kind in ("cold", "warm"):
                        overflows = listen_overflows()
                        with ThreadSampler(pid, 0.02) as sampler:
                            wall, statuses, lat = await burst(sess, url, args.calls, body)
                        overflows = listen_overflows() - overflows
                        lat.sort()
                        if name == "daemon":
                            all_ok &= statuses.get("200", 0) == args.calls
                        walls[name, kind].append(wall)
                        peaks[name].append(sampler.peak)
                        print(
                            f"round {r + 1} {name:>6} {kind}: wall {wall:.2f} s, peak threads "
                            f"{sampler.peak}, latency min {lat[0]:.2f} / p50 "
                            f"{lat[len(lat) // 2]:.2f} / max {lat[-1]:.2f} s, "
                            f"accept-queue overflows {overflows}, statuses {dict(statuses)}",
                            flush=True,
                        )
                await asyncio.sleep(1.0)  # let the server settle (connections closed)
            if not args.no_inproc:
                with ThreadSampler(os.getpid(), 0.02) as sampler:
                    t0 = time.perf_counter()
                    got = await asyncio.gather(
                        *(node.call("sleep", "main", body) for _ in range(args.calls)),
                        return_exceptions=True,
                    )
                    wall = time.perf_counter() - t0
                ok = sum(1 for x in got if x == body)
                all_ok &= ok == args.calls
                inproc_walls.append(wall)
                inproc_peaks.append(sampler.peak)
                print(
                    f"round {r + 1} inproc: wall {wall:.2f} s, peak threads of this process "
                    f"{sampler.peak} (sampler thread included), {ok}/{args.calls} answered",
                    flush=True,
                )
                await asyncio.sleep(1.0)
        if daemon.proc is not None and daemon.proc.poll() is not None:
            print("daemon died during the run:\n" + daemon.log_tail())
            return 1
        print(f"daemon threads at end {threads_of(daemon.pid)}")
        if args.profile:
            (ROOT / "bench-results").mkdir(exist_ok=True)
            print("\nprofiling the daemon during one more cold + warm burst (not counted)")
            with Profiler(daemon.pid, ROOT / "bench-results" / "profile-sleep.txt"):
                async with session(args.timeout) as sess:
                    for kind in ("cold", "warm"):
                        wall, statuses, _ = await burst(
                            sess, targets["daemon"][0], args.calls, body
                        )
                        print(f"  {kind}: wall {wall:.2f} s under the profiler, {dict(statuses)}")
    med = {k: statistics.median(v) for k, v in walls.items()}
    max_peak = max(peaks["daemon"])
    print()
    for kind in ("cold", "warm"):
        line = f"{kind}: daemon median wall {med['daemon', kind]:.2f} s"
        if "bare" in targets:
            ratios = [
                d / b for d, b in zip(walls["daemon", kind], walls["bare", kind], strict=True)
            ]
            line += (
                f", bare aiohttp {med['bare', kind]:.2f} s, "
                f"daemon/bare median {statistics.median(ratios):.2f}"
            )
        print(line)
    if inproc_walls:
        print(
            f"inproc (Node in this process, no HTTP): median wall "
            f"{statistics.median(inproc_walls):.2f} s, peak threads max {max(inproc_peaks)}"
        )
    print(f"daemon peak threads: max {max_peak} over all bursts")
    print(
        f"goal all 200: {'met' if all_ok else 'MISSED'}; threads <= 32: "
        f"{'met' if max_peak <= 32 else 'MISSED'}; wall < 2.5 s: cold "
        f"{'met' if med['daemon', 'cold'] < 2.5 else 'MISSED'}, warm "
        f"{'met' if med['daemon', 'warm'] < 2.5 else 'MISSED'}"
    )
    return 0


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("-n", "--calls", type=int, default=2000, help="concurrent calls (default 2000)")
    p.add_argument("-r", "--rounds", type=int, default=3, help="rounds (default 3)")
    p.add_argument(
        "-s", "--sleep-ms", type=int, default=500, help="host sleep per call, ms (default 500)"
    )
    p.add_argument(
        "-m",
        "--max-instances",
        type=int,
        default=4096,
        help="daemon --max-instances (default 4096)",
    )
    p.add_argument(
        "--profile",
        action="store_true",
        help="after the rounds, one more burst pair on the daemon under py-spy; stacks "
        "in bench-results/profile-sleep.txt",
    )
    p.add_argument(
        "-P",
        "--pool-size",
        type=int,
        default=16,
        help="daemon --pool-size (default 16: most instances are created per burst)",
    )
    p.add_argument(
        "--no-inproc", action="store_true", help="skip the in-process (no HTTP) comparison"
    )
    p.add_argument("--no-bare", action="store_true", help="skip the bare aiohttp comparison")
    p.add_argument(
        "-t", "--timeout", type=float, default=30.0, help="client timeout per round, s (default 30)"
    )
    return asyncio.run(amain(p.parse_args()))


if __name__ == "__main__":
    sys.exit(main())
