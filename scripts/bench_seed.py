#!/usr/bin/env python3
"""The original Assemblex benchmark, reproduced: three Redis GETs in a wasm guest against native.

What runs, all on 127.0.0.1, for the whole run:
- a redis-server of its own (tests/helpers.py `run_redis_server`), with `some_key1..3` SET;
- two daemons (`python -m assemblexd run`), `--pool-size 1` and `--pool-size 100`, both with
  `--max-instances 4096`, each with the `redis3` guest of every language asked for deployed as
  `<lang>-redis3` (`guests/build/<lang>-redis3.wasm`; built by scripts/build-guests if missing).
  A call is `GET /call/<lang>-redis3/main`: three host calls `redis GET some_keyN`;
- a native server (this script, `--native-server PORT REDIS_URL`): an aiohttp handler doing
  the same three GETs with the same Redis client as the daemon's `redis` namespace (made by
  the daemon's own code, assemblexd/runtime/hostfuncs.py: redis.asyncio, a pool of at most 256
  connections, same timeouts, raw replies), served the way the daemon serves (AppRunner
  without access log, TCPSite with a listen backlog of 4096).

For each concurrency (1, 4, 16, 64, 256, 1024), `--rounds` times (3 by default), every target
is loaded in turn by wrk: one thread, that many connections, a warm-up run (discarded; it also
fills the pools), then a measured run of `--duration` seconds. Every run starts once all the
servers are idle again (requests wrk left behind when it stopped run to their end). The rounds
interleave the targets, so a slow spell of this shared machine hits them alike; the table shows
medians, and the ratio to native is the median of the ratios of runs of the same round. A Lua
script counts every response that is not a 200 with the expected body (and keeps the first
one), and reports throughput and latency percentiles (p50, p99). The server's CPU time per
request (user + system, all threads, from /proc) is kept too: on a machine where other work
competes for the cores it is steadier than throughput, and its ratio is the throughput ratio
once the server's core is the bottleneck.

Why wrk and not an aiohttp client: this machine has two cores, shared by the load generator,
the server under test and Redis. A Python client costs about as much CPU per request as the
Python server it measures, so it would take half the machine and cap both sides at its own
speed; wrk (C, epoll) needs a small fraction of that, so the numbers are the servers'. It is
the load generator the other HTTP benchmarks here use (scripts/bench_http.py). wrk is closed
loop, like the original: each connection sends its next request when the last one is answered,
so latency is the service time at that concurrency.

Output: a table on stdout, `bench-results/seed.csv`, the log-log plot `docs/img/bench_seed.png`
(matplotlib, installed into the venv when missing), and the verdict on the goal: with a pool of
100, wasm throughput >= 0.8 x native at every concurrency from 16 up, every response a 200.
`--profile N` also records the native server and the pool-100 daemon with py-spy during the
measured runs at concurrency N and prints where their time goes.

Run: .venv/bin/python scripts/bench_seed.py [--langs rust,go,assemblyscript,zig | --langs all]
     [-d SECONDS] [--rounds N] [--concurrency 1,4,16,...] [--pools 1,100] [--profile 64]
About 4 minutes with the defaults (Rust only); `--langs all --rounds 1` about 5.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import csv
import dataclasses
import itertools
import json
import os
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from contextlib import nullcontext
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
VENV_PYTHON = ROOT / ".venv" / "bin" / "python"
PYTHON = str(VENV_PYTHON) if VENV_PYTHON.exists() else sys.executable
BUILD_DIR = ROOT / "guests" / "build"
LANGS = ("rust", "go", "assemblyscript", "zig")

KEYS = {"some_key1": b"value-1", "some_key2": b"value-2", "some_key3": b"value-3"}
EXPECTED = b"".join(KEYS.values())

NOFILE = 65536
START_TIMEOUT = 60.0

WRK_LUA = r"""
-- Counts responses that are not a 200 with the expected body; prints one JSON line at the end.
expected = os.getenv("BENCH_EXPECTED")
non200 = 0
wrong = 0
local threads = {}

function setup(thread)
  table.insert(threads, thread)
end

statuses = {}
sample = ""

local function clean(body)
  return (string.gsub(string.sub(body or "", 1, 300), "[%c\\]", " "))
end

