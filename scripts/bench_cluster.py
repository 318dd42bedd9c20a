#!/usr/bin/env python3
"""The cluster: deploy propagation, hot reload under load, simulated propagation.

1. Propagation. Starts N daemons (default 8) as subprocesses on 127.0.0.1, each with
   `--no-mdns`, the first alone and the others `--join`ing it, and waits until every node's
   /status lists all N members. Deploys a first version of the app `bench` (not counted), then
   D (default 20) distinct modules, each on a node chosen at random (seeded). Each module is
   a tiny waPC guest that answers every call with a token naming its deploy (a data segment),
   so a node serves the new version exactly when `GET /call/bench/main` answers the new token.
   For each deploy, one poller per node starts that call every `--poll-ms` (default 10 ms;
   at once when an answer took longer) from just before `POST /deploy` is sent until its
   node answers the new token; the figure is the time from sending the deploy until the last
   node answers it, bounded by `--deadline`. Reported: p50 and max over the deploys (goal:
   p50 < 300 ms, max < 1 s); beside it the time the deploy request took, the first other
   node, the same span read from the daemons' own log lines (origin's "deployed", each
   node's "running": no polling in it), and when the deploying node's /status first showed
   every node on the new version (the member records that view is drawn from).
2. Hot reload under load. On the same cluster, one wrk per node (`wrk -t1 -cC`, GET
   /call/bench/main, `--timeout 10s`; Debian `wrk`, installed with apt-get when missing) runs
   while R (default 10) redeploys are made on random nodes, each waited for as above (its
   propagation under load is reported too), `--reload-gap` seconds apart; wrk is stopped with
   SIGINT (it then prints its totals) a second after the last one. Reported per node and in
   all: requests, non-2xx (must be 0) and socket errors.
3. Simulated propagation. For each of `--sim-nodes` (default 1,000 and 10,000), in a
   subprocess bounded by `--sim-timeout`: the membership simulator (`membership._sim`, the
   real HyParView + Plumtree cores on a simulated network, active view 5, passive 30) builds
   the overlay (joins over 10 cycles, then `--sim-cycles` stabilisation cycles); its active
   views become the peers of N real `crdt.AntiEntropy` cores over in-memory `crdt.Replica`s
   (no log). Messages go through `crdt.encode_message` / `decode_message` and take the
   simulator's link latency (5-45 ms one way, fixed per link). After 3 simulated seconds of
   idle rounds, one node (seeded) writes an app record and bumps its counter, as a deploy
   does; the run ends when every replica holds the counter. Two modes, each from the same
   overlay: the daemon's `SyncConfig()` (eager push to the active view, forwarded by every
   node that learnt something, rounds every 1 s +-20 %, fan-out 1), and rounds alone
   (`push=False`: what repairs a lost push). Reported: simulated time, rounds (1 round = 1 s),
   hops, messages and bytes. Deterministic for a seed.

Every process this script starts is stopped on exit (try/finally; also on SIGTERM; daemons
get SIGTERM from the kernel if this script is killed outright).

Run: .venv/bin/python scripts/bench_cluster.py [-n NODES] [-d DEPLOYS] [-r RELOADS]
         [--sim-nodes N ...] [--skip-cluster | --skip-sim]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import heapq
import json
import os
import random
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_http import (
    PYTHON,
    ROOT,
    _preexec,
    ensure_wrk,
    exit_on_sigterm,
    free_port,
    raise_nofile,
    stop_process,
    wait_healthy,
)

sys.path.insert(0, str(ROOT))

APP = "bench"
GOAL_P50 = 0.300
GOAL_MAX = 1.0

# -- the guest ------------------------------------------------------------------------------------


def guest(token: str) -> bytes:
    """A waPC guest that answers every operation with `token` (a data segment), so each token
    makes a distinct module whose answers say which deploy a node runs."""
    import wasmtime

    if not token.isascii() or '"' in token or "\\" in token:
        raise ValueError(f"token must be plain ASCII without quotes: {token!r}")
    wat = f"""(module
  (import "wapc" "__guest_response" (func $response (param i32 i32)))
  (memory (export "memory") 1)
  (data (i32.const 0) "{token}")
  (func (export "__guest_call") (param $op_len i32) (param $msg_len i32) (result i32)
    (call $response (i32.const 0) (i32.const {len(token)}))
    (i32.const 1)))"""
    return bytes(wasmtime.wat2wasm(wat))


# -- the cluster ----------------------------------------------------------------------------------


@dataclass
class Proc:
    name: str
    url: str
    proc: subprocess.Popen[bytes]
    log: Path

    def tail(self, n: int = 2000) -> str:
        return self.log.read_text(errors="replace")[-n:] if self.log.exists() else ""


@contextlib.contextmanager
def cluster(n: int, tmp: Path, startup_timeout: float = 60.0) -> Iterator[list[Proc]]:
    """N daemons: n0 alone, then n1..n{N-1} started at once, each `--join`ing n0."""
    procs: list[Proc] = []

    def start(i: int, join: str | None) -> Proc:
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        log = tmp / f"n{i}.log"
        cmd = [PYTHON, "-m", "assemblexd", "run", "--port", str(port), "--name", f"n{i}"]
        cmd += ["--data-dir", str(tmp / f"n{i}"), "--no-mdns"]
        if join:
            cmd += ["--join", join]
        with log.open("wb") as f:
            proc = subprocess.Popen(
                cmd,
                cwd=ROOT,
                stdin=subprocess.DEVNULL,
                stdout=f,
                stderr=subprocess.STDOUT,
                preexec_fn=_preexec,
            )
        p = Proc(f"n{i}", url, proc, log)
        procs.append(p)
        return p

    try:
        first = start(0, None)
        wait_healthy(first.url + "/healthz", first.proc, startup_timeout, first.log)
        for i in range(1, n):
            start(i, first.url)
        for p in procs[1:]:
            wait_healthy(p.url + "/healthz", p.proc, startup_timeout, p.log)
        yield procs
    finally:
        for p in procs:  # SIGTERM to all first, then wait for each
            if p.proc.poll() is None:
                p.proc.send_signal(signal.SIGTERM)
        for p in procs:
            stop_process(p.proc)


async def get_json(session: Any, url: str) -> Any:
    async with session.get(url) as resp:
        return await resp.json(content_type=None)


async def wait_mesh(session: Any, procs: list[Proc], limit: float) -> float:
    """Wait until every node's /status lists every node and has a neighbour; seconds taken."""
    started = time.monotonic()
    names = {p.name for p in procs}
    while True:
        ok = True
        for p in procs:
            if p.proc.poll() is not None:
                raise RuntimeError(f"{p.name} exited ({p.proc.returncode}):\n{p.tail()}")
            try:
                st = await get_json(session, p.url + "/status")
            except Exception:
                ok = False
                break
            if {m["name"] for m in st["members"]} != names or not st["active"]:
                ok = False
                break
        if ok:
            return time.monotonic() - started
        if time.monotonic() - started > limit:
            raise RuntimeError(f"the {len(procs)} nodes did not all see each other in {limit} s")
        await asyncio.sleep(0.2)


