"""A cluster of real daemons on 127.0.0.1: deployments replicate, reload without a failed call,
survive a killed node, reach a late joiner, converge under concurrent deploys, roll back and
undeploy everywhere.

One cluster of five nodes serves the whole module (``cluster`` fixture); every test uses apps of
its own, and a test that stops a node starts it again. The late joiner stays, so the tests after
it run on six nodes. Waits are on the daemons' log lines (``running <app> v<n> (<sha>)``), or on
``cluster.poll`` where only a node's answers can tell (see ``cluster.py``).
"""

from __future__ import annotations

import hashlib
import json
import threading
from collections import Counter
from collections.abc import Iterator
from http.client import HTTPConnection, HTTPException

import pytest
from cluster import (
    CONVERGE_TIMEOUT,
    READ_TOKEN,
    Daemon,
    LocalCluster,
    NodeError,
    http,
    poll,
    tagged_guest,
    whole_cluster,
)

pytestmark = pytest.mark.e2e

NODES = 5


def sha(wasm: bytes) -> str:
    return hashlib.sha256(wasm).hexdigest()


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    # The read token: the tests check the peers' URLs, which only a reader with it sees.
    local = LocalCluster(tmp_path_factory.mktemp("cluster"), args=["--read-token", READ_TOKEN])
    try:
        local.start(NODES)
        yield local
    finally:
        local.close()


@pytest.fixture(autouse=True)
def _whole_cluster(cluster: LocalCluster, request: pytest.FixtureRequest) -> Iterator[None]:
    """Every test starts with every node up; a failed one reports the nodes' logs."""
    yield from whole_cluster(cluster, request)


def deploy_everywhere(cluster: LocalCluster, on: Daemon, app: str, wasm: bytes) -> int:
    """Deploy on ``on`` and wait until every running node runs it; the version."""
    marks = cluster.marks()
    answer = on.deploy(app, wasm)
    versions = cluster.wait_running(app, answer["sha256"], marks)
    assert set(versions.values()) == {answer["version"]}, versions
    return int(answer["version"])


def assert_serves(nodes: list[Daemon], app: str, body: bytes) -> None:
    answers = {d.name: d.call(app) for d in nodes}
    assert answers == {d.name: (200, body) for d in nodes}


@pytest.mark.timeout(180)  # includes starting the module's cluster
def test_deploy_on_one_call_on_all(cluster: LocalCluster) -> None:
    nodes = cluster.up
    wasm = tagged_guest("hello-1")
    version = deploy_everywhere(cluster, nodes[2], "hello", wasm)
    assert version == 1
    assert_serves(nodes, "hello", b"hello-1")

    # /status: every node knows every member with its active view (the graph), and in time
    # the version each node runs (members rewrite their record when that changes).
    names = {d.name for d in nodes}

    def versions_known() -> bool:
        status = nodes[0].status()
        (app,) = [a for a in status["apps"] if a["name"] == "hello"]
        return bool(app["versions"] == dict.fromkeys(names, 1))

    poll(versions_known, "every node's version of hello in node0's /status")
    for d in nodes:
        status = d.status()
        assert status["node"]["name"] == d.name
        members = {m["name"]: m for m in status["members"]}
        assert set(members) == names
        ids = {m["id"] for m in members.values()}
        for m in members.values():
            assert m["alive"], m
            assert m["url"] == next(n.url for n in nodes if n.name == m["name"])
            assert set(m["active"]) <= ids - {m["id"]}, m
        assert {p["id"] for p in status["active"]} <= ids

    # /metrics: the cluster side of every node. The module reached the other nodes by fetch.
    for d in nodes:
        status, body = http("GET", f"{d.url}/metrics", headers=d.read_headers)
        assert status == 200
        samples = _samples(body.decode())
        assert samples['assemblex_membership_view{view="active"}'] >= 1, d.name
        assert samples['assemblex_sync_bytes_total{direction="sent"}'] > 0, d.name
        assert samples['assemblex_sync_bytes_total{direction="received"}'] > 0, d.name
        # Nothing floods a peer here: no link was read slower, and the counters are exported.
        assert samples['assemblex_peer_read_waits_total{reason="paced"}'] == 0, d.name
        assert 'assemblex_peer_read_waits_total{reason="held"}' in samples, d.name
        fetched = samples["assemblex_blob_fetches_total"]
        assert fetched == (0 if d is nodes[2] else 1), d.name


def _samples(text: str) -> dict[str, float]:
    """Prometheus text as {'name{labels}': value}."""
    out = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            out[name] = float(value)
    return out