function response(status, headers, body)
  if status ~= 200 then
    non200 = non200 + 1
    statuses[status] = (statuses[status] or 0) + 1
    if sample == "" then sample = status .. " " .. clean(body) end
  elseif body ~= expected then
    wrong = wrong + 1
    if sample == "" then sample = "200 " .. clean(body) end
  end
end

function done(summary, latency, requests)
  local n, w, seen, bad = 0, 0, {}, ""
  for _, t in ipairs(threads) do
    n = n + t:get("non200")
    w = w + t:get("wrong")
    for code, count in pairs(t:get("statuses")) do seen[code] = (seen[code] or 0) + count end
    if bad == "" then bad = t:get("sample") end
  end
  local codes = ""
  for code, count in pairs(seen) do codes = codes .. code .. "x" .. count .. " " end
  local e = summary.errors
  io.write(string.format(
    '{"requests": %d, "duration_us": %d, "non200": %d, "wrong_body": %d, ' ..
    '"socket_errors": %d, "timeouts": %d, "p50_us": %d, "p99_us": %d, "max_us": %d, ' ..
    '"statuses": %q, "sample": %q}\n',
    summary.requests, summary.duration, n, w,
    e.connect + e.read + e.write, e.timeout,
    latency:percentile(50), latency:percentile(99), latency.max, codes, bad))
end
"""


# -- the native server -----------------------------------------------------------------------


def native_server(port: int, redis_url: str) -> int:
    """Serve `GET|POST /call/native/main`: three Redis GETs, answered joined. Runs until killed."""
    import asyncio

    from aiohttp import web
    from redis.exceptions import RedisError

    from assemblexd.runtime import Host

    async def serve() -> None:
        # The very client the daemon's `redis` namespace builds (class, pool, timeouts, raw
        # replies), so that the two sides cannot drift apart when one of them changes.
        host = Host(None, None, {"": redis_url}, 1)  # type: ignore[arg-type]
        client = host._redis_client("")

        async def redis3(request: web.Request) -> web.Response:
            await request.read()  # the daemon reads the payload too
            out = b""
            try:
                for key in KEYS:
                    value = await client.execute_command("GET", key)
                    out += value or b""
            except (RedisError, OSError) as exc:
                # As the daemon answers a failed host call: a JSON 500, nothing logged.
                body = {"error": "redis", "message": f"redis: {exc}"}
                return web.json_response(body, status=500)
            return web.Response(body=out, content_type="application/octet-stream")

        async def healthz(request: web.Request) -> web.Response:
            return web.Response(text="ok")

        app = web.Application()
        app.router.add_route("*", "/call/native/main", redis3)
        app.router.add_get("/healthz", healthz)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        # The daemon's listen backlog too (assemblexd/serve.py): 1024 connections arrive at once.
        await web.TCPSite(runner, "127.0.0.1", port, backlog=4096).start()
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()
        await runner.cleanup()
        await host.close()

    asyncio.run(serve())
    return 0


# -- processes -------------------------------------------------------------------------------


def free_port() -> int:
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def raise_nofile() -> None:
    """1024 client connections plus Redis connections need more than the usual 1024 fds."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = NOFILE if hard == resource.RLIM_INFINITY else min(NOFILE, hard)
    if soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))


def http(method: str, url: str, body: bytes | None = None, ctype: str | None = None) -> bytes:
    req = urllib.request.Request(url, data=body, method=method)
    if ctype:
        req.add_header("Content-Type", ctype)
    with urllib.request.urlopen(req, timeout=60) as resp:
        return bytes(resp.read())


@dataclasses.dataclass
class Server:
    """A server subprocess on 127.0.0.1 (stderr to a log file), stopped on exit."""

    label: str
    argv: list[str]
    port: int
    log_path: Path
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        with self.log_path.open("wb") as log:
            self.proc = subprocess.Popen(
                self.argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT
            )
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.label} exited: {self.log_tail()}")
            with contextlib.suppress(OSError):
                if http("GET", f"{self.url}/healthz"):
                    return
            if time.monotonic() > deadline:
                raise RuntimeError(f"{self.label} did not start: {self.log_tail()}")
            time.sleep(0.1)

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()

    def log_tail(self) -> str:
        return self.log_path.read_text(errors="replace")[-3000:]