@dataclass
class Propagation:
    node: str
    """Where the deploy was sent."""
    deploy: float
    """Seconds until the deploy request answered."""
    nodes: dict[str, float | None]
    """Seconds from sending the deploy until each node answered the new token (None: never)."""
    status: float | None
    """Seconds until the deploying node's /status showed every node on the new version."""
    version: int
    """The version the deploy made."""
    polls: int
    bad: int
    """Poll answers neither 200 with the old token nor 200 with the new one."""
    elapsed: float

    @property
    def all(self) -> float | None:
        times = list(self.nodes.values())
        return None if any(t is None for t in times) else max(t for t in times if t is not None)

    def first_other(self) -> float | None:
        times = [t for n, t in self.nodes.items() if n != self.node and t is not None]
        return min(times) if times else None


async def propagate(
    session: Any,
    procs: list[Proc],
    target: Proc,
    wasm: bytes,
    token: str,
    poll: float,
    deadline: float,
    watch_status: bool = True,
) -> Propagation:
    """Deploy `wasm` on `target`; time until every node answers `token`."""
    import aiohttp

    expected = token.encode()
    seen: dict[str, float | None] = {p.name: None for p in procs}
    counts = {"polls": 0, "bad": 0}
    status_at: list[float] = []
    version: list[int] = []
    t0 = time.perf_counter()
    stop_at = t0 + deadline

    async def poller(p: Proc) -> None:
        url = f"{p.url}/call/{APP}/main"
        next_at = time.perf_counter()
        while time.perf_counter() < stop_at:
            next_at += poll  # a poll starts every `poll` seconds, or at once if one ran late
            try:
                async with session.get(url) as resp:
                    body = await resp.read()
                    now = time.perf_counter()
                    counts["polls"] += 1
                    if resp.status == 200 and body == expected:
                        seen[p.name] = now - t0
                        return
                    if resp.status != 200:
                        counts["bad"] += 1
            except (TimeoutError, aiohttp.ClientError):
                counts["bad"] += 1
            await asyncio.sleep(max(0.0, next_at - time.perf_counter()))

    async def status_watch() -> None:
        names = {p.name for p in procs}
        while time.perf_counter() < stop_at:
            if version:
                try:
                    st = await get_json(session, target.url + "/status")
                    now = time.perf_counter()
                    for app in st["apps"]:
                        if app["name"] == APP:
                            versions = app.get("versions", {})
                            if set(versions) >= names and all(
                                versions[n] == version[0] for n in names
                            ):
                                status_at.append(now - t0)
                                return
                except (TimeoutError, aiohttp.ClientError, ValueError, KeyError):
                    pass
            await asyncio.sleep(poll)

    pollers = [asyncio.create_task(poller(p)) for p in procs]
    watcher = asyncio.create_task(status_watch()) if watch_status else None
    form = aiohttp.FormData()
    form.add_field("name", APP)
    form.add_field("wasm", wasm, filename=f"{APP}.wasm", content_type="application/wasm")
    async with session.post(target.url + "/deploy", data=form) as resp:
        text = await resp.text()
        if resp.status != 201:
            raise RuntimeError(f"deploy on {target.name}: HTTP {resp.status}: {text}")
        version.append(int(json.loads(text)["version"]))
    deployed = time.perf_counter() - t0
    await asyncio.gather(*pollers)
    if watcher is not None:
        await watcher
    return Propagation(
        target.name,
        deployed,
        seen,
        status_at[0] if status_at else None,
        version[0],
        counts["polls"],
        counts["bad"],
        time.perf_counter() - t0,
    )


