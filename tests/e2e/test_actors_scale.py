"""Many actors on five real daemons: where they live, what a live one costs, and that
passivation frees them.

Each test starts its own five nodes (``--max-instances`` raised: every live actor holds an
instance; ``--actor-idle`` longer than the calls take, so every actor is live when they end),
deploys the counter guest (guests/build/rust-counter.wasm) and calls op ``key`` of N actors
once each (keys ``a0`` ... ``a<N-1>``), each through a node picked at random (seeded), at most
``CONCURRENCY`` calls at a time. Then:

* every answer is the actor's key, from the node that rendezvous placement names among the
  five (``Assemblex-Actor-Owner``), and each node owns 20% +- 5% of the actors;
* each node's ``assemblex_actors_active`` equals the number of actors the answers say it owns,
  and its ``assemblex_instances_live`` rose by at least as many;
* memory: the resident set (``VmRSS`` of /proc/<pid>/status) of each daemon before the calls
  and with every actor live, printed per node and per actor, and bounded per actor;
* once ``--actor-idle`` passes, every node's ``assemblex_actors_active`` goes back to 0 and its
  ``assemblex_instances_live`` back to where it was before the calls;
* no node refused a connection for ``--max-client-conns`` (``CLIENT_CONNS`` per address,
  which the four peers and this client share on 127.0.0.1; a node opens at most 18 to a peer).

``test_scale_1000`` (1,000 actors) runs in the default suite; ``test_scale_10000`` is marked
``long`` (tests/conftest.py: it runs with ``-m long``). The figures are printed (``-s``).
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import re
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest
from cluster import READ_TOKEN, Daemon, LocalCluster, http, poll, whole_cluster
from helpers import REPO_ROOT

from assemblexd.actors import core
from assemblexd.node import MEMBERS_TTL

pytestmark = pytest.mark.e2e

NODES = 5
APP = "counter"
COUNTER = REPO_ROOT / "guests" / "build" / "rust-counter.wasm"
CONCURRENCY = 32
SHARE, SHARE_TOLERANCE = 0.20, 0.05
CLIENT_CONNS = 256
"""``--max-client-conns`` of the nodes: twice the default, as five nodes share one address
here (a burst that opened a connection per message, hundreds, would still pass it)."""
RSS_PER_ACTOR_MAX = 256 * 1024
"""Bytes of resident memory one live counter actor may add to its node (measured: about
45 KiB: the instance, its linear memory's touched pages, the service's records)."""


def rss(pid: int) -> int:
    """Resident bytes of process ``pid`` (``VmRSS``)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmRSS for pid {pid}")


def metric(daemon: Daemon, name: str) -> float:
    status, body = http("GET", f"{daemon.url}/metrics", headers=daemon.read_headers)
    assert status == 200, body[:300]
    found = re.search(rf"^{name} (\S+)$", body.decode(), re.MULTILINE)
    assert found is not None, f"no {name} in /metrics"
    return float(found.group(1))


@contextlib.contextmanager
def five_nodes(
    base: Path, request: pytest.FixtureRequest, args: list[str]
) -> Iterator[LocalCluster]:
    """Five nodes with ``args``, the counter deployed and known to run on every node; the
    ``whole_cluster`` checks (no crash, no unexpected ERROR line) around the body."""
    base.mkdir(parents=True, exist_ok=True)
    # The read token: /status shows the node ids placement hashes only to a reader with it.
    args = [*args, "--read-token", READ_TOKEN, "--max-client-conns", str(CLIENT_CONNS)]
    local = LocalCluster(base, args=args)
    try:
        local.start(NODES)
        marks = local.marks()
        answer = local.nodes[0].deploy(APP, COUNTER.read_bytes())
        local.wait_running(APP, answer["sha256"], marks)
        names = {d.name for d in local.nodes}

        def placed() -> bool:
            # Until every node knows every node runs the app, one may place an actor among
            # fewer candidates (it then moves).
            for d in local.nodes:
                versions = {a["name"]: a["versions"] for a in d.status()["apps"]}
                if set(versions.get(APP, {})) != names:
                    return False
            return True

        poll(placed, f"every node listing {APP} on every node")
        # The actors read the members from the store at most every MEMBERS_TTL seconds.
        time.sleep(MEMBERS_TTL + 0.1)
        checks = whole_cluster(local, request)
        next(checks)
        yield local
        with contextlib.suppress(StopIteration):
            next(checks)
    finally:
        local.close()


async def call_all(
    local: LocalCluster, keys: list[str], seed: int
) -> tuple[dict[str, str], dict[str, int]]:
    """Op ``key`` of every actor of ``keys`` once, through random nodes; each key's owner (from
    the answer), and the failures by kind (none expected)."""
    rng = random.Random(seed)
    via = {k: rng.choice(local.nodes).url for k in keys}
    owners: dict[str, str] = {}
    failures: Counter[str] = Counter()
    sem = asyncio.Semaphore(CONCURRENCY)
    timeout = aiohttp.ClientTimeout(total=60)
    async with aiohttp.ClientSession(timeout=timeout) as session:

        async def one(key: str) -> None:
            async with sem, session.post(f"{via[key]}/actors/{APP}/{key}/key") as resp:
                body = await resp.read()
                if resp.status != 200:
                    failures[f"{resp.status} {body[:120]!r}"] += 1
                elif body != key.encode():
                    failures[f"wrong answer {body[:60]!r}"] += 1
                else:
                    owners[key] = resp.headers["Assemblex-Actor-Owner"]

        await asyncio.gather(*(one(k) for k in keys))
    return owners, dict(failures)