@contextlib.contextmanager
def running(server: Server) -> Iterator[Server]:
    try:
        server.start()
        yield server
    finally:
        server.stop()


def daemon(work: Path, logs: Path, redis_url: str, pool: int, max_instances: int) -> Server:
    port = free_port()
    data = work / f"daemon-pool{pool}"
    argv = [
        PYTHON, "-m", "assemblexd", "run", "--port", str(port), "--data-dir", str(data),
        "--redis-url", redis_url, "--pool-size", str(pool),
        "--max-instances", str(max_instances), "--no-mdns",
    ]  # fmt: skip
    return Server(f"daemon (pool {pool})", argv, port, logs / f"seed-daemon-pool{pool}.log")


def native(logs: Path, redis_url: str) -> Server:
    port = free_port()
    argv = [PYTHON, str(Path(__file__).resolve()), "--native-server", str(port), redis_url]
    return Server("native server", argv, port, logs / "seed-native.log")


# -- load --------------------------------------------------------------------------------------


@dataclasses.dataclass
class Target:
    label: str
    kind: str  # native | wasm
    lang: str  # "" for native
    pool: int  # 0 for native
    url: str
    pid: int


@dataclasses.dataclass
class Point:
    """One measured wrk run."""

    target: Target
    concurrency: int
    round: int
    cpu_s: float
    """CPU time (user + system, all threads) the server process used during the run."""
    requests: int
    seconds: float
    non200: int
    wrong_body: int
    socket_errors: int
    timeouts: int
    p50_ms: float
    p99_ms: float
    max_ms: float
    statuses: str
    """Counts of the statuses that were not 200, as `<status>x<count> ...`."""
    sample: str
    """The first bad response: status and the start of its body."""

    @property
    def rps(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0

    @property
    def bad(self) -> int:
        return self.non200 + self.wrong_body + self.socket_errors + self.timeouts

    @property
    def cpu_us(self) -> float:
        """Server CPU per request, in µs: what the comparison is about when CPU is short."""
        return self.cpu_s / self.requests * 1e6 if self.requests else 0.0


@dataclasses.dataclass
class Summary:
    """The rounds of one target at one concurrency: medians, and the sum of bad responses."""

    target: Target
    concurrency: int
    rps: float
    ratio: float | None
    """Median over rounds of wasm/native throughput, each native run of the same round."""
    p50_ms: float
    p99_ms: float
    cpu_us: float
    bad: int
    statuses: str


def summarize(points: Sequence[Point]) -> list[Summary]:
    native = {(p.concurrency, p.round): p for p in points if p.target.kind == "native"}
    groups: dict[tuple[int, int], list[Point]] = {}
    for p in points:
        groups.setdefault((id(p.target), p.concurrency), []).append(p)
    out = []
    for runs in groups.values():
        t, c = runs[0].target, runs[0].concurrency
        ratios = [
            p.rps / native[(c, p.round)].rps
            for p in runs
            if (c, p.round) in native and native[(c, p.round)].rps
        ]
        statuses = collections.Counter[str]()
        for p in runs:
            for item in p.statuses.split():
                code, _, n = item.partition("x")
                statuses[code] += int(n or 0)
        out.append(
            Summary(
                target=t,
                concurrency=c,
                rps=statistics.median(p.rps for p in runs),
                ratio=statistics.median(ratios) if ratios and t.kind == "wasm" else None,
                p50_ms=statistics.median(p.p50_ms for p in runs),
                p99_ms=statistics.median(p.p99_ms for p in runs),
                cpu_us=statistics.median(p.cpu_us for p in runs),
                bad=sum(p.bad for p in runs),
                statuses=" ".join(f"{k}x{v}" for k, v in sorted(statuses.items())),
            )
        )
    return out


def ensure_wrk() -> str:
    exe = shutil.which("wrk")
    if exe:
        return exe
    print("bench_seed: installing wrk (apt-get)", file=sys.stderr)
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    sudo = [] if os.geteuid() == 0 else ["sudo"]
    subprocess.run([*sudo, "apt-get", "update", "-qq"], check=True, env=env)
    subprocess.run([*sudo, "apt-get", "install", "-y", "-qq", "wrk"], check=True, env=env)
    exe = shutil.which("wrk")
    if not exe:
        raise SystemExit("bench_seed: wrk is not installed and could not be installed")
    return exe


def run_wrk(wrk: str, lua: Path, target: Target, connections: int, seconds: int) -> dict[str, Any]:
    argv = [
        wrk, "-t1", f"-c{connections}", f"-d{seconds}s", "--timeout", "10s",
        "-s", str(lua), target.url,
    ]  # fmt: skip
    env = {**os.environ, "BENCH_EXPECTED": EXPECTED.decode()}
    out = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=seconds + 60)
    for line in reversed(out.stdout.splitlines()):
        if line.startswith("{"):
            data: dict[str, Any] = json.loads(line)
            return data
    raise RuntimeError(f"wrk gave no result (status {out.returncode}): {out.stdout}{out.stderr}")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (all its threads), from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def wait_idle(pids: Sequence[int], timeout: float = 30.0) -> float:
    """Wait until the servers are idle; returns how long that took.

    When wrk stops it closes its connections, but the requests already in the servers still
    run to the end (aiohttp does not cancel a handler whose client went away): up to 1024 of
    them. Left alone they would take CPU from the next run, the measured one or another
    server's, so every run starts from quiet servers.
    """
    start = time.monotonic()
    window = 0.25
    while time.monotonic() - start < timeout:
        before = sum(cpu_seconds(pid) for pid in pids)
        time.sleep(window)
        if sum(cpu_seconds(pid) for pid in pids) - before <= 0.05 * window:
            break
    return time.monotonic() - start


