#!/usr/bin/env python3
"""Actors: call latency local against forwarded, activation, and failover after kill -9.

Starts N daemons (default 3) with tests/e2e/cluster.py's ``LocalCluster`` (processes on
127.0.0.1, ``--no-mdns``, joined through node0, ``--actor-idle`` 2 s) and deploys two apps:
``counter`` (guests/build/rust-counter.wasm, built by ``scripts/build-guests rust``) and
``echo`` (guests/wat/echo.wat, which imports no ``actor`` operation, so it runs both as a plain
``/call`` and as an actor). The client is this script: one keep-alive HTTP connection per node,
one call at a time.

1. Latency, in R rounds (default 5); in each round every kind below runs, in a shuffled
   order (seeded), 5 untimed warm-up calls then C timed calls (default 200). "local": the
   client calls the actor's owner; "forwarded": it calls another node, which forwards the call
   to the owner over ``POST /peer/actors``.
   * ``/call/echo/echo`` on the owner of the echo actor: the same guest op outside an actor
     (the counter's ops all use the actor namespace, so they cannot run as a plain call);
   * ``/actors/echo/<key>/echo``, local and forwarded;
   * ``/actors/counter/<key>/get`` (a ``load``), local and forwarded;
   * ``/actors/counter/<key>/increment`` (a ``store``: acknowledged by a majority), local and
     forwarded.
   Reported per kind: the median over the rounds of each round's p50 and p99. Goal: a
   forwarded call costs under 1 ms more than a local one at p50.
2. Activation, in the same number of rounds: K fresh counter keys (default 10) per round, each
   called through its owner (``GET /actors/counter/<key>`` names it): the first ``get`` (a fresh
   activation: a prepare round with no state), a second ``get`` (live), an ``increment``; then,
   once every key is passivated (``GET /actors/...`` answers ``active: false``, after
   ``--actor-idle``), ``get`` again (the activation of a passivated actor: its state comes back
   with the prepare round), and once more (live).
3. Failover, F times (default 10): a counter actor is called (``increment``) through a node
   that does not own it; its owner is killed with SIGKILL; the same client goes on calling
   through the same node (each call waits up to ``--actor-wait`` in the daemon) until one
   succeeds. The figure is the time from the kill (the process reaped) to that answer; the
   answer must come from another node and carry the count before the kill plus one (the last
   increment before the kill was acknowledged by a majority: the new owner has it). The
   killed node is then started again (same port and data dir) and waited for (every node
   lists every member running both apps). Reported: p50 and max.
   Goal: p50 under 3 s.

Printed: a table; written: the figures as JSON (``--json``, default
bench-results/actors.json). Every daemon is stopped on exit (try/finally; also on SIGTERM).

Run: .venv/bin/python scripts/bench_actors.py [-n NODES] [-r ROUNDS] [-c CALLS] [-k KEYS]
         [-f KILLS] [--json PATH]
"""

from __future__ import annotations

import argparse
import http.client
import json
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
# The repository first: tests/ has a folder named assemblexd too.
sys.path[:0] = [str(ROOT), str(ROOT / "tests"), str(ROOT / "tests" / "e2e")]
sys.path.insert(0, str(ROOT / "scripts"))

from bench_http import exit_on_sigterm, raise_nofile  # noqa: E402

COUNTER_WASM = ROOT / "guests" / "build" / "rust-counter.wasm"
GOAL_FORWARD_MS = 1.0
GOAL_FAILOVER_S = 3.0
IDLE = 2.0
"""--actor-idle of the nodes: the activation rounds wait for it."""
WARMUP = 5