LOG_LINE = re.compile(
    r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d+)Z INFO assemblexd\.node: "
    rf"(deployed|running) {APP} v(\d+) "
)


def log_times(procs: list[Proc]) -> dict[int, dict[str, Any]]:
    """From the daemons' logs: per version, when its origin logged "deployed" (after the
    install, just before the answer) and when each other node logged "running" it."""
    import datetime

    out: dict[int, dict[str, Any]] = {}
    for p in procs:
        for line in p.tail(50_000_000).splitlines():
            m = LOG_LINE.match(line)
            if not m:
                continue
            t = datetime.datetime.fromisoformat(m.group(1)).timestamp()
            entry = out.setdefault(int(m.group(3)), {"deployed": None, "running": {}})
            if m.group(2) == "deployed":
                entry["deployed"] = t
            else:
                entry["running"].setdefault(p.name, t)
    return out


def server_side(
    runs: list[Propagation], times: dict[int, dict[str, Any]], n: int
) -> list[tuple[float, float] | None]:
    """Per run: (first other node, last node) running, in seconds after the origin's
    "deployed" log line; None when a node's line is missing."""
    out: list[tuple[float, float] | None] = []
    for r in runs:
        e = times.get(r.version)
        if not e or e["deployed"] is None or len(e["running"]) < n - 1:
            out.append(None)
            continue
        # The origin logs "running" too (its supervisor wakes on its own deploy): skip it.
        ts = [t - e["deployed"] for node, t in e["running"].items() if node != r.node]
        if len(ts) < n - 1:
            out.append(None)
            continue
        out.append((min(ts), max(ts)))
    return out


# -- wrk ------------------------------------------------------------------------------------------


def parse_wrk(text: str) -> dict[str, float]:
    total = re.search(r"(\d+) requests in", text)
    non2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", text)
    sock = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text)
    rps = re.search(r"Requests/sec:\s+([\d.]+)", text)
    if not total:
        raise RuntimeError(f"no request count in wrk's output:\n{text}")
    return {
        "requests": float(total.group(1)),
        "non2xx": float(non2xx.group(1)) if non2xx else 0.0,
        "sockerr": float(sum(int(g) for g in sock.groups())) if sock else 0.0,
        "rps": float(rps.group(1)) if rps else 0.0,
    }


@contextlib.contextmanager
def wrk_all(exe: str, urls: list[str], connections: int, limit: float) -> Iterator[list[Any]]:
    """One `wrk -t1 -cC -d<limit>` per URL; on exit each gets SIGINT (wrk then prints its
    totals). Yields a list that holds each one's parsed totals after the block."""
    procs: list[subprocess.Popen[str]] = []
    results: list[Any] = []
    try:
        for url in urls:
            cmd = [exe, "-t1", f"-c{connections}", f"-d{limit:.0f}s", "--timeout", "10s", url]
            procs.append(
                subprocess.Popen(
                    cmd,
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.STDOUT,
                    text=True,
                    preexec_fn=_preexec,
                )
            )
        yield results
    finally:
        for p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGINT)
        for p in procs:
            try:
                out, _ = p.communicate(timeout=15)
            except subprocess.TimeoutExpired:
                p.kill()
                out, _ = p.communicate()
            try:
                results.append(parse_wrk(out))
            except RuntimeError as exc:
                results.append({"error": str(exc)})


# -- the cluster benchmark ------------------------------------------------------------------------