def measure(wrk: str, lua: Path, target: Target, connections: int, seconds: int, rnd: int) -> Point:
    cpu0 = cpu_seconds(target.pid)
    r = run_wrk(wrk, lua, target, connections, seconds)
    cpu = cpu_seconds(target.pid) - cpu0
    return Point(
        target=target,
        concurrency=connections,
        round=rnd,
        cpu_s=cpu,
        requests=r["requests"],
        seconds=r["duration_us"] / 1e6,
        non200=r["non200"],
        wrong_body=r["wrong_body"],
        socket_errors=r["socket_errors"],
        timeouts=r["timeouts"],
        p50_ms=r["p50_us"] / 1000,
        p99_ms=r["p99_us"] / 1000,
        max_ms=r["max_us"] / 1000,
        statuses=r["statuses"].strip(),
        sample=r["sample"],
    )


# -- profiling ---------------------------------------------------------------------------------


def py_spy() -> str:
    exe = shutil.which("py-spy", path=str(VENV_PYTHON.parent)) or shutil.which("py-spy")
    if exe:
        return exe
    subprocess.run([PYTHON, "-m", "pip", "install", "-q", "py-spy"], check=True)
    exe = shutil.which("py-spy", path=str(VENV_PYTHON.parent))
    if not exe:
        raise SystemExit("bench_seed: py-spy could not be installed")
    return exe


@contextlib.contextmanager
def profiled(pid: int, seconds: float, out: Path) -> Iterator[None]:
    """py-spy record of `pid` for about `seconds`: raw collapsed stacks, per thread.

    `--gil` keeps only samples of the thread holding the GIL: what the process spends its
    Python CPU on. (Without it, threads parked in a C call, such as idle executor threads,
    can be counted as busy, and on a machine this loaded so are runnable threads waiting for
    a core.) Time in wasm or in any C code that releases the GIL is not in this picture.
    """
    argv = [
        py_spy(), "record", "--pid", str(pid), "--duration", str(max(1, round(seconds))),
        "--rate", "250", "--format", "raw", "--threads", "--gil", "--output", str(out),
        "--nonblocking",
    ]  # fmt: skip
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    time.sleep(0.3)  # let it attach before the load starts
    try:
        yield
    finally:
        _, err = proc.communicate(timeout=seconds + 60)
        if proc.returncode != 0:
            print(f"bench_seed: py-spy failed: {err.decode(errors='replace')}", file=sys.stderr)