class Client:
    """One keep-alive HTTP connection to a node; reconnects after an error."""

    def __init__(self, name: str, port: int, timeout: float = 30.0) -> None:
        self.name, self.port, self.timeout = name, port, timeout
        self.conn: http.client.HTTPConnection | None = None

    def request(
        self, method: str, path: str, body: bytes = b""
    ) -> tuple[int, bytes, dict[str, str]]:
        if self.conn is None:
            self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=self.timeout)
        try:
            self.conn.request(method, path, body=body)
            resp = self.conn.getresponse()
            data = resp.read()
        except (OSError, http.client.HTTPException):
            self.close()
            raise
        return resp.status, data, {k.lower(): v for k, v in resp.getheaders()}

    def ok(self, method: str, path: str, body: bytes = b"") -> tuple[bytes, dict[str, str]]:
        status, data, headers = self.request(method, path, body)
        if status != 200:
            raise RuntimeError(f"{self.name} {method} {path}: {status} {data[:300]!r}")
        return data, headers

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None


def pct(values: list[float], q: float) -> float:
    """The q-quantile (0..1) by nearest rank on the sorted values."""
    s = sorted(values)
    return s[min(len(s) - 1, max(0, round(q * (len(s) - 1))))]


def owner_of(client: Client, app: str, key: str) -> str:
    data, _ = client.ok("GET", f"/actors/{app}/{key}")
    owner = json.loads(data)["owner"]
    if not owner:
        raise RuntimeError(f"{app}/{key} has no owner: {data!r}")
    return str(owner)


def wait_passive(client: Client, app: str, keys: list[str], limit: float) -> float:
    """Wait until every actor of ``keys`` answers ``active: false``; seconds taken."""
    started = time.monotonic()
    left = list(keys)
    while left:
        # node0 asks the node that holds (or would own) each actor.
        left = [k for k in left if json.loads(client.ok("GET", f"/actors/{app}/{k}")[0])["active"]]
        if not left:
            break
        if time.monotonic() - started > limit:
            raise RuntimeError(f"{len(left)} actors still active after {limit:.0f} s: {left[:5]}")
        time.sleep(0.1)
    return time.monotonic() - started


def wait_apps(cluster: Any, apps: Sequence[str]) -> None:
    """Wait until every node's /status shows every node running each of ``apps``: until then a
    node may place an actor among fewer candidates, and the actor moves once it knows more."""
    from cluster import poll

    names = {d.name for d in cluster.nodes}

    def settled() -> bool:
        for d in cluster.nodes:
            versions = {a["name"]: a["versions"] for a in d.status()["apps"]}
            if any(set(versions.get(app, {})) != names for app in apps):
                return False
        return True

    poll(settled, f"every node running {', '.join(apps)} on every node")


# -- 1. latency -----------------------------------------------------------------------------------