def pct(values: list[float], q: float) -> float:
    """The q-quantile (0..1) by nearest rank on the sorted values."""
    s = sorted(values)
    return s[min(len(s) - 1, max(0, round(q * (len(s) - 1))))]


def ms(t: float | None) -> str:
    return "never" if t is None else f"{t * 1000:.0f}"


async def cluster_bench(args: argparse.Namespace) -> dict[str, Any]:
    import aiohttp

    rng = random.Random(args.seed)
    nonce = f"{args.seed:x}{os.getpid():x}"
    out: dict[str, Any] = {}
    wrk_exe = ensure_wrk() if args.reloads else None
    with tempfile.TemporaryDirectory(prefix="bench-cluster-") as tmpdir:
        tmp = Path(tmpdir)
        started = time.monotonic()
        with cluster(args.nodes, tmp) as procs:
            conn = aiohttp.TCPConnector(limit=0, limit_per_host=0)
            timeout = aiohttp.ClientTimeout(total=30)
            async with aiohttp.ClientSession(connector=conn, timeout=timeout) as session:
                mesh = await wait_mesh(session, procs, args.mesh_timeout)
                print(
                    f"{args.nodes} daemons up and meshed in {time.monotonic() - started:.1f} s "
                    f"(mesh {mesh:.1f} s after the last answered /healthz)",
                    flush=True,
                )
                poll = args.poll_ms / 1000
                # Version 1 creates the app (and its supervisors); not counted.
                warm = await propagate(
                    session,
                    procs,
                    procs[0],
                    guest(f"{nonce}-warm"),
                    f"{nonce}-warm",
                    poll,
                    args.deadline,
                )
                if warm.all is None:
                    raise RuntimeError(f"the first deploy never reached every node: {warm.nodes}")
                print(f"first deploy (not counted): every node in {ms(warm.all)} ms", flush=True)
                await asyncio.sleep(args.gap)

                runs: list[Propagation] = []
                for k in range(args.deploys):
                    target = rng.choice(procs)
                    token = f"{nonce}-d{k}"
                    r = await propagate(
                        session, procs, target, guest(token), token, poll, args.deadline
                    )
                    runs.append(r)
                    slowest = max(r.nodes, key=lambda n: r.nodes[n] or float("inf"))
                    print(
                        f"deploy {k + 1:2d} on {r.node}: answered {ms(r.deploy)} ms, "
                        f"first other node {ms(r.first_other())} ms, "
                        f"all {len(procs)} nodes {ms(r.all)} ms (last {slowest}), "
                        f"/status {ms(r.status)} ms; {r.polls} polls, {r.bad} bad",
                        flush=True,
                    )
                    await asyncio.sleep(args.gap)
                out["propagation"] = runs

                if args.reloads:
                    assert wrk_exe is not None
                    out["reload"] = await reload_bench(
                        args, session, procs, rng, nonce, wrk_exe, poll
                    )

                final = []
                for p in procs:
                    st = await get_json(session, p.url + "/status")
                    app = next(a for a in st["apps"] if a["name"] == APP)
                    final.append((p.name, app["running"], app["versions"]))
                out["final"] = final
            dead = [p.name for p in procs if p.proc.poll() is not None]
            out["dead"] = dead
            warnings = []
            for p in procs:
                for line in p.tail(1_000_000).splitlines():
                    if " ERROR " in line or " WARNING " in line or "Traceback" in line:
                        warnings.append(f"{p.name}: {line[:300]}")
            out["log_warnings"] = warnings
            out["log_times"] = log_times(procs)
    return out


async def reload_bench(
    args: argparse.Namespace,
    session: Any,
    procs: list[Proc],
    rng: random.Random,
    nonce: str,
    wrk_exe: str,
    poll: float,
) -> dict[str, Any]:
    urls = [f"{p.url}/call/{APP}/main" for p in procs]
    limit = args.lead + args.reloads * (args.deadline + args.reload_gap) + 30
    print(
        f"\nwrk -t1 -c{args.connections} against each of the {len(procs)} nodes "
        f"(GET /call/{APP}/main); {args.reloads} redeploys, {args.reload_gap:g} s apart",
        flush=True,
    )
    runs: list[Propagation] = []
    started = time.monotonic()
    with wrk_all(wrk_exe, urls, args.connections, limit) as results:
        await asyncio.sleep(args.lead)
        for k in range(args.reloads):
            target = rng.choice(procs)
            token = f"{nonce}-r{k}"
            r = await propagate(
                session,
                procs,
                target,
                guest(token),
                token,
                poll,
                args.deadline,
                watch_status=False,
            )
            runs.append(r)
            print(
                f"redeploy {k + 1:2d} on {r.node}: all {len(procs)} nodes {ms(r.all)} ms",
                flush=True,
            )
            await asyncio.sleep(args.reload_gap)
        await asyncio.sleep(1.0)
    seconds = time.monotonic() - started
    return {"runs": runs, "wrk": results, "seconds": seconds}