class Load:
    """Client threads calling one app on every node in a loop, over keep-alive connections.

    Per node one thread calls with an empty payload and one with ``20`` (the guest sleeps
    20 ms on the host), so calls are in flight whenever a new version is swapped in.
    """

    def __init__(self, nodes: list[Daemon], app: str) -> None:
        self.app = app
        self.calls = 0
        self.failures: list[str] = []
        self.seen: dict[tuple[str, bytes], int] = Counter()
        self._stop = threading.Event()
        self._cond = threading.Condition()
        self._threads = [
            threading.Thread(target=self._run, args=(d, payload), daemon=True)
            for d in nodes
            for payload in (b"", b"20")
        ]

    def __enter__(self) -> Load:
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(timeout=30)

    def _run(self, node: Daemon, payload: bytes) -> None:
        conn = HTTPConnection("127.0.0.1", node.port, timeout=30)
        path = f"/call/{self.app}/main"
        while not self._stop.is_set():
            try:
                conn.request("POST", path, body=payload)
                resp = conn.getresponse()
                body = resp.read()
                outcome = None if resp.status == 200 else f"{resp.status} {body[:200]!r}"
            except (OSError, HTTPException) as exc:
                outcome, body = repr(exc), b""
                conn.close()
            with self._cond:
                self.calls += 1
                if outcome is None:
                    self.seen[(node.name, body)] += 1
                else:
                    self.failures.append(f"{node.name}: {outcome}")
                self._cond.notify_all()
        conn.close()

    def wait_answered(self, nodes: list[Daemon], body: bytes, count: int = 3) -> None:
        """Wait until every node has answered ``body`` at least ``count`` times to the load."""

        def done() -> bool:
            return all(self.seen[(d.name, body)] >= count for d in nodes)

        with self._cond:
            if not self._cond.wait_for(done, timeout=CONVERGE_TIMEOUT):
                missing = [d.name for d in nodes if self.seen[(d.name, body)] < count]
                raise NodeError(f"no {body!r} from {missing} under load; {self.failures[:5]}")


@pytest.mark.timeout(150)
def test_redeploy_under_load_fails_no_call(cluster: LocalCluster) -> None:
    nodes = cluster.up
    deploy_everywhere(cluster, nodes[0], "busy", tagged_guest("busy-0"))
    redeploys = 4
    with Load(nodes, "busy") as load:
        load.wait_answered(nodes, b"busy-0")
        for i in range(1, redeploys + 1):
            tag = f"busy-{i}"
            deploy_everywhere(cluster, nodes[i % len(nodes)], "busy", tagged_guest(tag))
            load.wait_answered(nodes, tag.encode())
    assert load.failures == [], f"{len(load.failures)} of {load.calls} calls failed"
    assert load.calls > 0
    for d in nodes:
        assert load.seen[(d.name, f"busy-{redeploys}".encode())] > 0


@pytest.mark.timeout(120)
def test_killed_node_restarts_and_catches_up(cluster: LocalCluster) -> None:
    nodes = cluster.up
    victim = nodes[3]
    others = [d for d in nodes if d is not victim]
    deploy_everywhere(cluster, nodes[0], "phoenix", tagged_guest("phoenix-1"))

    victim.kill()
    # /status: every other node comes to show the victim not alive, and the rest alive.
    poll(
        lambda: all(_alive(d) == {m.name: m is not victim for m in nodes} for d in others),
        f"{victim.name} not alive in the others' /status",
        describe=cluster.describe,
    )
    new = tagged_guest("phoenix-2")
    version = deploy_everywhere(cluster, nodes[0], "phoenix", new)
    assert_serves(others, "phoenix", b"phoenix-2")

    victim.restart()
    # It serves what it has on disk at once (the old version, or already the new one) ...
    status, body = victim.call("phoenix")
    assert (status, body) in {(200, b"phoenix-1"), (200, b"phoenix-2")}
    # ... then catches up from its peers.
    assert victim.wait_running("phoenix", sha(new), since=0) == version
    assert victim.call("phoenix") == (200, b"phoenix-2")
    cluster.wait_members()  # alive again everywhere


def _alive(d: Daemon) -> dict[str, bool]:
    """``alive`` of every member in ``d``'s /status, by name."""
    return {str(m["name"]): bool(m["alive"]) for m in d.status()["members"]}


@pytest.mark.timeout(120)
def test_late_joiner_receives_every_app(cluster: LocalCluster) -> None:
    nodes = cluster.up
    deploy_everywhere(cluster, nodes[1], "late-a", tagged_guest("late-a-1"))
    deploy_everywhere(cluster, nodes[4], "late-b", tagged_guest("late-b-1"))
    deploy_everywhere(cluster, nodes[2], "late-b", tagged_guest("late-b-2"))
    apps = {a["name"]: a for a in nodes[0].get_json("/apps")}
    assert {"late-a", "late-b"} <= set(apps)

    joiner = cluster.add(join=nodes[3])  # through some node, not the first seed
    joiner.start()
    joiner.wait_listening()
    for name, record in sorted(apps.items()):
        assert joiner.wait_running(name, record["sha256"], since=0) == record["version"], name
    assert {a["name"]: a["sha256"] for a in joiner.get_json("/apps")} == {
        n: a["sha256"] for n, a in apps.items()
    }
    assert joiner.call("late-a") == (200, b"late-a-1")
    assert joiner.call("late-b") == (200, b"late-b-2")
    cluster.wait_members()


