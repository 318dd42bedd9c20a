#!/usr/bin/env python3
"""CPU-bound guests: latency of short calls beside spinners, and parallelism of two spinners.

All through HTTP on one daemon subprocess (`--call-timeout` large enough for the spinners),
with guests/wat/spin.wat deployed as `spin` and guests/wat/echo.wat as `echo`:

  (a) latency: echo calls (`POST /call/echo/echo`, b"hello", sequential, one connection) for
      a few seconds, once with nothing else running ("idle") and once while 4 `spin` calls,
      each calibrated to run several seconds alone, are in flight ("spinning"). The two
      alternate for several rounds; printed: p50 / p99 / max per run and medians over rounds.
      Goal: p99 < 50 ms while spinning.
  (b) parallelism: wall time of one `spin` call alone, and of two sent at once; printed:
      pair / single per round and the median. Goal: <= 1.3. The machine has 2 cores and
      anything else running on them shows here, so each round also times a control: the same
      loop on 1 and on 2 plain threads through wasmtime-py's public API, in this process (the
      parallelism the machine offered then, without assemblexd).

The spin size is calibrated first: one call of N=10 (10 million iterations) is timed and N is
scaled to the requested seconds.

Run: .venv/bin/python scripts/bench_spin.py [-r ROUNDS] [-d ECHO_SECONDS] [--spin-seconds S]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import aiohttp
from bench_http import Daemon, exit_on_sigterm, raise_nofile, wat

ECHO = b"hello"


# Control for (b): the same loop as guests/wat/spin.wat, called through wasmtime-py's public API
# from plain threads (wasmtime-py releases the GIL while wasm runs). What it shows is the
# parallelism the machine offered at that moment, with no assemblexd involved.
RAW_SPIN_WAT = """
(module
  (global $state (mut i32) (i32.const 1))
  (func (export "spin") (param $left i64) (result i32)
    (block $finished
      (loop $spin
        (br_if $finished (i64.eqz (local.get $left)))
        (global.set $state
          (i32.add (i32.mul (global.get $state) (i32.const 1103515245)) (i32.const 12345)))
        (local.set $left (i64.sub (local.get $left) (i64.const 1)))
        (br $spin)))
    (global.get $state)))
