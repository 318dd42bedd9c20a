"""Daemons in network namespaces of our own: zeroconf alone builds a cluster, and a partition
with deploys on both sides heals into one state everywhere.

The network
-----------
Every node is a "host" of its own: a network namespace whose only link, ``eth0``
(``10.200.0.<i+1>/24``), is one end of a veth pair; the other end is a port of a bridge in one
more namespace, the switch. Each daemon listens on port 4000 of its own address, as hosts on a
LAN would. The host's own network is never touched, and deleting the namespaces removes every
link made here (deletion happens in ``finally``, after the daemons are killed).

The partition is made on the switch: the ports of the {2} side move to a second bridge, and
healing moves them back. This was chosen over firewall rules on 127.0.0.1 ports because

* peer links are websockets whose client ends use ephemeral ports: blocking "a port" cuts one
  direction of some links only, and a rule per pair of nodes needs conntrack;
* packets between the sides are dropped silently, as on a real split (no RST, no ICMP), so the
  membership layer's failure detector has to notice by itself;
* it needs nothing beyond iproute2 (no nftables/iptables on this machine).

The test process talks to a daemon from a thread that has entered the daemon's namespace
(``setns(2)`` with ``CLONE_NEWNET`` changes the calling thread only), so no address is ever
added outside the namespaces.
"""

from __future__ import annotations

import contextlib
import ctypes
import hashlib
import json
import os
import queue
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from cluster import READ_TOKEN, tagged_guest
from helpers import REPO_ROOT, daemon_env

pytestmark = [pytest.mark.e2e, pytest.mark.required("netns")]

PORT = 4000
START_TIMEOUT = 60.0
STOP_TIMEOUT = 20.0
HTTP_TIMEOUT = 10.0
POLL = 0.25
CONVERGE_LIMIT = 60.0
"""Generous bound on convergence after healing (a normal run takes a few seconds)."""

_CLONE_NEWNET = 0x40000000
_libc = ctypes.CDLL(None, use_errno=True)


# -- the network ---------------------------------------------------------------------------------


def _ip(*args: str) -> None:
    done = subprocess.run(["ip", *args], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)}: {done.stderr.strip()}")


def _enter_netns(name: str) -> None:
    """Move the calling thread (only it) into network namespace ``name``."""
    fd = os.open(f"/run/netns/{name}", os.O_RDONLY)
    try:
        if _libc.setns(fd, _CLONE_NEWNET) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"setns({name}): {os.strerror(err)}")
    finally:
        os.close(fd)


def _require_netns() -> None:
    if sys.platform != "linux":
        pytest.skip("network namespaces are a Linux feature")
    if shutil.which("ip") is None:
        pytest.skip("the ip command (iproute2) is not installed")
    if os.geteuid() != 0:
        pytest.skip("creating network namespaces needs root")


def address(i: int) -> str:
    """The address of host ``i`` (a private test address, inside our namespaces only)."""
    return f"10.200.0.{i + 1}"


class Lan:
    """A switch namespace with two bridges and ``n`` host namespaces plugged into ``br0``."""

    def __init__(self, n: int) -> None:
        tag = uuid.uuid4().hex[:6]
        self.switch = f"amx-{tag}-sw"
        self.hosts = [f"amx-{tag}-{i}" for i in range(n)]
        self.addresses = [address(i) for i in range(n)]
        self._made: list[str] = []

    def create(self) -> None:
        try:
            _ip("netns", "add", self.switch)
        except RuntimeError as exc:
            pytest.skip(f"ip netns is unusable here: {exc}")
        self._made.append(self.switch)
        sw = ("-n", self.switch)
        for bridge in ("br0", "br1"):
            # No multicast snooping: the bridge floods mDNS to every port, as a plain switch.
            _ip(*sw, "link", "add", bridge, "type", "bridge", "mcast_snooping", "0")
            _ip(*sw, "link", "set", bridge, "up")
        for i, (host, addr) in enumerate(zip(self.hosts, self.addresses, strict=True)):
            _ip("netns", "add", host)
            self._made.append(host)
            h = ("-n", host)
            # Both ends made from here: the host namespace never holds either of them.
            veth = ["eth0", "type", "veth", "peer", "name", f"p{i}", "netns", self.switch]
            _ip(*h, "link", "add", *veth)
            _ip(*sw, "link", "set", f"p{i}", "master", "br0", "up")
            _ip(*h, "addr", "add", f"{addr}/24", "dev", "eth0")
            _ip(*h, "link", "set", "eth0", "up")
            _ip(*h, "link", "set", "lo", "up")
            _ip(*h, "route", "add", "224.0.0.0/4", "dev", "eth0")
            # As a host on a LAN has: a node on every interface advertises this address.
            _ip(*h, "route", "add", "default", "dev", "eth0")

    def split(self, side: list[int]) -> None:
        """Cut the hosts of ``side`` off from the others (they still reach each other)."""
        for i in side:
            _ip("-n", self.switch, "link", "set", f"p{i}", "master", "br1")

    def heal(self) -> None:
        for i in range(len(self.hosts)):
            _ip("-n", self.switch, "link", "set", f"p{i}", "master", "br0")

    def destroy(self) -> None:
        for name in reversed(self._made):
            subprocess.run(["ip", "netns", "del", name], capture_output=True, check=False)
        self._made.clear()