def latency(
    args: argparse.Namespace, clients: dict[str, Client], rng: random.Random
) -> dict[str, Any]:
    names = sorted(clients)
    echo_key, counter_key = f"echo-{rng.randrange(10**9)}", f"lat-{rng.randrange(10**9)}"
    # The first call activates each actor; the answer names its owner.
    _, h = clients["node0"].ok("POST", f"/actors/echo/{echo_key}/echo", b"x")
    echo_owner = h["assemblex-actor-owner"]
    _, h = clients["node0"].ok("POST", f"/actors/counter/{counter_key}/get")
    counter_owner = h["assemblex-actor-owner"]
    echo_other = next(n for n in names if n != echo_owner)
    counter_other = next(n for n in names if n != counter_owner)
    kinds: dict[str, tuple[str, str, bytes, str | None]] = {
        # name: (node, path, payload, the owner the answer must name; None: a plain call)
        "call echo (plain /call)": (echo_owner, "/call/echo/echo", b"hello", None),
        "actor echo, local": (echo_owner, f"/actors/echo/{echo_key}/echo", b"hello", echo_owner),
        "actor echo, forwarded": (
            echo_other, f"/actors/echo/{echo_key}/echo", b"hello", echo_owner,
        ),
        "actor get, local": (
            counter_owner, f"/actors/counter/{counter_key}/get", b"", counter_owner,
        ),
        "actor get, forwarded": (
            counter_other, f"/actors/counter/{counter_key}/get", b"", counter_owner,
        ),
        "actor increment, local": (
            counter_owner, f"/actors/counter/{counter_key}/increment", b"", counter_owner,
        ),
        "actor increment, forwarded": (
            counter_other, f"/actors/counter/{counter_key}/increment", b"", counter_owner,
        ),
    }  # fmt: skip
    rounds: dict[str, list[dict[str, float]]] = {k: [] for k in kinds}
    for r in range(args.rounds):
        order = list(kinds)
        rng.shuffle(order)
        for kind in order:
            node, path, payload, owner = kinds[kind]
            client = clients[node]
            times = []
            for i in range(WARMUP + args.calls):
                t0 = time.perf_counter()
                _, headers = client.ok("POST", path, payload)
                dt = time.perf_counter() - t0
                if owner is not None and headers.get("assemblex-actor-owner") != owner:
                    raise RuntimeError(
                        f"{kind}: answered by {headers.get('assemblex-actor-owner')}, not {owner}"
                    )
                if i >= WARMUP:
                    times.append(dt)
            rounds[kind].append(
                {"p50": statistics.median(times), "p99": pct(times, 0.99), "n": len(times)}
            )
        print(f"  latency round {r + 1}/{args.rounds} done", flush=True)
    summary = {
        kind: {
            "p50_ms": statistics.median(x["p50"] for x in rs) * 1000,
            "p99_ms": statistics.median(x["p99"] for x in rs) * 1000,
            "rounds_p50_ms": [x["p50"] * 1000 for x in rs],
            "rounds_p99_ms": [x["p99"] * 1000 for x in rs],
            "node": kinds[kind][0],
            "path": kinds[kind][1],
        }
        for kind, rs in rounds.items()
    }
    return {
        "echo_owner": echo_owner,
        "counter_owner": counter_owner,
        "calls_per_round": args.calls,
        "rounds": args.rounds,
        "kinds": summary,
    }


# -- 2. activation --------------------------------------------------------------------------------


def activation(
    args: argparse.Namespace, clients: dict[str, Client], rng: random.Random
) -> dict[str, Any]:
    fresh: list[float] = []
    live: list[float] = []
    passivated: list[float] = []
    live_after: list[float] = []
    waits: list[float] = []

    def timed_get(client: Client, key: str, want: bytes) -> float:
        t0 = time.perf_counter()
        data, _ = client.ok("POST", f"/actors/counter/{key}/get")
        dt = time.perf_counter() - t0
        if data.split()[0] != want:
            raise RuntimeError(f"get of counter/{key}: {data!r}, stored count {want!r} expected")
        return dt

    for r in range(args.rounds):
        keys = [f"act-{r}-{rng.randrange(10**9)}" for _ in range(args.keys)]
        owners = {k: owner_of(clients["node0"], "counter", k) for k in keys}
        for k in keys:
            c = clients[owners[k]]
            fresh.append(timed_get(c, k, b"0"))
            live.append(timed_get(c, k, b"0"))
            c.ok("POST", f"/actors/counter/{k}/increment")
        waits.append(wait_passive(clients["node0"], "counter", keys, IDLE + 20))
        for k in keys:
            c = clients[owners[k]]
            passivated.append(timed_get(c, k, b"1"))
            live_after.append(timed_get(c, k, b"1"))
        print(f"  activation round {r + 1}/{args.rounds} done", flush=True)

    def stats(xs: list[float]) -> dict[str, Any]:
        return {
            "p50_ms": statistics.median(xs) * 1000,
            "p99_ms": pct(xs, 0.99) * 1000,
            "n": len(xs),
        }

    return {
        "fresh": stats(fresh),
        "live": stats(live),
        "passivated": stats(passivated),
        "live_after": stats(live_after),
        "passivation_wait_s": statistics.median(waits),
    }


# -- 3. failover ----------------------------------------------------------------------------------


