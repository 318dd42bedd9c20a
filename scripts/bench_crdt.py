#!/usr/bin/env python3
"""Figures of the replicated store, each bounded in time.

1. Merges per second: one-write deltas (what an eager push carries) merged into a replica in
   memory and on disk; and entries per second within one large delta.
2. Delta bytes per changed key: a store of N keys (keys like ``app/appNN/keyN``, 100-byte
   values) synced to a peer; then 10 keys change and the peer's digest is answered. Reports
   the digest, the delta, bytes per changed key, and the time to compute the delta.
3. Durable writes per second: ``set`` on a replica with a log, one thread and 8 threads
   (group commit); next to it, in alternation, an SQLite WAL upsert with synchronous=FULL on
   the same file system, the alternative that was considered; and raw 150-byte syncs, appending
   (fsync) against overwriting preallocated zeros (fdatasync), the log's trick. Medians of
   several rounds: the disk is shared and noisy.
4. Rounds to converge: 100 replicas, each with 10 fresh writes; every round every replica
   sends its digest to 5 random peers (anti-entropy alone, no pushes) and all messages are
   delivered. Also pushes with forwarding over a fixed overlay of degree about 5.

Run: .venv/bin/python scripts/bench_crdt.py [--quick] [--dir DIR]
"""

from __future__ import annotations

import argparse
import os
import random
import sqlite3
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from crdt import (  # noqa: E402
    AntiEntropy,
    Replica,
    SyncConfig,
    decode_message,
    encode_message,
)

VALUE = b"x" * 100


def key(i: int) -> str:
    return f"app/app{i % 50}/key{i}"


def timed(fn: Callable[[], object]) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def bench_merges(tmp: str, n: int) -> None:
    writer = Replica("writer")
    deltas = []
    since = 0
    for i in range(n):
        writer.set(key(i % 1000), VALUE)
        delta, since = writer.local_delta(since)
        assert delta is not None
        deltas.append(delta)
    mem = Replica("mem")
    dt = timed(lambda: [mem.merge(d) for d in deltas])
    print(f"merges/s, one-write deltas, in memory:    {n / dt:10,.0f}  ({len(deltas[0])} B each)")
    m = min(n, 1000)
    disk = Replica("disk", os.path.join(tmp, "merge.log"))
    dt = timed(lambda: [disk.merge(d) for d in deltas[:m]])
    print(f"merges/s, one-write deltas, durable:      {m / dt:10,.0f}")
    disk.close()
    big = Replica("big")
    for i in range(10_000):
        big.set(key(i), VALUE)
    delta = big.delta(Replica("empty").digest())
    into = Replica("into")
    dt = timed(lambda: into.merge(delta))
    n_in = len(into.keys())
    print(f"entries/s within one {len(delta) >> 10} KiB delta:    {n_in / dt:10,.0f}")


def bench_delta_sizes(sizes: list[int]) -> None:
    print(f"{'keys':>8} {'full KiB':>9} {'digest B':>9} {'delta B':>8} {'B/key':>6} {'ms':>6}")
    for n in sizes:
        a, b = Replica("node-a"), Replica("node-b")
        for i in range(n):
            a.set(key(i), VALUE)
        full = 0
        while True:
            chunk = a.delta_chunk(b.digest())
            if chunk.delta is None:
                break
            full += len(chunk.delta)
            b.merge(chunk.delta)
        changed = random.Random(n).sample(range(n), 10)
        for i in changed:
            a.set(key(i), b"y" * 100)
        digest = b.digest()
        t = time.perf_counter()
        delta = a.delta(digest)
        ms = (time.perf_counter() - t) * 1e3
        b.merge(delta)
        assert all(b.get(key(i)) == b"y" * 100 for i in changed)
        print(
            f"{n:>8,} {full / 1024:>9,.0f} {len(digest):>9} {len(delta):>8} "
            f"{len(delta) / 10:>6.0f} {ms:>6.2f}"
        )