# -- daemons -------------------------------------------------------------------------------------


class Daemon:
    """``assemblexd run`` inside a host namespace; HTTP to it goes through that namespace."""

    def __init__(self, netns: str, address: str, name: str, data_dir: Path, *extra: str) -> None:
        self.netns = netns
        self.name = name
        self.url = f"http://{address}:{PORT}"
        self.lines: list[str] = []
        self._queue: queue.Queue[str | None] = queue.Queue()
        self._http = ThreadPoolExecutor(1, f"http-{name}", _enter_netns, (netns,))
        env = daemon_env()
        argv = [
            "ip", "netns", "exec", netns,
            sys.executable, "-m", "assemblexd", "run",
            "--host", address, "--port", str(PORT), "--insecure",
            "--name", name, "--data-dir", str(data_dir),
            "--log-format", "json",
            "--read-token", READ_TOKEN,  # the tests read peers' ids and URLs in /status
            *extra,
        ]  # fmt: skip
        # ip netns exec execs the command: proc.pid is the daemon itself.
        self.proc = subprocess.Popen(
            argv,
            cwd=REPO_ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        self.id = ""

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.lines.append(line.rstrip("\n"))
            self._queue.put(line)
        self._queue.put(None)

    def log_tail(self, n: int = 30) -> str:
        return "\n".join(self.lines[-n:])

    def wait_listening(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            try:
                line = self._queue.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                pytest.fail(f"{self.name} did not start in {START_TIMEOUT}s:\n{self.log_tail()}")
            if line is None:
                pytest.fail(f"{self.name} exited ({self.proc.wait()}):\n{self.log_tail()}")
            with contextlib.suppress(ValueError):
                if "url" in json.loads(line):
                    break
        self.id = self.get("/status")["node"]["id"]

    def request(
        self, method: str, path: str, body: bytes | None = None, content_type: str | None = None
    ) -> tuple[int, bytes]:
        def go() -> tuple[int, bytes]:
            headers = {"Authorization": f"Bearer {READ_TOKEN}"}
            if content_type:
                headers["Content-Type"] = content_type
            req = urllib.request.Request(self.url + path, body, headers, method=method)
            try:
                with urllib.request.urlopen(req, timeout=HTTP_TIMEOUT) as resp:
                    return resp.status, resp.read()
            except urllib.error.HTTPError as e:
                return e.code, e.read()

        return self._http.submit(go).result()

    def get(self, path: str) -> Any:
        status, body = self.request("GET", path)
        assert status == 200, f"{self.name} GET {path}: {status} {body!r}"
        return json.loads(body)

    def deploy(self, name: str, wasm: bytes) -> dict[str, Any]:
        status, body = self.request("POST", f"/deploy?name={name}", wasm, "application/wasm")
        assert status == 201, f"{self.name} deploy {name}: {status} {body!r}"
        answer: dict[str, Any] = json.loads(body)
        return answer

    def call(self, app: str, payload: bytes = b"") -> tuple[int, bytes]:
        return self.request("POST", f"/call/{app}", payload)

    def stop(self) -> None:
        """SIGTERM (the node unregisters from mDNS and closes its links), SIGKILL if it hangs."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self._reader.join(timeout=5)
        self._http.shutdown(wait=False, cancel_futures=True)


@pytest.fixture
def lan_cluster(tmp_path: Path) -> Iterator[Callable[..., tuple[Lan, list[Daemon]]]]:
    """``lan_cluster(n, extra_args_of(i))``: n daemons on a LAN of namespaces, all listening."""
    _require_netns()
    made: list[tuple[Lan, list[Daemon]]] = []

    def start(n: int, extra: Callable[[int], list[str]]) -> tuple[Lan, list[Daemon]]:
        lan = Lan(n)
        daemons: list[Daemon] = []
        made.append((lan, daemons))
        lan.create()
        for i in range(n):
            daemons.append(
                Daemon(lan.hosts[i], lan.addresses[i], f"n{i}", tmp_path / f"n{i}", *extra(i))
            )
        for d in daemons:
            d.wait_listening()
        return lan, daemons

    try:
        yield start
    finally:
        for lan, daemons in made:
            try:
                for d in daemons:  # all at once: they stop in parallel
                    if d.proc.poll() is None:
                        d.proc.send_signal(signal.SIGTERM)
                for d in daemons:
                    d.stop()
            finally:
                lan.destroy()


def wait_until(
    what: str, check: Callable[[], bool], daemons: list[Daemon], limit: float = 60.0
) -> float:
    """Poll ``check`` until it holds; the seconds it took. Fails with the nodes' logs."""
    start = time.monotonic()
    while not check():
        if time.monotonic() - start > limit:
            logs = "\n".join(f"--- {d.name}\n{d.log_tail()}" for d in daemons)
            pytest.fail(f"not true after {limit:.0f}s: {what}\n{logs}")
        time.sleep(POLL)
    return time.monotonic() - start


# -- views of the cluster ------------------------------------------------------------------------


class Modules:
    """Tagged modules (``cluster.tagged_guest``): a call answers the tag, so it tells which
    module a node really runs (``/status`` gives the running version number only, and both
    sides of a partition can deploy a "v1" of one app)."""

    def __init__(self) -> None:
        self.tags: dict[str, str] = {}

    def __call__(self, tag: str) -> bytes:
        wasm = tagged_guest(tag)
        self.tags[hashlib.sha256(wasm).hexdigest()] = tag
        return wasm


def active_ids(d: Daemon) -> set[str]:
    return {p["id"] for p in d.get("/status")["active"]}


def alive_members(d: Daemon) -> set[str]:
    return {m["id"] for m in d.get("/status")["members"] if m["alive"]}


def running(d: Daemon) -> dict[str, int]:
    """App name -> the version ``d`` says it runs."""
    return {a["name"]: a["running"] for a in d.get("/status")["apps"] if a.get("running")}


def records_of(d: Daemon) -> dict[str, tuple[int, str]]:
    """App name -> (version, sha256) of the records ``d`` holds."""
    return {a["name"]: (a["version"], a["sha256"]) for a in d.get("/apps")}


def converged(daemons: list[Daemon], names: set[str], modules: Modules) -> bool:
    """Every node holds the same record of each app in ``names`` and serves its module."""
    states = [records_of(d) for d in daemons]
    if set(states[0]) != names or any(s != states[0] for s in states[1:]):
        return False
    return all(
        d.call(app) == (200, modules.tags[sha].encode())
        for d in daemons
        for app, (_, sha) in states[0].items()
    )


# -- the tests -----------------------------------------------------------------------------------


@pytest.mark.timeout(240)
def test_zeroconf_alone_makes_a_cluster(
    lan_cluster: Callable[..., tuple[Lan, list[Daemon]]],
) -> None:
    """Three hosts on one bridge, no --join and mDNS on (the default): they find each other."""
    _, nodes = lan_cluster(3, lambda i: [])
    ids = {d.id for d in nodes}

    def meshed() -> bool:
        return all(active_ids(d) == ids - {d.id} and alive_members(d) == ids for d in nodes)

    took = wait_until("each node has the other two as members and neighbours", meshed, nodes, 90)
    print(f"\nzeroconf: 3 nodes meshed {took:.1f}s after all were listening")

    deployed = nodes[0].deploy("hello", tagged_guest("hello-from-n0"))
    took = wait_until(
        "n1 and n2 run hello",
        lambda: all(running(d).get("hello") == deployed["version"] for d in nodes),
        nodes,
    )
    print(f"zeroconf: deployed on n0, running on n1 and n2 {took:.1f}s later")
    for d in nodes:  # a node that says it runs the app serves it at once
        assert d.call("hello") == (200, b"hello-from-n0"), f"{d.name}:\n{d.log_tail()}"


@pytest.mark.timeout(180)
def test_a_node_on_every_interface_advertises_its_address(
    lan_cluster: Callable[..., tuple[Lan, list[Daemon]]],
) -> None:
    """n0 listens on 0.0.0.0 with no --advertise: peers are told its LAN address (not
    127.0.0.1, which on another host is that host), so they can fetch its modules."""
    seed = f"http://{address(0)}:{PORT}"
    _, nodes = lan_cluster(
        2, lambda i: ["--no-mdns", *(["--join", seed] if i else ["--host", "0.0.0.0"])]
    )
    n0, n1 = nodes
    assert n0.get("/status")["node"]["url"] == seed
    wait_until("n1 knows n0", lambda: n0.id in alive_members(n1), nodes, 60)
    (member,) = [m for m in n1.get("/status")["members"] if m["id"] == n0.id]
    assert member["url"] == seed
    deployed = n0.deploy("hello", tagged_guest("hello-from-everywhere"))
    wait_until(
        "n1 fetched the module from n0 and runs it",
        lambda: running(n1).get("hello") == deployed["version"],
        nodes,
    )
    assert n1.call("hello") == (200, b"hello-from-everywhere")


# The hosts cut off as the {2} side. The overlay's shape depends on the order and timing of
# the joins, and a shape where a node's every neighbour is across the cut (and nobody on its
# side knows it) once left that node alone for good (tests/membership/test_membership_heal.py
# finds those shapes deterministically): each run here is another shape, with the seed n0 on
# the small side ([0, 1], [0, 4]) and on the large side ([3, 4], [1, 2]).
SPLITS = [[0, 1], [3, 4], [1, 2], [0, 4]]


@pytest.mark.timeout(300)
@pytest.mark.parametrize("cut", SPLITS, ids=lambda cut: "cut-" + "".join(map(str, cut)))
def test_partition_with_deploys_on_both_sides_heals(
    lan_cluster: Callable[..., tuple[Lan, list[Daemon]]], cut: list[int]
) -> None:
    """Five hosts split {2} | {3} as soon as they know each other; each side deploys; healed,
    all end on one state.

    Joins go through n0 and mDNS is off, so healing is the membership layer's own work, not a
    rediscovery (with mDNS on it does not heal either: zeroconf reports a service once).
    """
    seed = f"http://{address(0)}:{PORT}"
    lan, nodes = lan_cluster(5, lambda i: ["--no-mdns", *(["--join", seed] if i else [])])
    ids = {d.id for d in nodes}
    wait_until(
        "every node knows all five as alive members",
        lambda: all(alive_members(d) == ids for d in nodes),
        nodes,
        90,
    )
    modules = Modules()
    nodes[0].deploy("before", modules("before-1"))
    wait_until("all serve 'before'", lambda: converged(nodes, {"before"}, modules), nodes)

    left = [nodes[i] for i in cut]
    right = [d for i, d in enumerate(nodes) if i not in cut]
    lan.split(cut)
    split_at = time.monotonic()
    # Both sides must notice: every neighbour across the cut is dropped.
    for side in (left, right):
        side_ids = {d.id for d in side}
        wait_until(
            "neighbours across the cut are dropped",
            lambda side=side, side_ids=side_ids: all(active_ids(d) <= side_ids for d in side),
            nodes,
        )
    print(f"\npartition: detected on both sides after {time.monotonic() - split_at:.1f}s")

    # Different apps on each side, and the same app with different modules on both.
    left[0].deploy("left", modules("left-1"))
    left[1].deploy("shared", modules("shared-left-1"))
    right[0].deploy("right", modules("right-1"))
    right[1].deploy("shared", modules("shared-right-1"))
    right[2].deploy("shared", modules("shared-right-2"))
    right[2].deploy("before", modules("before-2-right"))
    wait_until(
        "the left side converges",
        lambda: converged(left, {"before", "left", "shared"}, modules),
        nodes,
    )
    wait_until(
        "the right side converges",
        lambda: converged(right, {"before", "right", "shared"}, modules),
        nodes,
    )
    assert records_of(left[0])["shared"] != records_of(right[0])["shared"]

    lan.heal()
    took = wait_until(
        "all five converge after healing",
        lambda: converged(nodes, {"before", "left", "right", "shared"}, modules),
        nodes,
        CONVERGE_LIMIT,
    )
    print(f"partition: all 5 nodes converged {took:.1f}s after healing")
    final = {app: (v, modules.tags[sha]) for app, (v, sha) in records_of(nodes[0]).items()}
    print(f"partition: final state {final}")
    # The membership graph is whole again.
    wait_until(
        "every node sees all five alive", lambda: all(alive_members(d) == ids for d in nodes), nodes
    )