"""


def raw_spin_threads(threads: int, millions: int) -> float:
    """Wall time of `threads` OS threads each running the raw spin loop once (own store each)."""
    import threading

    import wasmtime

    engine = wasmtime.Engine()
    module = wasmtime.Module(engine, wasmtime.wat2wasm(RAW_SPIN_WAT))
    calls = []
    for _ in range(threads):
        store = wasmtime.Store(engine)
        f = wasmtime.Instance(store, module, []).exports(store)["spin"]
        calls.append((f, store))
    workers = [
        threading.Thread(target=lambda f=f, st=st: f(st, millions * 1_000_000)) for f, st in calls
    ]
    t0 = time.perf_counter()
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    return time.perf_counter() - t0


def pct(sorted_vals: list[float], q: float) -> float:
    """Nearest-rank percentile of an already sorted list."""
    if not sorted_vals:
        return float("nan")
    k = max(0, min(len(sorted_vals) - 1, round(q / 100 * len(sorted_vals) + 0.5) - 1))
    return sorted_vals[k]


async def spin(session: aiohttp.ClientSession, url: str, n: int) -> float:
    t0 = time.perf_counter()
    async with session.post(f"{url}/call/spin/main", data=str(n).encode()) as resp:
        body = await resp.read()
        if resp.status != 200 or body != b"done":
            raise RuntimeError(f"spin {n}: HTTP {resp.status} {body[:200]!r}")
    return time.perf_counter() - t0


async def echo_for(session: aiohttp.ClientSession, url: str, seconds: float) -> list[float]:
    """Sequential echo calls for `seconds`; their latencies, sorted (seconds)."""
    lat: list[float] = []
    end = time.perf_counter() + seconds
    target = f"{url}/call/echo/echo"
    while time.perf_counter() < end:
        t0 = time.perf_counter()
        async with session.post(target, data=ECHO) as resp:
            body = await resp.read()
            if resp.status != 200 or body != ECHO:
                raise RuntimeError(f"echo: HTTP {resp.status} {body[:200]!r}")
        lat.append(time.perf_counter() - t0)
    lat.sort()
    return lat


async def latency_round(
    spin_session: aiohttp.ClientSession,
    echo_session: aiohttp.ClientSession,
    url: str,
    spinners: int,
    n: int,
    seconds: float,
) -> tuple[list[float], list[float]]:
    """Echo latencies for `seconds` while `spinners` spin calls of size n run; their times."""
    tasks = [asyncio.create_task(spin(spin_session, url, n)) for _ in range(spinners)]
    try:
        if spinners:
            await asyncio.sleep(0.3)  # let the spinners get going (and off the loop thread)
        lat = await echo_for(echo_session, url, seconds)
        if spinners and any(t.done() for t in tasks):
            print("  warning: a spinner finished before the echo calls did; raise --spin-seconds")
        spin_times = list(await asyncio.gather(*tasks))
    finally:
        for t in tasks:
            t.cancel()
    return lat, spin_times


def fmt_ms(lat: list[float]) -> str:
    return (
        f"n={len(lat):5d} p50 {pct(lat, 50) * 1e3:6.2f} ms  p99 {pct(lat, 99) * 1e3:6.2f} ms  "
        f"max {lat[-1] * 1e3:7.2f} ms"
    )


async def amain(args: argparse.Namespace) -> int:
    exit_on_sigterm()
    raise_nofile()
    timeout = aiohttp.ClientTimeout(total=600)
    with Daemon(
        "--call-timeout", str(args.call_timeout), "--call-wall-timeout", str(args.call_timeout * 2)
    ) as daemon:
        daemon.deploy("spin", wat("spin"))
        daemon.deploy("echo", wat("echo"))
        url = daemon.url
        async with (
            aiohttp.ClientSession(
                timeout=timeout, connector=aiohttp.TCPConnector(limit=0)
            ) as spins,
            aiohttp.ClientSession(
                timeout=timeout, connector=aiohttp.TCPConnector(limit=1)
            ) as echos,
        ):
            # calibration: N=10 (10 million iterations), best of 3
            await spin(spins, url, 1)
            base = min([await spin(spins, url, 10) for _ in range(3)])
            per_m = base / 10
            n_lat = max(1, round(args.spin_seconds / per_m))
            n_par = max(1, round(args.pair_seconds / per_m))
            print(
                f"calibration: spin N=10 takes {base * 1e3:.0f} ms alone -> "
                f"N={n_lat} (~{n_lat * per_m:.1f} s) for (a), N={n_par} (~{n_par * per_m:.1f} s) "
                f"for (b)"
            )
            await echo_for(echos, url, 0.5)  # warm-up

            print(
                f"\n(a) echo latency, sequential calls for {args.duration:g} s, idle vs beside "
                f"{args.spinners} spinners; {args.rounds} rounds, alternating"
            )
            runs: dict[str, list[list[float]]] = {"idle": [], "spinning": []}
            for r in range(args.rounds):
                order = ["idle", "spinning"] if r % 2 == 0 else ["spinning", "idle"]
                for kind in order:
                    k = args.spinners if kind == "spinning" else 0
                    lat, st = await latency_round(spins, echos, url, k, n_lat, args.duration)
                    runs[kind].append(lat)
                    extra = f"  (spin calls took {min(st):.1f}-{max(st):.1f} s)" if st else ""
                    print(f"round {r + 1} {kind:>8}: {fmt_ms(lat)}{extra}", flush=True)

            print(
                f"\n(b) one spin call (~{n_par * per_m:.1f} s) alone vs two at once, via HTTP; "
                f"control: the same loop on 1 vs 2 plain threads through wasmtime-py (no "
                f"daemon); {args.rounds} rounds, order rotating"
            )
            ratios: list[float] = []
            raw_ratios: list[float] = []
            singles: list[float] = []
            pairs: list[float] = []
            kinds = ["single", "pair", "raw single", "raw pair"]
            for r in range(args.rounds):
                order = kinds[r % 4 :] + kinds[: r % 4]
                got: dict[str, float] = {}
                for kind in order:
                    if kind.startswith("raw"):
                        got[kind] = await asyncio.to_thread(
                            raw_spin_threads, 1 if kind == "raw single" else 2, n_par
                        )
                        continue
                    t0 = time.perf_counter()
                    await asyncio.gather(
                        *(spin(spins, url, n_par) for _ in range(1 if kind == "single" else 2))
                    )
                    got[kind] = time.perf_counter() - t0
                singles.append(got["single"])
                pairs.append(got["pair"])
                ratios.append(got["pair"] / got["single"])
                raw_ratios.append(got["raw pair"] / got["raw single"])
                print(
                    f"round {r + 1}: daemon single {got['single']:.2f} s, "
                    f"pair {got['pair']:.2f} s, "
                    f"ratio {ratios[-1]:.2f} | raw threads single {got['raw single']:.2f} s, "
                    f"pair {got['raw pair']:.2f} s, ratio {raw_ratios[-1]:.2f}",
                    flush=True,
                )
        if daemon.proc is not None and daemon.proc.poll() is not None:
            print("daemon died during the run:\n" + daemon.log_tail())
            return 1

    print()
    for kind, lats in runs.items():
        p50 = statistics.median(pct(x, 50) for x in lats) * 1e3
        p99 = statistics.median(pct(x, 99) for x in lats) * 1e3
        worst = max(x[-1] for x in lats) * 1e3
        print(
            f"(a) {kind:>8}: median over rounds p50 {p50:.2f} ms, p99 {p99:.2f} ms "
            f"(max seen {worst:.1f} ms)"
        )
    p99_spin = statistics.median(pct(x, 99) for x in runs["spinning"]) * 1e3
    ratio = statistics.median(ratios)
    print(
        f"(b) single median {statistics.median(singles):.2f} s, pair median "
        f"{statistics.median(pairs):.2f} s, pair/single median {ratio:.2f} "
        f"(min {min(ratios):.2f}, max {max(ratios):.2f}); control (raw wasmtime-py threads) "
        f"pair/single median {statistics.median(raw_ratios):.2f}"
    )
    print(
        f"goal (a) p99 < 50 ms while spinning: {'met' if p99_spin < 50 else 'MISSED'} "
        f"({p99_spin:.1f} ms); goal (b) pair/single <= 1.3: "
        f"{'met' if ratio <= 1.3 else 'MISSED'} ({ratio:.2f})"
    )
    return 0


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument(
        "-r", "--rounds", type=int, default=4, help="rounds of (a) and of (b) (default 4)"
    )
    p.add_argument(
        "-d",
        "--duration",
        type=float,
        default=3.0,
        help="seconds of echo calls per run of (a) (default 3)",
    )
    p.add_argument(
        "-k", "--spinners", type=int, default=4, help="spin calls during (a) (default 4)"
    )
    p.add_argument(
        "-s",
        "--spin-seconds",
        type=float,
        default=2.5,
        help="target time of one spin call of (a), alone (default 2.5; with 4 spinners "
        "on 2 cores they take about twice as long: ~5 s)",
    )
    p.add_argument(
        "-p",
        "--pair-seconds",
        type=float,
        default=2.0,
        help="target time of one spin call of (b) (default 2)",
    )
    p.add_argument(
        "-t",
        "--call-timeout",
        type=float,
        default=120.0,
        help="daemon --call-timeout, s (default 120)",
    )
    return asyncio.run(amain(p.parse_args()))


if __name__ == "__main__":
    sys.exit(main())