def failover(args: argparse.Namespace, cluster: Any, rng: random.Random) -> dict[str, Any]:
    by_name = {d.name: d for d in cluster.nodes}
    key = f"fail-{rng.randrange(10**9)}"
    runs: list[dict[str, Any]] = []
    for i in range(args.kills):
        clients = {
            d.name: Client(d.name, d.port, timeout=args.actor_wait + 10) for d in cluster.nodes
        }
        try:
            entry = clients["node0"]
            # After the previous kill the restarted node wins its actors back (within about
            # a second): wait until two calls in a row name the same owner.
            settle = time.monotonic() + 15
            data, h = entry.ok("POST", f"/actors/counter/{key}/increment")
            while True:
                owner = h["assemblex-actor-owner"]
                via = next(n for n in sorted(clients) if n != owner)
                data, h = clients[via].ok("POST", f"/actors/counter/{key}/increment")
                if h["assemblex-actor-owner"] == owner:
                    break
                if time.monotonic() > settle:
                    raise RuntimeError(f"owner moved from {owner} to {h['assemblex-actor-owner']}")
                time.sleep(0.5)
            before = int(data.split()[0])
            victim = by_name[owner]
            victim.kill()
            killed = time.perf_counter()
            failures = 0
            while True:
                try:
                    status, data, h = clients[via].request(
                        "POST", f"/actors/counter/{key}/increment"
                    )
                except (OSError, http.client.HTTPException):
                    status, data, h = 0, b"", {}
                if status == 200:
                    break
                failures += 1
                if time.perf_counter() - killed > 60:
                    raise RuntimeError(f"no successful call 60 s after killing {owner}")
            took = time.perf_counter() - killed
            new_owner = h["assemblex-actor-owner"]
            count = int(data.split()[0])
            if new_owner == owner or count != before + 1:
                raise RuntimeError(
                    f"after the kill of {owner}: answered by {new_owner}, count {count}"
                    f" (before: {before})"
                )
            runs.append(
                {
                    "seconds": took,
                    "killed": owner,
                    "via": via,
                    "new_owner": new_owner,
                    "failed_calls": failures,
                    "count_before": before,
                    "count_after": count,
                }
            )
            print(
                f"  kill {i + 1}/{args.kills}: {owner} killed, {new_owner} answered through"
                f" {via} after {took:.2f} s ({failures} failed calls)",
                flush=True,
            )
            victim.restart()
            cluster.wait_members()
            wait_apps(cluster, ("counter", "echo"))
        finally:
            for c in clients.values():
                c.close()
    times = [r["seconds"] for r in runs]
    return {
        "runs": runs,
        "p50_s": statistics.median(times),
        "max_s": max(times),
    }


# -- report ---------------------------------------------------------------------------------------


