"""Faults on a 3-node cluster of real daemons: kill -9 during a deploy, kill -9 of the deploying
node right after its 201, kill -9 in the middle of a module transfer.

What the design promises (docs/cluster.md, docs/operations.md "Faults survived"):

* A deploy answers 201 only once the module and the record are durable on the node that took
  it. A client that got no answer does not know: the deploy may or may not have happened, but
  either way every node ends on one and the same record, and runs it.
* An acknowledged deploy is never lost. The record reaches the others by push right after the
  write, or, if the deploying node died first, when it comes back (it serves the record from
  its disk at once and syncs it to its neighbours). The module is fetched from whoever has it:
  while only the dead node had it, the others keep serving the version they ran before (no
  call fails for it) and retry; they converge once some node can give it.
* A transfer cut by a kill -9 leaves nothing behind: a node stores a fetched module only whole
  and after checking its sha256, then tries another peer, or the same one later.

The cluster lives in a network namespace made for this module (only ``lo``, up), entered by
the test thread alone (``setns(2)`` moves the calling thread only; the daemons it spawns are
born inside). That is what lets the transfer test slow one node's outgoing bytes down with
``tc`` (htb, a u32 filter on that node's port) without touching the host's network. Without
network namespaces (not root, no iproute2) the cluster runs on the host's loopback and the
transfer test is skipped. Every process is killed and the namespace deleted in ``finally``.

Bounded: trials are few, every wait has a deadline (cluster.CONVERGE_TIMEOUT and its kin).
"""

from __future__ import annotations

import contextlib
import ctypes
import hashlib
import json
import os
import random
import re
import shutil
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from functools import partial
from http.client import HTTPException
from typing import Any

import pytest
from cluster import Daemon, LocalCluster, NodeError, http, poll, tagged_guest, whole_cluster

pytestmark = pytest.mark.e2e

BIG = 4 << 20
"""Ballast of the "big" modules (a custom section of random bytes): a few MiB to move."""
SLOW_RATE = "16mbit"
"""What a throttled node sends at, about 2 MB/s: a 4 MiB module takes 2 s per fetcher."""
MID_TRANSFER = 1 << 20
"""Bytes a throttled node must have sent since the deploy before we call it mid-transfer."""
FIGURES: dict[str, Any] = {}
"""What the tests saw, printed at the end of the module (for docs/operations.md)."""

_CLONE_NEWNET = 0x40000000


# -- modules -------------------------------------------------------------------------------------


def _leb128(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def big_guest(tag: str, size: int = BIG) -> bytes:
    """The tagged guest (answers ``tag``) with ``size`` random bytes in a custom section:
    as valid and as fast to compile as the small one, but slow to upload and to fetch."""
    name = b"assemblex-ballast"
    ballast = random.Random(tag).randbytes(size)
    payload = _leb128(len(name)) + name + ballast
    return tagged_guest(tag) + b"\x00" + _leb128(len(payload)) + payload


def sha(wasm: bytes) -> str:
    return hashlib.sha256(wasm).hexdigest()


# -- the network namespace -----------------------------------------------------------------------


def _setns(fd: int) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.setns(fd, _CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"setns: {os.strerror(err)}")


def _run(*argv: str) -> str:
    done = subprocess.run(argv, capture_output=True, text=True, check=False, timeout=20)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)}: {done.stderr.strip()}")
    return done.stdout


class Netns:
    """A network namespace with only ``lo``, which the calling thread enters and leaves."""

    def __init__(self) -> None:
        self.name = f"asx-faults-{uuid.uuid4().hex[:8]}"
        self._home: int | None = None

    def __enter__(self) -> Netns:
        _run("ip", "netns", "add", self.name)
        try:
            _run("ip", "-n", self.name, "link", "set", "lo", "up")
            self._home = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
            fd = os.open(f"/run/netns/{self.name}", os.O_RDONLY)
            try:
                _setns(fd)
            finally:
                os.close(fd)
        except BaseException:
            self.__exit__()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        if self._home is not None:
            _setns(self._home)
            os.close(self._home)
            self._home = None
        subprocess.run(["ip", "netns", "del", self.name], capture_output=True, check=False)

    def tc(self, *args: str) -> str:
        return _run("tc", "-n", self.name, *args)