def scale(local: LocalCluster, actors: int, idle: float) -> None:
    nodes = local.nodes
    ids = {d.status()["node"]["id"]: d.name for d in nodes}
    keys = [f"a{i}" for i in range(actors)]
    rss_before = {d.name: rss(d.proc.pid) for d in nodes}  # type: ignore[union-attr]
    live_before = {d.name: metric(d, "assemblex_instances_live") for d in nodes}

    started = time.monotonic()
    owners, failures = asyncio.run(call_all(local, keys, seed=actors))
    took = time.monotonic() - started
    print(f"\n{actors} actors on {NODES} nodes: called in {took:.1f} s ({actors / took:.0f}/s)")
    assert not failures, failures
    # The actors must still be live for what follows: calls slower than --actor-idle would
    # make the counts below wrong, not the actors.
    assert took < idle * 0.6, f"the calls took {took:.1f} s, --actor-idle is {idle:g} s"

    placed = {k: ids[str(core.owner(APP, k, ids))] for k in keys}
    misplaced = {k: (owners[k], placed[k]) for k in keys if owners[k] != placed[k]}
    by_node = Counter(owners.values())
    shares = {d.name: by_node[d.name] / actors for d in nodes}
    print("owned: " + ", ".join(f"{n} {by_node[n]} ({s:.1%})" for n, s in shares.items()))
    sample = dict(list(misplaced.items())[:10])
    assert not misplaced, f"{len(misplaced)} actors not on their rendezvous owner: {sample}"
    for name, share in shares.items():
        assert abs(share - SHARE) <= SHARE_TOLERANCE, (name, shares)

    # The gauge is set once a second by each node's housekeeping.
    def gauges() -> dict[str, float] | None:
        got = {d.name: metric(d, "assemblex_actors_active") for d in nodes}
        return got if got == {n: float(by_node[n]) for n in got} else None

    active = poll(gauges, "assemblex_actors_active matching the owners", timeout=10)
    live = {d.name: metric(d, "assemblex_instances_live") for d in nodes}
    rss_live = {d.name: rss(d.proc.pid) for d in nodes}  # type: ignore[union-attr]
    grown = sum(rss_live.values()) - sum(rss_before.values())
    per_actor = grown / actors
    print(
        "RSS MiB before -> all live: "
        + ", ".join(
            f"{n} {rss_before[n] / 2**20:.1f} -> {rss_live[n] / 2**20:.1f}" for n in rss_before
        )
    )
    print(f"memory per live actor: {per_actor / 1024:.1f} KiB (sum of RSS growth / {actors})")
    print(f"instances live: {live} (before: {live_before}); actors active: {active}")
    for d in nodes:
        assert live[d.name] - live_before[d.name] >= by_node[d.name], (live, live_before)
    assert per_actor <= RSS_PER_ACTOR_MAX, f"{per_actor / 1024:.0f} KiB per live actor"

    # Passivation: after --actor-idle without calls, each instance is freed.
    called_at = time.monotonic()

    def passivated() -> dict[str, float] | None:
        got = {d.name: metric(d, "assemblex_actors_active") for d in nodes}
        return got if not any(got.values()) else None

    poll(passivated, "every actor passivated", timeout=idle + 30)
    gone = time.monotonic() - called_at
    live_after = {d.name: metric(d, "assemblex_instances_live") for d in nodes}
    rss_after = {d.name: rss(d.proc.pid) for d in nodes}  # type: ignore[union-attr]
    print(
        f"passivated {gone:.1f} s after the calls ended (--actor-idle {idle:g}); instances live:"
        f" {live_after}; RSS MiB after: "
        + ", ".join(f"{n} {v / 2**20:.1f}" for n, v in rss_after.items())
    )
    for d in nodes:
        assert live_after[d.name] <= live_before[d.name], (live_after, live_before)
    lapses = [f"{d.name}: {line}" for d in nodes for line in d.lines if "lease lapsed" in line]
    print(f"lease lapses (each passivates all of a node's actors): {len(lapses)}")
    for line in lapses[:10]:
        print(f"  {line}")
    # Bursts of actor messages (activations, releases) stay within each peer's
    # --max-client-conns (here the four peers and this client share one address).
    refused = [line for d in nodes for line in d.lines if "refused a connection" in line]
    assert not refused, refused[:3]


def test_scale_1000(tmp_path: Path, request: pytest.FixtureRequest) -> None:
    idle = 20.0
    args = ["--actor-idle", str(idle), "--max-instances", "1024"]
    with five_nodes(tmp_path / "cluster", request, args) as local:
        scale(local, 1_000, idle)


@pytest.mark.long
@pytest.mark.timeout(900)
def test_scale_10000(tmp_path: Path, request: pytest.FixtureRequest) -> None:
    idle = 120.0
    args = ["--actor-idle", str(idle), "--max-instances", "4096"]
    with five_nodes(tmp_path / "cluster", request, args) as local:
        scale(local, 10_000, idle)