def report(res: dict[str, Any]) -> None:
    rows: list[tuple[str, str, str]] = []
    lat = res["latency"]["kinds"]
    for kind, s in lat.items():
        rows.append((kind, f"{s['p50_ms']:.2f}", f"{s['p99_ms']:.2f}"))
    act = res["activation"]
    for name, label in (
        ("fresh", "activation of a fresh key (get)"),
        ("live", "  then the live actor (get)"),
        ("passivated", "activation of a passivated actor (get)"),
        ("live_after", "  then the live actor (get)"),
    ):
        rows.append((label, f"{act[name]['p50_ms']:.2f}", f"{act[name]['p99_ms']:.2f}"))
    width = max(len(r[0]) for r in rows)
    print()
    print(
        f"{'calls (one at a time, keep-alive), ms':<{width}}  {'p50':>8}  {'p99':>8}"
        f"   (median over {res['latency']['rounds']} rounds of {res['latency']['calls_per_round']}"
        " calls)"
    )
    for a, b, c in rows:
        print(f"{a:<{width}}  {b:>8}  {c:>8}")
    print()
    for op in ("echo", "get", "increment"):
        local = lat[f"actor {op}, local"]["p50_ms"]
        fwd = lat[f"actor {op}, forwarded"]["p50_ms"]
        extra = fwd - local
        verdict = "met" if extra < GOAL_FORWARD_MS else "MISSED"
        print(
            f"forwarded - local at p50, {op}: {extra:+.2f} ms (goal < {GOAL_FORWARD_MS:.0f} ms:"
            f" {verdict})"
        )
    plain = lat["call echo (plain /call)"]["p50_ms"]
    print(
        f"actor echo (local) - plain /call echo at p50: "
        f"{lat['actor echo, local']['p50_ms'] - plain:+.2f} ms"
    )
    fo = res["failover"]
    verdict = "met" if fo["p50_s"] < GOAL_FAILOVER_S else "MISSED"
    print(
        f"failover (kill -9 of the owner -> first successful call through another node),"
        f" {len(fo['runs'])} kills: p50 {fo['p50_s']:.2f} s, max {fo['max_s']:.2f} s"
        f" (goal p50 < {GOAL_FAILOVER_S:.0f} s: {verdict})"
    )
    each = ", ".join(f"{r['seconds']:.2f}" for r in fo["runs"])
    print(f"  each: {each} s")


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("-n", "--nodes", type=int, default=3, help="daemons (default 3)")
    p.add_argument("-r", "--rounds", type=int, default=5, help="rounds (default 5)")
    p.add_argument("-c", "--calls", type=int, default=200, help="timed calls per kind and round")
    p.add_argument("-k", "--keys", type=int, default=10, help="fresh keys per activation round")
    p.add_argument("-f", "--kills", type=int, default=10, help="failovers (default 10)")
    p.add_argument("--actor-wait", type=float, default=10.0, help="--actor-wait of the nodes")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--json", type=Path, default=ROOT / "bench-results" / "actors.json")
    args = p.parse_args(argv)
    if args.nodes < 3:
        p.error("--nodes must be at least 3 (a kill must leave a majority)")
    if min(args.rounds, args.calls, args.keys, args.kills) < 1:
        p.error("--rounds, --calls, --keys and --kills must be at least 1")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if not COUNTER_WASM.exists():
        raise SystemExit(f"{COUNTER_WASM} is missing: run scripts/build-guests rust")
    exit_on_sigterm()
    raise_nofile()
    from cluster import LocalCluster
    from helpers import load_wat

    rng = random.Random(args.seed)
    flags = ["--actor-idle", str(IDLE), "--actor-wait", str(args.actor_wait)]
    with tempfile.TemporaryDirectory(prefix="bench-actors-") as tmp:
        cluster = LocalCluster(Path(tmp), args=flags)
        try:
            started = time.monotonic()
            cluster.start(args.nodes)
            marks = cluster.marks()
            seed = cluster.nodes[0]
            counter = seed.deploy("counter", COUNTER_WASM.read_bytes())
            cluster.wait_running("counter", str(counter["sha256"]), marks)
            marks = cluster.marks()
            echo = seed.deploy("echo", load_wat("echo"))
            cluster.wait_running("echo", str(echo["sha256"]), marks)
            wait_apps(cluster, ("counter", "echo"))
            print(f"{args.nodes} nodes up, counter and echo deployed in"
                  f" {time.monotonic() - started:.1f} s", flush=True)  # fmt: skip
            clients = {d.name: Client(d.name, d.port) for d in cluster.nodes}
            try:
                res: dict[str, Any] = {"nodes": args.nodes, "seed": args.seed, "actor_idle": IDLE}
                res["latency"] = latency(args, clients, rng)
                res["activation"] = activation(args, clients, rng)
            finally:
                for c in clients.values():
                    c.close()
            res["failover"] = failover(args, cluster, rng)
        except BaseException:
            print(cluster.log_tails(20), file=sys.stderr)
            raise
        finally:
            cluster.close()
    report(res)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(res, indent=1) + "\n")
    print(f"\nwritten: {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