def summarize_profile(path: Path, top: int = 14) -> str:
    """Self and inclusive time of the busiest frames in a py-spy raw (collapsed) profile."""
    self_t: collections.Counter[str] = collections.Counter()
    incl: collections.Counter[str] = collections.Counter()
    threads: collections.Counter[str] = collections.Counter()
    packages: collections.Counter[str] = collections.Counter()
    total = 0
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        total += n
        frames = stack.split(";")
        if frames[0].startswith("thread ("):  # --threads: "thread (<tid>): <name>" first
            threads[frames.pop(0).partition(": ")[2]] += n
        frames = [_short(f) for f in frames]
        if frames:
            self_t[frames[-1]] += n
            packages[_package(frames[-1])] += n
        for f in set(frames):
            if not f.endswith(_PLUMBING):
                incl[f] += n
    if not total:
        return "  (no samples)"
    per_thread = ", ".join(f"{name} {100 * n / total:.0f}%" for name, n in threads.most_common())
    lines = [f"  {total} samples" + (f" ({per_thread})" if per_thread else "")]
    lines.append(
        "  self time by package: "
        + ", ".join(f"{name} {100 * n / total:.0f}%" for name, n in packages.most_common(8))
    )
    lines.append("  self time:")
    lines += [f"    {100 * n / total:5.1f}%  {f}" for f, n in self_t.most_common(top)]
    lines.append("  inclusive time (without the event loop and entry points):")
    lines += [f"    {100 * n / total:5.1f}%  {f}" for f, n in incl.most_common(top)]
    return "\n".join(lines)


# Frames every sample goes through (the loop, the entry point): left out of inclusive time.
_PLUMBING = (
    "(asyncio/runners.py)",
    "(asyncio/base_events.py)",
    "(asyncio/events.py)",
    "(<frozen runpy>)",
    "(assemblexd/__main__.py)",
    "(assemblexd/commands.py)",
    "(assemblexd/serve.py)",
    "(bench_seed.py)",
    "(threading.py)",
)


def _package(short_frame: str) -> str:
    """`name (redis/asyncio/client.py)` -> `redis`; the standard library's modules by name."""
    file = short_frame.rpartition(" (")[2].rstrip(")")
    top = file.split("/", 1)[0]
    return top.removesuffix(".py") if top else file


def _short(frame: str) -> str:
    # "func (path/to/module.py:123)" -> "func (module.py)": lines apart would split a function.
    name, _, where = frame.partition(" (")
    file = where.rstrip(")").rsplit(":", 1)[0]
    for marker in ("site-packages/", "python3.11/", str(ROOT) + "/"):
        if marker in file:
            file = file.split(marker, 1)[1]
    return f"{name} ({file})"


# -- reporting ---------------------------------------------------------------------------------