class Throttle:
    """Slow down what one node sends from its port (blob bodies it serves, its side of the peer
    links dialled to it), nothing else: htb with a u32 filter on the source port."""

    def __init__(self, netns: Netns, port: int, rate: str = SLOW_RATE) -> None:
        self.netns = netns
        self.port = port
        self.rate = rate

    def __enter__(self) -> Throttle:
        tc = self.netns.tc
        tc("qdisc", "add", "dev", "lo", "root", "handle", "1:", "htb", "default", "10")
        try:
            tc(
                "class",
                "add",
                "dev",
                "lo",
                "parent",
                "1:",
                "classid",
                "1:10",
                "htb",
                "rate",
                "10gbit",
                "quantum",
                "200000",
            )
            tc(
                "class",
                "add",
                "dev",
                "lo",
                "parent",
                "1:",
                "classid",
                "1:20",
                "htb",
                "rate",
                self.rate,
                "ceil",
                self.rate,
                "quantum",
                "1514",
            )
            tc(
                "filter",
                "add",
                "dev",
                "lo",
                "parent",
                "1:",
                "protocol",
                "ip",
                "prio",
                "1",
                "u32",
                "match",
                "ip",
                "sport",
                str(self.port),
                "0xffff",
                "flowid",
                "1:20",
            )
        except BaseException:
            self.__exit__()
            raise
        return self  # fmt: skip

    def __exit__(self, *exc: object) -> None:
        with contextlib.suppress(RuntimeError):
            self.netns.tc("qdisc", "del", "dev", "lo", "root")

    def sent(self) -> int:
        """Bytes the throttled port has sent so far."""
        out = self.netns.tc("-s", "class", "show", "dev", "lo", "classid", "1:20")
        found = re.search(r"Sent (\d+) bytes", out)
        return int(found.group(1)) if found else 0


def _netns_usable() -> str | None:
    """Why network namespaces cannot be used here, or None."""
    if os.geteuid() != 0:
        return "needs root"
    if shutil.which("ip") is None or shutil.which("tc") is None:
        return "needs iproute2 (ip, tc)"
    return None


# -- fixtures ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def netns() -> Iterator[Netns | None]:
    if _netns_usable() is not None:
        yield None
        return
    try:
        ns = Netns().__enter__()
    except (OSError, RuntimeError):
        yield None
        return
    try:
        yield ns
    finally:
        ns.__exit__()


@pytest.fixture(scope="module")
def cluster(
    netns: Netns | None, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LocalCluster]:
    local = LocalCluster(tmp_path_factory.mktemp("faults"))
    try:
        local.start(3)
        # node0 is the seed; give it a seed of its own, so that it rejoins after a restart.
        local.nodes[0].join = [local.nodes[1].url]
        yield local
    finally:
        local.close()
        if FIGURES:
            print("\nfault figures:", json.dumps(FIGURES, indent=1, sort_keys=True))


@pytest.fixture(autouse=True)
def _whole_cluster(cluster: LocalCluster, request: pytest.FixtureRequest) -> Iterator[None]:
    """Every test starts with every node up; a failed one reports the nodes' logs."""
    yield from whole_cluster(cluster, request, 60)


# -- helpers -------------------------------------------------------------------------------------


def deploy_raw(node: Daemon, app: str, wasm: bytes, timeout: float = 60.0) -> dict[str, Any]:
    """``POST /deploy``: the 201 answer, or ``{"failed": reason}`` (no answer, or another)."""
    try:
        status, body = http(
            "POST",
            f"{node.url}/deploy?name={app}",
            wasm,
            {"Content-Type": "application/wasm"},
            timeout=timeout,
        )
    except (OSError, HTTPException) as exc:
        return {"failed": repr(exc)}
    if status != 201:
        return {"failed": f"{status} {body[:200]!r}"}
    answer: dict[str, Any] = json.loads(body)
    return answer