def durable_set(tmp: str, threads: int, seconds: float) -> float:
    path = os.path.join(tmp, f"w{threads}-{time.monotonic_ns()}.log")
    r = Replica("w", path)
    counts = [0] * threads
    stop = time.perf_counter() + seconds

    def work(t: int) -> None:
        i = 0
        while time.perf_counter() < stop:
            r.set(f"t{t}/{i}", VALUE)
            i += 1
        counts[t] = i

    start = time.perf_counter()
    ts = [threading.Thread(target=work, args=(t,)) for t in range(threads)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    rate = sum(counts) / (time.perf_counter() - start)
    r.close()
    os.unlink(path)
    return rate


def sqlite_set(tmp: str, seconds: float) -> float:
    path = os.path.join(tmp, f"s-{time.monotonic_ns()}.db")
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=FULL")
    db.execute("CREATE TABLE r (k TEXT PRIMARY KEY, v BLOB)")
    i = 0
    start = time.perf_counter()
    while time.perf_counter() - start < seconds:
        db.execute(
            "INSERT INTO r VALUES (?, ?) ON CONFLICT (k) DO UPDATE SET v = excluded.v",
            (f"k{i}", VALUE + i.to_bytes(8, "big")),
        )
        i += 1
    rate = i / (time.perf_counter() - start)
    db.close()
    for suffix in ("", "-wal", "-shm"):
        if os.path.exists(path + suffix):
            os.unlink(path + suffix)
    return rate


def raw_syncs(tmp: str, preallocated: bool, seconds: float) -> float:
    """150-byte records: overwrite preallocated zeros + fdatasync, or append + fsync."""
    path = os.path.join(tmp, f"raw-{time.monotonic_ns()}")
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    if preallocated:
        os.posix_fallocate(fd, 0, 64 << 20)
        os.fsync(fd)
    record, pos, n = b"x" * 150, 0, 0
    start = time.perf_counter()
    while time.perf_counter() - start < seconds and pos < (64 << 20) - 150:
        os.pwrite(fd, record, pos)
        pos += 150
        os.fdatasync(fd) if preallocated else os.fsync(fd)
        n += 1
    rate = n / (time.perf_counter() - start)
    os.close(fd)
    os.unlink(path)
    return rate


def bench_durable(tmp: str, rounds: int, seconds: float) -> None:
    results: dict[str, list[float]] = {
        "log, 1 thread": [],
        "log, 8 threads": [],
        "sqlite": [],
        "raw prealloc+fdatasync": [],
        "raw append+fsync": [],
    }
    for _ in range(rounds):
        results["log, 1 thread"].append(durable_set(tmp, 1, seconds))
        results["sqlite"].append(sqlite_set(tmp, seconds))
        results["log, 8 threads"].append(durable_set(tmp, 8, seconds))
        results["raw prealloc+fdatasync"].append(raw_syncs(tmp, True, seconds / 2))
        results["raw append+fsync"].append(raw_syncs(tmp, False, seconds / 2))
    for name, rates in results.items():
        spread = ", ".join(f"{r:,.0f}" for r in rates)
        print(f"durable writes/s, {name:<22} median {statistics.median(rates):8,.0f}  ({spread})")


def converge(n: int, fanout: int, seed: int, overlay: int | None) -> tuple[int, int, int]:
    """Rounds until all ``n`` replicas hold the same data, messages and bytes sent."""
    rng = random.Random(seed)
    t0 = 1_700_000_000.0
    if overlay is None:  # anti-entropy only, with peers drawn from the whole membership
        config = SyncConfig(interval=1.0, fanout=fanout, jitter=0.0, push=False)
    else:  # a fixed overlay of about `overlay` neighbours, pushes forwarded, 1 peer a round
        config = SyncConfig(interval=1.0, fanout=1, jitter=0.0, push=True)
    names = [f"node-{i:03}" for i in range(n)]
    nodes = {}
    for name in names:
        replica = Replica(name, clock=lambda: t0)
        nodes[name] = (replica, AntiEntropy(replica, random.Random(rng.random()), config))
    if overlay is None:
        for name in names:
            for other in names:
                nodes[name][1].add_peer(other, 0.0)
    else:
        for i, name in enumerate(names):
            nodes[name][1].add_peer(names[(i + 1) % n], 0.0)
            nodes[names[(i + 1) % n]][1].add_peer(name, 0.0)
            for other in rng.sample(names, overlay // 2 - 1):
                nodes[name][1].add_peer(other, 0.0)
                nodes[other][1].add_peer(name, 0.0)
    for _, core in nodes.values():
        core.take_outbox()  # the greetings of add_peer: not part of the measure
        core.tick(0.0)
    for i, (replica, _) in enumerate(nodes.values()):
        for k in range(10):
            replica.set(f"app/n{i}/k{k}", b"v" * 50)
        replica.incr("deploys")
    sent = sent_bytes = 0
    for rounds in range(1, 50):
        queue = []
        for name, (_, core) in nodes.items():
            core.tick(float(rounds))
            queue += [(dst, name, encode_message(m)) for dst, m in core.take_outbox()]
        while queue:
            dst, src, data = queue.pop(0)
            sent += 1
            sent_bytes += len(data)
            core = nodes[dst][1]
            core.on_message(src, decode_message(data), float(rounds))
            queue += [(d, dst, encode_message(m)) for d, m in core.take_outbox()]
        states = {repr(r._state.canonical()) for r, _ in nodes.values()}
        if len(states) == 1:
            assert all(r.value("deploys") == n for r, _ in nodes.values())
            return rounds, sent, sent_bytes
    raise AssertionError("did not converge in 50 rounds")


def bench_converge(seeds: int) -> None:
    for label, overlay in (
        ("anti-entropy, 5 random peers/round", None),
        ("push+forward, overlay degree ~5    ", 6),
    ):
        runs = [converge(100, 5, seed, overlay) for seed in range(seeds)]
        rounds = [r for r, _, _ in runs]
        msgs = statistics.mean(m for _, m, _ in runs)
        kib = statistics.mean(b for _, _, b in runs) / 1024
        print(
            f"100 replicas, {label}: rounds mean {statistics.mean(rounds):.1f} "
            f"max {max(rounds)}  ({msgs:,.0f} messages, {kib:,.0f} KiB in all)"
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="smaller sizes, fewer rounds")
    parser.add_argument("--dir", default=str(ROOT), help="where durable logs go (a real disk)")
    args = parser.parse_args(argv)
    quick = args.quick
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix=".bench-crdt-", dir=args.dir) as tmp:
        print("== merges")
        bench_merges(tmp, 2000 if quick else 20_000)
        print("== delta after 10 changed keys")
        bench_delta_sizes([100, 10_000] if quick else [100, 10_000, 100_000])
        print("== durable writes (disk shared with others: noisy)")
        bench_durable(tmp, 2 if quick else 3, 1.0 if quick else 2.0)
        print("== rounds to converge")
        bench_converge(1 if quick else 3)
    print(f"(took {time.perf_counter() - start:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