def write_csv(points: Sequence[Point], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(
            [
                "target", "kind", "lang", "pool", "concurrency", "round", "requests", "seconds",
                "rps", "server_cpu_us_per_request",
                "p50_ms", "p99_ms", "max_ms", "non200", "wrong_body", "socket_errors", "timeouts",
                "statuses", "first_bad_response",
            ]
        )  # fmt: skip
        for p in points:
            t = p.target
            w.writerow(
                [
                    t.label, t.kind, t.lang, t.pool, p.concurrency, p.round, p.requests,
                    f"{p.seconds:.3f}", f"{p.rps:.1f}", f"{p.cpu_us:.0f}",
                    f"{p.p50_ms:.3f}", f"{p.p99_ms:.3f}",
                    f"{p.max_ms:.3f}", p.non200, p.wrong_body, p.socket_errors, p.timeouts,
                    p.statuses, p.sample,
                ]
            )  # fmt: skip


def read_csv(path: Path) -> tuple[list[Point], list[Target]]:
    """The runs of an earlier `write_csv`, for `--replot`."""
    points: list[Point] = []
    targets: dict[str, Target] = {}
    with path.open(newline="") as f:
        for row in csv.DictReader(f):
            label = row["target"]
            if label not in targets:
                targets[label] = Target(label, row["kind"], row["lang"], int(row["pool"]), "", 0)
            requests = int(row["requests"])
            points.append(
                Point(
                    target=targets[label],
                    concurrency=int(row["concurrency"]),
                    round=int(row["round"]),
                    cpu_s=float(row["server_cpu_us_per_request"]) * requests / 1e6,
                    requests=requests,
                    seconds=float(row["seconds"]),
                    non200=int(row["non200"]),
                    wrong_body=int(row["wrong_body"]),
                    socket_errors=int(row["socket_errors"]),
                    timeouts=int(row["timeouts"]),
                    p50_ms=float(row["p50_ms"]),
                    p99_ms=float(row["p99_ms"]),
                    max_ms=float(row["max_ms"]),
                    statuses=row["statuses"],
                    sample=row["first_bad_response"],
                )
            )
    return points, list(targets.values())


def table(sums: Sequence[Summary], targets: Sequence[Target], conc: Sequence[int]) -> str:
    by = {(id(x.target), x.concurrency): x for x in sums}
    lines = [
        f"{'target':<30}{'conc':>6}{'req/s':>9}{'x native':>9}{'p50 ms':>9}{'p99 ms':>9}"
        f"{'CPU us/req':>11}{'not 200':>9}"
    ]
    for c in conc:
        for t in targets:
            x = by.get((id(t), c))
            if x is None:
                continue
            ratio = f"{x.ratio:.2f}" if x.ratio is not None else ""
            lines.append(
                f"{t.label:<30}{c:>6}{x.rps:>9.0f}{ratio:>9}{x.p50_ms:>9.2f}{x.p99_ms:>9.2f}"
                f"{x.cpu_us:>11.0f}{x.bad:>9}" + (f"  ({x.statuses})" if x.statuses else "")
            )
        lines.append("")
    return "\n".join(lines).rstrip()


def verdict(sums: Sequence[Summary], langs: Sequence[str], pool: int) -> list[str]:
    """One line per language: the goal (>= 0.8 x native from concurrency 16, all 200) met?"""
    native_bad = sum(x.bad for x in sums if x.target.kind == "native")
    lines = []
    for lang in langs:
        mine = [x for x in sums if x.target.lang == lang and x.target.pool == pool]
        if not mine:
            continue
        ratios = {x.concurrency: x.ratio for x in mine if x.concurrency >= 16 and x.ratio}
        worst = min(ratios.items(), key=lambda kv: kv[1]) if ratios else None
        bad = sum(x.bad for x in mine)
        ok = worst is not None and worst[1] >= 0.8 and bad == 0 and native_bad == 0
        lines.append(
            f"{lang} (pool {pool}): goal {'MET' if ok else 'MISSED'}: lowest wasm/native "
            "throughput from c=16: "
            + (f"{worst[1]:.2f} at c={worst[0]}" if worst else "n/a")
            + f"; responses not 200 with the expected body: wasm {bad}, native {native_bad}"
        )
    return lines


def plot(sums: Sequence[Summary], targets: Sequence[Target], path: Path, title: str) -> None:
    try:
        import matplotlib
    except ImportError:
        print("bench_seed: installing matplotlib into the venv", file=sys.stderr)
        subprocess.run([PYTHON, "-m", "pip", "install", "-q", "matplotlib"], check=True)
        import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    colors = {"native": "black", "rust": "#d6452b", "go": "#00a7d0", "assemblyscript": "#6e4fc4",
              "zig": "#e8a33d"}  # fmt: skip
    fig, (ax_rps, ax_p99, ax_cpu) = plt.subplots(1, 3, figsize=(16, 4.8))
    ringed = False
    for t in targets:
        mine = sorted((x for x in sums if x.target is t), key=lambda x: x.concurrency)
        if not mine:
            continue
        xs = [x.concurrency for x in mine]
        style = {
            "color": colors[t.lang or "native"],
            "linestyle": "-" if t.kind == "native" or t.pool >= 100 else "--",
            "marker": "o" if t.kind == "native" else ("s" if t.pool >= 100 else "^"),
            "linewidth": 2.2 if t.kind == "native" or t.lang == "rust" else 1.3,
            "markersize": 5,
            "label": t.label,
        }
        ax_rps.plot(xs, [x.rps for x in mine], **style)
        ax_p99.plot(xs, [max(x.p99_ms, 1e-3) for x in mine], **style)
        ax_cpu.plot(xs, [max(x.cpu_us, 1.0) for x in mine], **style)
        bad = [x for x in mine if x.bad]
        if bad:
            ring = {
                "s": 110,
                "facecolors": "none",
                "edgecolors": "red",
                "linewidths": 1.2,
                "zorder": 5,
                "label": None if ringed else "not every response a 200",
            }
            ax_rps.scatter([x.concurrency for x in bad], [x.rps for x in bad], **ring)
            ax_p99.scatter([x.concurrency for x in bad], [x.p99_ms for x in bad], **ring)
            ax_cpu.scatter([x.concurrency for x in bad], [x.cpu_us for x in bad], **ring)
            ringed = True
    conc = sorted({x.concurrency for x in sums})
    for ax, ylabel in (
        (ax_rps, "throughput (requests/s)"),
        (ax_p99, "p99 latency (ms)"),
        (ax_cpu, "server CPU per request (µs)"),
    ):
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xticks(conc, [str(c) for c in conc])
        ax.yaxis.set_major_locator(matplotlib.ticker.LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
        ax.yaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:g}"))
        ax.yaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        ax.set_xlabel("concurrent connections")
        ax.set_ylabel(ylabel)
        ax.grid(True, which="both", alpha=0.3)
    ax_rps.legend(fontsize=8)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


# -- main ----------------------------------------------------------------------------------------


def ints(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x.strip()]


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--langs", default="rust", help="comma-separated guest languages, or 'all' (default: rust)"
    )
    p.add_argument("--concurrency", type=ints, default=[1, 4, 16, 64, 256, 1024])
    p.add_argument("--pools", type=ints, default=[1, 100], help="daemon --pool-size values")
    p.add_argument("-d", "--duration", type=int, default=3, help="seconds per run (wrk: whole)")
    p.add_argument("--warmup", type=int, default=1, help="seconds before each run; 0 for none")
    p.add_argument(
        "--rounds",
        type=int,
        default=3,
        help="runs of every target per concurrency, interleaved; medians are reported",
    )
    p.add_argument("--max-instances", type=int, default=4096)
    p.add_argument("--csv", type=Path, default=ROOT / "bench-results" / "seed.csv")
    p.add_argument("--png", type=Path, default=ROOT / "docs" / "img" / "bench_seed.png")
    p.add_argument("--no-plot", action="store_true")
    p.add_argument(
        "--profile",
        type=int,
        metavar="N",
        help="py-spy the native server and the pool-100 daemon at concurrency N",
    )
    p.add_argument(
        "--replot",
        action="store_true",
        help="measure nothing: table, verdict and plot from the CSV of an earlier run",
    )
    p.add_argument(
        "--native-server", nargs=2, metavar=("PORT", "REDIS_URL"), help=argparse.SUPPRESS
    )
    args = p.parse_args(argv)
    args.langs = list(LANGS) if args.langs == "all" else [x for x in args.langs.split(",") if x]
    unknown = set(args.langs) - set(LANGS)
    if unknown:
        p.error(f"unknown languages: {', '.join(sorted(unknown))} (known: {', '.join(LANGS)})")
    return args