def record(node: Daemon, app: str) -> tuple[int, str] | None:
    """(version, sha256) of ``app`` as ``node`` knows it; None if it knows no such app."""
    status, body = http("GET", f"{node.url}/apps/{app}", timeout=10)
    if status == 404:
        return None
    if status != 200:
        raise NodeError(f"{node.name} GET /apps/{app}: {status} {body[:200]!r}")
    data = json.loads(body)
    return int(data["version"]), str(data["sha256"])


def running(node: Daemon, app: str) -> int | None:
    """The version of ``app`` that ``node`` runs now (None: none)."""
    for a in node.status()["apps"]:
        if a["name"] == app:
            return None if a.get("running") is None else int(a["running"])
    return None


def wait_converged(
    cluster: LocalCluster, app: str, tags: dict[str, str], what: str
) -> tuple[int, str] | None:
    """Wait until every node holds one record of ``app`` and runs it (a call answers the tag
    of its module), or no node knows ``app``. Returns that record (None: no app)."""
    nodes = cluster.up

    def check() -> tuple[tuple[int, str] | None] | None:
        records = {record(d, app) for d in nodes}
        if len(records) != 1:
            return None
        (rec,) = records
        if rec is None:
            return (None,)
        version, digest = rec
        for d in nodes:
            if running(d, app) != version:
                return None
            if d.call(app) != (200, tags[digest].encode()):
                return None
        return (rec,)

    return poll(check, what, describe=cluster.describe)[0]


def _deploy_into(answer: dict[str, Any], node: Daemon, app: str, wasm: bytes) -> None:
    answer.update(deploy_raw(node, app, wasm))


def _agree(nodes: list[Daemon], app: str) -> bool:
    return len({record(d, app) for d in nodes}) == 1


def _all_know(nodes: list[Daemon], app: str, rec: tuple[int, str]) -> bool:
    return all(record(d, app) == rec for d in nodes)


def blobs_are_whole(node: Daemon) -> None:
    """Every stored module is complete: its bytes hash to its name; no temp file is left."""
    for path in (node.data_dir / "blobs").iterdir():
        assert not path.name.startswith(".tmp"), f"{node.name} left {path.name}"
        assert sha(path.read_bytes()) == path.name, f"{node.name}: torn blob {path.name}"


# -- kill -9 during a deploy ---------------------------------------------------------------------