@pytest.mark.timeout(120)
def test_simultaneous_deploys_converge(cluster: LocalCluster) -> None:
    nodes = cluster.up
    first, second = nodes[1], nodes[3]
    modules = {tag: tagged_guest(tag) for tag in ("race-left", "race-right")}
    tag_of = {sha(wasm): tag.encode() for tag, wasm in modules.items()}
    answers: dict[str, dict[str, object]] = {}
    errors: list[BaseException] = []
    barrier = threading.Barrier(2)

    def deploy(node: Daemon, tag: str) -> None:
        try:
            barrier.wait(timeout=10)
            answers[tag] = node.deploy("race", modules[tag])
        except BaseException as exc:  # reported below, on the test's thread
            errors.append(exc)

    threads = [
        threading.Thread(target=deploy, args=(first, "race-left")),
        threading.Thread(target=deploy, args=(second, "race-right")),
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert errors == []
    assert len(answers) == 2

    def converged() -> dict[str, object] | None:
        records = [d.get_json("/apps/race") for d in nodes]
        if len({(r["sha256"], r["version"]) for r in records}) != 1:
            return None
        winner = records[0]
        expected = tag_of[str(winner["sha256"])]
        if any(d.call("race") != (200, expected) for d in nodes):
            return None
        return dict(winner)

    winner = poll(converged, "one record of 'race' served everywhere", describe=cluster.describe)
    assert winner["sha256"] in {str(a["sha256"]) for a in answers.values()}
    # Both deploys were answered 201: the one that lost (concurrent or not) is in the history
    # of the record everywhere, and can be rolled back to.
    (loser,) = [str(a["sha256"]) for a in answers.values() if a["sha256"] != winner["sha256"]]

    def loser_in_history() -> bool:
        histories = [[h["sha256"] for h in d.get_json("/apps/race")["history"]] for d in nodes]
        return all(h == histories[0] and loser in h for h in histories)

    poll(loser_in_history, "the losing deploy in every node's history", describe=cluster.describe)
    status, body = http("POST", f"{nodes[0].url}/apps/race/rollback")
    assert status == 200, body
    assert json.loads(body)["sha256"] == loser
    poll(
        lambda: all(d.call("race") == (200, tag_of[loser]) for d in nodes),
        "the losing deploy served everywhere after a rollback",
        describe=cluster.describe,
    )


@pytest.mark.timeout(120)
def test_rollback_everywhere(cluster: LocalCluster) -> None:
    nodes = cluster.up
    modules = [tagged_guest(f"rb-{i}") for i in (1, 2, 3)]
    for i, wasm in enumerate(modules):
        deploy_everywhere(cluster, nodes[i], "rb", wasm)
    assert_serves(nodes, "rb", b"rb-3")

    for back_to, via in ((2, nodes[-1]), (1, nodes[0])):
        marks = cluster.marks()
        status, body = http("POST", f"{via.url}/apps/rb/rollback")
        assert status == 200, body
        answer = json.loads(body)
        assert answer["sha256"] == sha(modules[back_to - 1])
        versions = cluster.wait_running("rb", answer["sha256"], marks)
        assert set(versions.values()) == {answer["version"]}
        assert_serves(nodes, "rb", f"rb-{back_to}".encode())

    # The history is used up: nothing older to go back to.
    status, body = http("POST", f"{nodes[2].url}/apps/rb/rollback")
    assert status == 400, body
    assert_serves(nodes, "rb", b"rb-1")


@pytest.mark.timeout(120)
def test_undeploy_everywhere(cluster: LocalCluster) -> None:
    nodes = cluster.up
    deploy_everywhere(cluster, nodes[0], "gone", tagged_guest("gone-1"))
    marks = cluster.marks()
    status, body = http("DELETE", f"{nodes[-1].url}/apps/gone")
    assert status == 204, body
    for d in nodes:
        d.wait_unloaded("gone", marks[d.name])
    for d in nodes:
        status, body = d.call("gone")
        assert status == 404, (d.name, body)
        assert json.loads(body)["error"] == "unknown_app"
        assert http("GET", f"{d.url}/apps/gone", headers=d.read_headers)[0] == 404
        assert "gone" not in {a["name"] for a in d.get_json("/apps")}