def ensure_guests(langs: Sequence[str]) -> dict[str, bytes]:
    missing = [lang for lang in langs if not (BUILD_DIR / f"{lang}-redis3.wasm").exists()]
    if missing:
        print(f"bench_seed: building {', '.join(missing)} (scripts/build-guests)", file=sys.stderr)
        subprocess.run([str(ROOT / "scripts" / "build-guests"), *missing], check=True)
    return {lang: (BUILD_DIR / f"{lang}-redis3.wasm").read_bytes() for lang in langs}


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.native_server:
        return native_server(int(args.native_server[0]), args.native_server[1])
    if args.replot:
        report(args, *read_csv(args.csv))
        return 0

    sys.path.insert(0, str(ROOT / "tests"))
    import redis
    from helpers import run_redis_server

    raise_nofile()
    wrk = ensure_wrk()
    modules = ensure_guests(args.langs)
    started = time.monotonic()
    load = os.getloadavg()[0]
    print(
        f"bench_seed: {os.cpu_count()} cores, load average {load:.2f} at start; "
        f"{args.duration:g} s per point after {args.warmup:g} s of warm-up",
        file=sys.stderr,
    )

    points: list[Point] = []
    profiles: list[tuple[str, Path]] = []
    with contextlib.ExitStack() as stack:
        work = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-seed-")))
        redis_url = stack.enter_context(run_redis_server(work / "redis"))
        client = redis.Redis.from_url(redis_url)
        client.mset(KEYS)
        client.close()
        lua = work / "seed.lua"
        lua.write_text(WRK_LUA)

        logs = args.csv.parent  # the servers' logs stay next to the CSV
        logs.mkdir(parents=True, exist_ok=True)
        servers = [native(logs, redis_url)]
        servers += [daemon(work, logs, redis_url, pool, args.max_instances) for pool in args.pools]
        for s in servers:
            stack.enter_context(running(s))
        assert servers[0].proc is not None
        targets = [
            Target("native (aiohttp)", "native", "", 0, f"{servers[0].url}/call/native/main",
                   servers[0].proc.pid)
        ]  # fmt: skip
        for pool, d in zip(args.pools, servers[1:], strict=True):
            assert d.proc is not None
            for lang, wasm in modules.items():
                name = f"{lang}-redis3"
                http("POST", f"{d.url}/deploy?name={name}", wasm, "application/wasm")
                targets.append(
                    Target(f"wasm {lang} pool {pool}", "wasm", lang, pool,
                           f"{d.url}/call/{name}/main", d.proc.pid)
                )  # fmt: skip
        for t in targets:
            answer = http("GET", t.url)
            if answer != EXPECTED:
                raise SystemExit(f"bench_seed: {t.label} answered {answer!r}, not {EXPECTED!r}")

        # Rounds interleave the targets, so a slow spell of a shared machine hits them alike.
        pids = sorted({t.pid for t in targets})
        for c, rnd, t in itertools.product(args.concurrency, range(args.rounds), targets):
            wait_idle(pids)
            if args.warmup > 0:  # also fills the pools and the Redis connection pools
                run_wrk(wrk, lua, t, c, args.warmup)
                wait_idle(pids)
            profile = None
            if args.profile == c and rnd == 0 and (t.kind == "native" or t.pool == max(args.pools)):
                slug = "-".join("".join(ch if ch.isalnum() else " " for ch in t.label).split())
                profile = args.csv.parent / f"seed-profile-{slug}-c{c}.txt"
                profiles.append((t.label, profile))
            with profiled(t.pid, args.duration, profile) if profile else nullcontext():
                p = measure(wrk, lua, t, c, args.duration, rnd)
            points.append(p)
            print(
                f"  {t.label:<30} c={c:<5} #{rnd} {p.rps:6.0f} req/s  "
                f"CPU {p.cpu_us:5.0f} us/req  p50 {p.p50_ms:7.2f} ms  "
                f"p99 {p.p99_ms:7.2f} ms  non-200 {p.non200} wrong body {p.wrong_body} "
                f"socket errors {p.socket_errors} timeouts {p.timeouts}"
                + (f"\n      statuses {p.statuses}; first: {p.sample}" if p.sample else ""),
                file=sys.stderr,
                flush=True,
            )

    write_csv(points, args.csv)
    report(args, points, targets)
    for label, path in profiles:
        print(f"\nprofile of {label} at c={args.profile} ({path}):")
        print(summarize_profile(path))
    print(
        f"csv: {args.csv}; took {time.monotonic() - started:.0f} s; "
        f"load average {load:.2f} at start, {os.getloadavg()[0]:.2f} at the end"
    )
    return 0


def report(args: argparse.Namespace, points: Sequence[Point], targets: Sequence[Target]) -> None:
    """Table, verdict and (unless --no-plot) the plot."""
    sums = summarize(points)
    conc = sorted({p.concurrency for p in points})
    rounds = max(p.round for p in points) + 1 if points else 0
    langs = [lang for lang in LANGS if any(t.lang == lang for t in targets)]
    pools = [t.pool for t in targets if t.kind == "wasm"]
    print(table(sums, targets, conc))
    print()
    for line in verdict(sums, langs, max(pools, default=0)):
        print(line)
    if not args.no_plot:
        seconds = statistics.median(p.seconds for p in points) if points else 0
        title = (
            "redis3: three Redis GETs per request, wasm guest in assemblexd vs native aiohttp "
            f"({os.cpu_count()} cores; wrk; median of {rounds} runs of {seconds:.0f} s)"
        )
        plot(sums, targets, args.png, title)
        print(f"\nplot: {args.png}")


if __name__ == "__main__":
    sys.exit(main())