@pytest.mark.timeout(300)
def test_kill_during_deploy(cluster: LocalCluster) -> None:
    """kill -9 at a random moment of a deploy (the deploying node, or another one): whatever
    the client was told, every node ends on one record and runs it; an acknowledged deploy is
    that record."""
    nodes = cluster.nodes
    app = "fault-deploy"
    tags: dict[str, str] = {}

    def module(tag: str) -> bytes:
        wasm = big_guest(tag)
        tags[sha(wasm)] = tag
        return wasm

    # Deploys without a fault: the cluster runs them, and the quickest sets the kill window.
    durations = []
    for k in range(3):
        started = time.monotonic()
        first = deploy_raw(nodes[1 + k % 2], app, module(f"{app}-warm{k}"))
        durations.append(time.monotonic() - started)
        assert "failed" not in first, first
        assert wait_converged(cluster, app, tags, "a deploy everywhere") == (
            first["version"],
            first["sha256"],
        )
    window = min(durations)

    rng = random.Random(7)
    trials = []
    # Kills anywhere in the window (and a bit after), then three late in it: between the
    # record's fsync and the answer is where a deploy happens without being acknowledged.
    plan = [("deployer", 0.0, 1.5), ("deployer", 0.0, 1.5), ("bystander", 0.0, 1.5)]
    plan += [("deployer", 0.0, 1.5), ("bystander", 0.0, 1.5)]
    plan += [("deployer", 0.7, 1.0)] * 3
    for i, (victim_kind, low, high) in enumerate(plan):
        deployer = nodes[1 + i % 2]
        victim = deployer if victim_kind == "deployer" else nodes[0]
        delay = rng.uniform(low * window, high * window)
        wasm = module(f"{app}-{i + 1}")
        answer: dict[str, Any] = {}
        thread = threading.Thread(target=_deploy_into, args=(answer, deployer, app, wasm))
        thread.start()
        time.sleep(delay)
        victim.kill()
        thread.join(timeout=90)
        assert not thread.is_alive(), "the deploy request hung"
        acked = "failed" not in answer

        # The survivors agree among themselves before the victim is back: on one record, which
        # they run when one of them has its module (the deploying node survived, or a push
        # and a fetch beat the kill); else they serve the version before it.
        poll(
            partial(_agree, cluster.up, app),
            f"trial {i}: the survivors on one record",
            describe=cluster.describe,
        )
        if victim_kind == "bystander":
            assert wait_converged(cluster, app, tags, f"trial {i}: survivors") == (
                answer["version"],
                answer["sha256"],
            )
        victim.restart()
        cluster.wait_members()
        # A kill between the record and the counter write used to leave the record run by its
        # writer only (the others woke on the counter alone); now every node runs it.
        final = wait_converged(cluster, app, tags, f"trial {i}: one record everywhere")
        assert final is not None
        if acked:
            assert final == (answer["version"], answer["sha256"]), (answer, final)
        else:  # not acknowledged: the old record, or the new one if it was written in time
            assert final[1] in (sha(wasm), trials[-1]["sha"] if trials else first["sha256"])
        for d in cluster.nodes:
            blobs_are_whole(d)
        trials.append(
            {
                "victim": victim_kind,
                "kill_after_s": round(delay, 3),
                "acked": acked,
                "final_is_new": final[1] == sha(wasm),
                "sha": final[1],
            }
        )
    FIGURES["kill_during_deploy"] = {
        "deploy_window_s": round(window, 3),
        "trials": [{k: v for k, v in t.items() if k != "sha"} for t in trials],
    }


# -- kill -9 of the deploying node right after its 201 --------------------------------------------


@pytest.mark.timeout(300)
def test_kill_deployer_right_after_201(cluster: LocalCluster) -> None:
    """The node that answered 201 dies at once. The deploy is not lost: the node serves it from
    its disk when it is back, and every node converges to it. Meanwhile the others serve the
    previous version without a failed call."""
    nodes = cluster.nodes
    app = "fault-ack"
    tags: dict[str, str] = {}
    old = tagged_guest(f"{app}-0")
    tags[sha(old)] = f"{app}-0"
    assert "failed" not in deploy_raw(nodes[0], app, old)
    wait_converged(cluster, app, tags, "the first version everywhere")

    outcomes = []
    for i in range(1, 4):
        deployer = nodes[i % 3]
        others = [d for d in nodes if d is not deployer]
        tag = f"{app}-{i}"
        wasm = tagged_guest(tag)
        tags[sha(wasm)] = tag
        previous = record(others[0], app)
        assert previous is not None
        answer = deploy_raw(deployer, app, wasm)
        deployer.kill()  # right after the 201 was read
        assert "failed" not in answer, answer
        acked = (answer["version"], answer["sha256"])

        # While it is down: the others know the new record (if the push beat the kill) or
        # still the old one, and serve a version they have (the old one, unless they fetched
        # the new one in time). Give the push a moment to show.
        with contextlib.suppress(NodeError):
            poll(partial(_all_know, others, app, acked), "the push", timeout=2.0)
        knew = [record(d, app) == acked for d in others]
        for d in others:
            status, body = d.call(app)
            assert status == 200, (d.name, status, body)
            assert body in (tags[previous[1]].encode(), tag.encode()), (d.name, body)

        restarted = time.monotonic()
        deployer.restart()
        # It serves the acknowledged version from its own disk, before any peer is heard from.
        assert deployer.call(app) == (200, tag.encode())
        assert record(deployer, app) == acked
        cluster.wait_members()
        assert wait_converged(cluster, app, tags, f"acked {tag} everywhere") == acked
        outcomes.append(
            {
                "others_had_record_before_restart": sum(knew),
                "converged_after_restart_s": round(time.monotonic() - restarted, 2),
            }
        )
    FIGURES["kill_deployer_after_201"] = outcomes