# -- the simulation -------------------------------------------------------------------------------


@dataclass
class SimResult:
    mode: str
    reached: int
    time: float | None
    """Simulated seconds from the write until every replica had it (None: not in time)."""
    t50: float | None
    t99: float | None
    hops: int
    """Most hops on the path by which a node first heard of the write."""
    eccentricity: int
    """Most hops from the writer to any node on the overlay (BFS): the least possible."""
    messages: int
    bytes: int
    by_type: dict[str, int] = field(default_factory=dict)


def simulate(
    adjacency: list[list[int]],
    latency: Any,
    seed: int,
    config: Any,
    mode: str,
    warmup: float = 3.0,
    horizon: float = 120.0,
    wall_limit: float = 600.0,
) -> SimResult:
    """Real `crdt.AntiEntropy` cores over in-memory replicas on a fixed overlay."""
    import crdt

    n = len(adjacency)
    rng = random.Random(seed)
    ids = [f"n{i}" for i in range(n)]
    index = {s: i for i, s in enumerate(ids)}
    now_box = [0.0]
    # Deterministic hybrid clocks: wall time is the simulated time.
    replicas = [crdt.Replica(ids[i], clock=lambda: 1.8e9 + now_box[0]) for i in range(n)]
    cores = [crdt.AntiEntropy(r, random.Random(rng.getrandbits(64)), config) for r in replicas]
    limits = replicas[0].limits
    key = f"apps/{APP}/version"
    reached: list[float | None] = [None] * n
    hops = [0] * n
    count = [0]
    current_src = [-1]

    def watcher(i: int) -> Any:
        def on_change(changed: str) -> None:
            if changed == key and reached[i] is None:
                reached[i] = now_box[0]
                src = current_src[0]
                hops[i] = hops[src] + 1 if src >= 0 else 0
                count[0] += 1

        return on_change

    for i, r in enumerate(replicas):
        r.subscribe(watcher(i))

    heap: list[tuple[float, int, int, int, bytes | None]] = []
    seq = [0]
    timer_at = [float("inf")] * n
    stats = {"messages": 0, "bytes": 0}
    by_type: dict[str, int] = {}

    def flush(i: int) -> None:
        now = now_box[0]
        for peer, msg in cores[i].take_outbox():
            j = index[peer]
            data = crdt.encode_message(msg)
            stats["messages"] += 1
            stats["bytes"] += len(data)
            name = type(msg).__name__
            by_type[name] = by_type.get(name, 0) + 1
            seq[0] += 1
            heapq.heappush(heap, (now + latency(i, j), seq[0], j, i, data))
        deadline = cores[i].next_deadline()
        if deadline is not None:
            deadline = max(deadline, now)
            if deadline < timer_at[i]:
                timer_at[i] = deadline
                seq[0] += 1
                heapq.heappush(heap, (deadline, seq[0], i, -1, None))

    def run(until: float, stop_when_all: bool) -> None:
        wall_end = time.monotonic() + wall_limit
        steps = 0
        while heap and heap[0][0] <= until:
            at, _, dst, src, data = heapq.heappop(heap)
            now_box[0] = max(now_box[0], at)
            if data is None:  # a timer
                if at != timer_at[dst]:
                    continue
                timer_at[dst] = float("inf")
                cores[dst].tick(now_box[0])
            else:
                current_src[0] = src
                cores[dst].on_message(ids[src], crdt.decode_message(data, limits), now_box[0])
                current_src[0] = -1
            flush(dst)
            if stop_when_all and count[0] == n:
                return
            steps += 1
            if steps % 4096 == 0 and time.monotonic() > wall_end:
                raise TimeoutError(f"simulation over its {wall_limit:.0f} s wall limit")
        now_box[0] = max(now_box[0], until)

    for i in range(n):
        for j in adjacency[i]:
            cores[i].add_peer(ids[j], 0.0)
        cores[i].tick(0.0)
        flush(i)
    run(warmup, False)
    stats["messages"] = stats["bytes"] = 0
    by_type.clear()

    writer = rng.randrange(n)
    distance = {writer: 0}  # BFS: the fewest hops from the writer to each node
    frontier = [writer]
    while frontier:
        nxt = []
        for i in frontier:
            for j in adjacency[i]:
                if j not in distance:
                    distance[j] = distance[i] + 1
                    nxt.append(j)
        frontier = nxt
    t_write = now_box[0]
    record = json.dumps({"name": APP, "version": 1, "sha256": "0" * 64, "origin": ids[writer]})
    replicas[writer].set(f"apps/{APP}", record.encode())
    replicas[writer].incr(key)  # the subscriber marks the writer reached
    cores[writer].tick(now_box[0])  # the daemon ticks at once after a local write
    flush(writer)
    run(t_write + horizon, True)

    times = sorted(t - t_write for t in reached if t is not None)

    def at_fraction(q: float) -> float | None:
        k = max(1, -(-int(q * n * 1000) // 1000))  # ceil(q * n)
        return times[k - 1] if len(times) >= k else None

    return SimResult(
        mode=mode,
        reached=len(times),
        time=times[-1] if len(times) == n else None,
        t50=at_fraction(0.5),
        t99=at_fraction(0.99),
        hops=max(h for h, t in zip(hops, reached, strict=True) if t is not None),
        eccentricity=max(distance.values()),
        messages=stats["messages"],
        bytes=stats["bytes"],
        by_type=dict(sorted(by_type.items())),
    )


def sim_one(nodes: int, seed: int, cycles: int, wall_limit: float) -> dict[str, Any]:
    """Build a HyParView overlay with the membership simulator, then run the sync core on it."""
    import crdt
    from membership._sim import SimConfig, Simulation

    t = time.monotonic()
    cpu = time.process_time()
    sim = Simulation(SimConfig(nodes=nodes, fail=0.0, seed=seed, stabilise_cycles=cycles))
    sim.build()
    adjacency = []
    for core in sim.cores:
        assert core is not None
        adjacency.append([sim.index[p] for p in core.active_view()])
    degrees = [len(a) for a in adjacency]
    symmetric = sum(1 for i, a in enumerate(adjacency) for j in a if i in adjacency[j])
    out: dict[str, Any] = {
        "nodes": nodes,
        "seed": seed,
        "cycles": cycles,
        "degree": [min(degrees), sum(degrees) / nodes, max(degrees)],
        "symmetric": symmetric / max(1, sum(degrees)),
        "build_seconds": time.monotonic() - t,
        "build_cpu": time.process_time() - cpu,
        "interval": crdt.SyncConfig().interval,
    }
    modes = [("push", crdt.SyncConfig()), ("rounds", crdt.SyncConfig(push=False))]
    for mode, config in modes:
        t = time.monotonic()
        cpu = time.process_time()
        r = simulate(adjacency, sim.latency, seed, config, mode, wall_limit=wall_limit)
        out[mode] = {
            **r.__dict__,
            "wall_seconds": time.monotonic() - t,
            "cpu": time.process_time() - cpu,
        }
    return out


def run_sims(args: argparse.Namespace) -> list[dict[str, Any]]:
    results = []
    for nodes in args.sim_nodes:
        print(f"simulating {nodes:,} nodes (limit {args.sim_timeout:.0f} s) ...", flush=True)
        cmd = [PYTHON, __file__, "--sim-one", str(nodes), "--seed", str(args.seed)]
        cmd += ["--sim-cycles", str(args.sim_cycles), "--sim-timeout", str(args.sim_timeout)]
        proc = subprocess.Popen(
            cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            preexec_fn=_preexec,
        )  # fmt: skip
        try:
            out, err = proc.communicate(timeout=args.sim_timeout + 30)
        except subprocess.TimeoutExpired:
            stop_process(proc)  # type: ignore[arg-type]
            print(f"  {nodes:,} nodes: over the {args.sim_timeout:.0f} s limit, stopped")
            results.append({"nodes": nodes, "error": "over the time limit"})
            continue
        finally:
            if proc.poll() is None:
                stop_process(proc)  # type: ignore[arg-type]
        if proc.returncode != 0:
            print(f"  {nodes:,} nodes failed ({proc.returncode}):\n{err[-2000:]}")
            results.append({"nodes": nodes, "error": err.strip().splitlines()[-1:]})
            continue
        r = json.loads(out.strip().splitlines()[-1])
        results.append(r)
        print(
            f"  overlay: degree min/mean/max {r['degree'][0]}/{r['degree'][1]:.2f}/"
            f"{r['degree'][2]}, symmetric {r['symmetric']:.3f}, built in "
            f"{r['build_seconds']:.0f} s; sync: push {r['push']['wall_seconds']:.0f} s, "
            f"rounds {r['rounds']['wall_seconds']:.0f} s (wall)",
            flush=True,
        )
    return results


# -- the report -----------------------------------------------------------------------------------


def report(args: argparse.Namespace, res: dict[str, Any], sims: list[dict[str, Any]]) -> None:
    rows: list[tuple[str, str, str]] = []
    if "propagation" in res:
        runs: list[Propagation] = res["propagation"]
        alls = [r.all for r in runs]
        done = [t for t in alls if t is not None]
        missed = len(alls) - len(done)
        if done:
            p50, worst = statistics.median(done), max(done)
            if missed:
                worst = float("inf")
            goal = (
                f"p50 < {GOAL_P50 * 1000:.0f} ms: {'met' if p50 < GOAL_P50 else 'MISSED'}; "
                f"max < {GOAL_MAX * 1000:.0f} ms: {'met' if worst < GOAL_MAX else 'MISSED'}"
            )
            rows.append(
                (
                    f"propagation, deploy sent -> all {args.nodes} nodes serve it "
                    f"({len(runs)} deploys)",
                    f"p50 {p50 * 1000:.0f} ms, max "
                    + (f"{worst * 1000:.0f} ms" if not missed else f"{missed} never"),
                    goal,
                )
            )
        deploys = [r.deploy for r in runs]
        rows.append(
            ("  the deploy request itself (upload, compile, fsync)",
             f"p50 {statistics.median(deploys) * 1000:.0f} ms, max {max(deploys) * 1000:.0f} ms",
             "")
        )  # fmt: skip
        firsts = [t for t in (r.first_other() for r in runs) if t is not None]
        if firsts:
            rows.append(
                ("  first other node serves it",
                 f"p50 {statistics.median(firsts) * 1000:.0f} ms, max {max(firsts) * 1000:.0f} ms",
                 "")
            )  # fmt: skip
        after = [r.all - r.deploy for r in runs if r.all is not None]
        if after:
            rows.append(
                ("  all nodes, counted from the deploy's answer",
                 f"p50 {statistics.median(after) * 1000:.0f} ms, max {max(after) * 1000:.0f} ms",
                 "")
            )  # fmt: skip
        sts = [r.status for r in runs]
        st_done = [t for t in sts if t is not None]
        if st_done:
            rows.append(
                ("  deploying node's /status shows all on the new version",
                 f"p50 {statistics.median(st_done) * 1000:.0f} ms, max "
                 f"{max(st_done) * 1000:.0f} ms" + (f", {len(sts) - len(st_done)} never"
                                                     if len(st_done) < len(sts) else ""),
                 "")
            )  # fmt: skip
        server = [x for x in server_side(runs, res.get("log_times", {}), args.nodes) if x]
        if server:
            firsts_s, lasts_s = [x[0] for x in server], [x[1] for x in server]
            rows.append(
                ("  daemon logs: origin's 'deployed' -> first other / last 'running'",
                 f"p50 {statistics.median(firsts_s) * 1000:.0f} / "
                 f"{statistics.median(lasts_s) * 1000:.0f} ms, max "
                 f"{max(firsts_s) * 1000:.0f} / {max(lasts_s) * 1000:.0f} ms", "")
            )  # fmt: skip
        polls = sum(r.polls for r in runs)
        poll_time = sum(sum(t or r.elapsed for t in r.nodes.values()) for r in runs)
        rows.append(
            ("  poll answers: count, mean interval per node, bad (non-200)",
             f"{polls:,}, {poll_time / max(1, polls) * 1000:.1f} ms, "
             f"{sum(r.bad for r in runs)}", "")
        )  # fmt: skip
    if "reload" in res:
        rl = res["reload"]
        wrk = rl["wrk"]
        errors = [w for w in wrk if "error" in w]
        good = [w for w in wrk if "error" not in w]
        req = sum(w["requests"] for w in good)
        non2xx = sum(w["non2xx"] for w in good)
        sock = sum(w["sockerr"] for w in good)
        rruns: list[Propagation] = rl["runs"]
        rall = [r.all for r in rruns if r.all is not None]
        rows.append(
            (
                f"hot reload: wrk on all {args.nodes} nodes during {len(rruns)} redeploys "
                f"({rl['seconds']:.0f} s)",
                f"{req:,.0f} requests ({req / rl['seconds']:,.0f}/s), non-2xx {non2xx:.0f}, "
                f"socket errors {sock:.0f}"
                + (f", {len(errors)} wrk runs unreadable" if errors else ""),
                f"non-2xx == 0: {'met' if non2xx == 0 and not errors else 'MISSED'}",
            )
        )
        rows.append(
            ("  requests per node",
             " / ".join(f"{w['requests']:,.0f}" if "error" not in w else "?" for w in wrk), "")
        )  # fmt: skip
        if rall:
            rows.append(
                ("  propagation under load, all nodes",
                 f"p50 {statistics.median(rall) * 1000:.0f} ms, max {max(rall) * 1000:.0f} ms"
                 + (f", {len(rruns) - len(rall)} never" if len(rall) < len(rruns) else ""), "")
            )  # fmt: skip
        server = [x for x in server_side(rruns, res.get("log_times", {}), args.nodes) if x]
        if server:
            rows.append(
                ("  daemon logs under load: 'deployed' -> last 'running'",
                 f"p50 {statistics.median(x[1] for x in server) * 1000:.0f} ms, max "
                 f"{max(x[1] for x in server) * 1000:.0f} ms", "")
            )  # fmt: skip
    for s in sims:
        if "error" in s:
            rows.append((f"simulated, {s['nodes']:,} nodes", f"not run: {s['error']}", ""))
            continue
        d = s["degree"]
        label = (
            f"simulated, {s['nodes']:,} nodes (HyParView overlay, degree {d[0]}/{d[1]:.2f}/{d[2]})"
        )
        for mode, text in (("push", "daemon's SyncConfig(): push + forward + rounds"),
                           ("rounds", "rounds alone (push=False), fan-out 1")):  # fmt: skip
            m = s[mode]
            iv = s["interval"]
            if m["time"] is None:
                value = f"{m['reached']:,} of {s['nodes']:,} reached in 120 s"
            elif mode == "push":
                value = (
                    f"{m['time'] * 1000:.0f} ms = {m['time'] / iv:.2f} rounds (50%: "
                    f"{m['t50'] * 1000:.0f} ms), {m['hops']} hops (BFS {m['eccentricity']})"
                )
            else:
                value = (
                    f"{m['time'] / iv:.1f} rounds (50%: {m['t50'] / iv:.1f}, "
                    f"99%: {m['t99'] / iv:.1f}), {m['hops']} hops (BFS {m['eccentricity']})"
                )
            value += f"; {m['messages']:,} msgs, {m['bytes'] / 1024:,.0f} KiB"
            rows.append((f"{label}: {text}", value, ""))
            label = f"simulated, {s['nodes']:,} nodes"
    w0 = max(len(r[0]) for r in rows) if rows else 10
    w1 = max(len(r[1]) for r in rows) if rows else 10
    print()
    print(f"{'figure':<{w0}}  {'value':<{w1}}  goal")
    print(f"{'-' * w0}  {'-' * w1}  ----")
    for a, b, c in rows:
        print(f"{a:<{w0}}  {b:<{w1}}  {c}")
    if "final" in res:
        print()
        for name, running, versions in res["final"]:
            print(f"{name}: runs v{running}; /status versions {versions}")
        if res.get("dead"):
            print(f"daemons that died: {', '.join(res['dead'])}")
        warn = res.get("log_warnings", [])
        print(f"daemon log lines at WARNING or above: {len(warn)}")
        for line in warn[: args.show_warnings]:
            print(f"  {line}")


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("-n", "--nodes", type=int, default=8, help="daemons (default 8)")
    p.add_argument("-d", "--deploys", type=int, default=20, help="timed deploys (default 20)")
    p.add_argument("--poll-ms", type=float, default=10.0, help="poll interval (default 10 ms)")
    p.add_argument(
        "--deadline", type=float, default=10.0, help="seconds to wait per deploy (default 10)"
    )
    p.add_argument("--gap", type=float, default=0.5, help="seconds between deploys (default 0.5)")
    p.add_argument("-r", "--reloads", type=int, default=10, help="redeploys under load (0: skip)")
    p.add_argument("-c", "--connections", type=int, default=4, help="wrk connections per node")
    p.add_argument("--reload-gap", type=float, default=1.0, help="seconds between redeploys")
    p.add_argument("--lead", type=float, default=2.0, help="seconds of load before the first")
    p.add_argument("--mesh-timeout", type=float, default=60.0)
    p.add_argument(
        "--sim-nodes", type=int, action="append", help="simulated sizes (default 1000 and 10000)"
    )
    p.add_argument(
        "--sim-cycles", type=int, default=10,
        help="membership cycles after the joins (default 10)",
    )  # fmt: skip
    p.add_argument(
        "--sim-timeout", type=float, default=600.0, help="seconds per simulated size (default 600)"
    )
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--skip-cluster", action="store_true", help="only the simulation")
    p.add_argument("--skip-sim", action="store_true", help="only the daemons")
    p.add_argument("--show-warnings", type=int, default=10, help="daemon log lines to print")
    p.add_argument("--sim-one", type=int, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.sim_nodes is None:
        args.sim_nodes = [1000, 10000]
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.sim_one is not None:
        result = sim_one(args.sim_one, args.seed, args.sim_cycles, args.sim_timeout)
        print(json.dumps(result, sort_keys=True))
        return 0
    exit_on_sigterm()
    raise_nofile()
    res: dict[str, Any] = {}
    sims: list[dict[str, Any]] = []
    if not args.skip_cluster:
        if args.nodes < 2:
            raise SystemExit("--nodes must be at least 2")
        res = asyncio.run(cluster_bench(args))
    if not args.skip_sim:
        print()
        sims = run_sims(args)
    report(args, res, sims)
    return 0


if __name__ == "__main__":
    sys.exit(main())