# -- kill -9 mid-transfer ------------------------------------------------------------------------


@pytest.mark.required("netns")
@pytest.mark.timeout(300)
def test_kill_mid_module_transfer(cluster: LocalCluster, netns: Netns | None) -> None:
    """A big module moves slowly out of its origin (tc on the origin's port). A kill -9 of the
    origin, then of a fetching node, in the middle of transfers; then a fetch whose first
    source dies and that completes from another peer."""
    if netns is None:
        pytest.skip(f"no network namespace to shape traffic in ({_netns_usable() or 'ip failed'})")
    origin, a, b = cluster.nodes
    app = "fault-fetch"
    tags: dict[str, str] = {}
    figures: dict[str, Any] = {}

    def module(tag: str) -> bytes:
        wasm = big_guest(tag)
        tags[sha(wasm)] = tag
        return wasm

    assert "failed" not in deploy_raw(origin, app, module(f"{app}-0"))
    wait_converged(cluster, app, tags, "the first version everywhere")

    with Throttle(netns, origin.port) as throttle:

        def mid_transfer(since: int, what: str) -> int:
            return poll(
                lambda: (n := throttle.sent() - since) >= MID_TRANSFER and n,
                what,
                describe=cluster.describe,
            )

        # 1. The origin dies while both others fetch from it: nobody else has the module.
        wasm1 = module(f"{app}-1")
        base = throttle.sent()
        ack1 = deploy_raw(origin, app, wasm1)
        assert "failed" not in ack1, ack1
        figures["origin_sent_before_kill"] = mid_transfer(base, "the fetches to be under way")
        origin.kill()
        for d in (a, b):
            assert record(d, app) == (ack1["version"], ack1["sha256"])
            # Still serving the version they had: the cut transfer left nothing half-done.
            assert d.call(app) == (200, f"{app}-0".encode())
            blobs_are_whole(d)
        restarted = time.monotonic()
        origin.restart()
        cluster.wait_members()
        wait_converged(cluster, app, tags, "v1 everywhere once the origin is back")
        figures["origin_back_to_converged_s"] = round(time.monotonic() - restarted, 2)

        # 2. A fetching node dies mid-transfer; it fetches again when it is back.
        wasm2 = module(f"{app}-2")
        base = throttle.sent()
        assert "failed" not in deploy_raw(origin, app, wasm2)
        mid_transfer(base, "the fetches of v2 to be under way")
        a.kill()
        blobs_are_whole(a)
        a.restart()
        cluster.wait_members()
        wait_converged(cluster, app, tags, "v2 everywhere after the fetcher's restart")

        # 3. The first source dies mid-transfer; the fetch completes from another peer.
        a.kill()
        wasm3 = module(f"{app}-3")
        mark = b.mark()
        assert "failed" not in deploy_raw(origin, app, wasm3)
        b.wait_running(app, sha(wasm3), mark)  # b has the module now
        base = throttle.sent()
        a.restart()  # a catches up and asks the origin first (the record names it)
        mid_transfer(base, "a's fetch from the origin to be under way")
        origin.kill()
        started = time.monotonic()
        mark = a.mark()
        a.wait_running(app, sha(wasm3), mark)  # from b, with the origin still down
        figures["fetch_from_other_peer_s"] = round(time.monotonic() - started, 2)
        assert a.call(app) == (200, f"{app}-3".encode())
        origin.restart()
        cluster.wait_members()
        wait_converged(cluster, app, tags, "v3 everywhere")
    for d in cluster.nodes:
        blobs_are_whole(d)
    FIGURES["kill_mid_transfer"] = figures
