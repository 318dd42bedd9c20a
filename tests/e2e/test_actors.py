"""Actors on real daemons: one live instance per key across a 3-node cluster, failover after a
kill -9, alarms, state that survives a restart of the whole cluster, passivation, redeploys,
the limits and errors of the HTTP routes, the metrics, the four SDKs' counters, the cluster
key on ``POST /peer/actors``, the ``assemblexd actor`` command, and each node's live actors
in ``/status`` (JSON and ``assemblexd status``; the HTML page is in test_status_page.py).

Two clusters serve the module: ``three`` (3 nodes, the defaults) and ``solo`` (1 node with
``--actor-idle 1``, a small ``--actor-state-max`` and a cluster key). Every test uses actor
keys (or apps) of its own. The counter is guests/build/rust-counter.wasm (``increment``
answers ``<stored> <memory>``: the count in the actor's state and the one in its instance's
memory); the other SDKs' counters come from ``scripts/build-guests``.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import re
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import msgpack
import pytest
from aiohttp import web
from cluster import Daemon, LocalCluster, poll, whole_cluster
from helpers import guest_wasm, load_wat, run_cli

from assemblexd.actors import wire
from assemblexd.actors.wire import PeerClient
from assemblexd.auth import ACTORS, blob_proof, proof_nonce, reply_mac

pytestmark = pytest.mark.e2e

APP = "counter"
STATE_MAX = 64
CLUSTER_KEY = "e2e-actors-cluster-key-0123456789"
SETTLE = 1.5
"""Seconds for each node to count the others alive for actors after it knows them: it hears
them by their actor heartbeats, every 0.5 s (no answer of a node shows when it has)."""
LANGS = ("rust", "go", "assemblyscript", "zig")


def counter_wasm(lang: str = "rust") -> bytes:
    """The built counter, or a test failure that says how to build it."""
    return guest_wasm(lang, "counter")


def with_custom_section(wasm: bytes, tag: str) -> bytes:
    """``wasm`` with a custom section named ``tag`` appended: the same code, another sha256
    (a redeploy that is a new version)."""
    name = tag.encode()
    content = bytes([len(name)]) + name
    assert len(content) < 128
    return wasm + b"\x00" + bytes([len(content)]) + content


# -- HTTP --------------------------------------------------------------------------------------


def request(
    method: str, url: str, body: bytes | None = None, headers: dict[str, str] | None = None
) -> tuple[int, bytes, dict[str, str]]:
    """Status, body and headers of one request; HTTP errors are answers."""
    req = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return resp.status, resp.read(), dict(resp.headers)
    except urllib.error.HTTPError as e:
        return e.code, e.read(), dict(e.headers)


def actor(
    d: Daemon, key: str, op: str, payload: bytes = b"", app: str = APP
) -> tuple[int, bytes, dict[str, str]]:
    return request("POST", f"{d.url}/actors/{app}/{key}/{op}", payload)


def ok(d: Daemon, key: str, op: str, payload: bytes = b"", app: str = APP) -> str:
    """The text of a successful actor call (fails the test on any other answer)."""
    status, body, _ = actor(d, key, op, payload, app)
    assert status == 200, f"{d.name} {app}/{key}/{op}: {status} {body[:300]!r}"
    return body.decode()


def counts(text: str) -> tuple[int, int]:
    stored, memory = text.split()
    return int(stored), int(memory)


def info(d: Daemon, key: str, app: str = APP) -> dict[str, Any]:
    status, body, _ = request("GET", f"{d.url}/actors/{app}/{key}")
    assert status == 200, f"{d.name} GET /actors/{app}/{key}: {status} {body[:300]!r}"
    data: dict[str, Any] = json.loads(body)
    return data


def metric(d: Daemon, name: str) -> float:
    """The sum of the samples of ``name`` on ``d``'s /metrics (0 when there are none)."""
    status, body, _ = request("GET", d.url + "/metrics")
    assert status == 200, body[:300]
    pattern = re.compile(rf"^{re.escape(name)}(?:\{{[^}}]*\}})? (\S+)$")
    return sum(float(m.group(1)) for m in map(pattern.match, body.decode().splitlines()) if m)


def deploy_and_wait(cluster: LocalCluster, app: str, wasm: bytes) -> None:
    """Deploy ``app`` and wait until every node runs it and knows that every other one does.

    Actors are placed among the members that run the app, as each node's member records say:
    until the records of who runs it reach every node, nodes disagree on an actor's owner,
    and concurrent calls through different nodes activate it on each in turn (each store
    of a deposed activation is refused: the call fails, nothing is counted twice).
    """
    marks = cluster.marks()
    rec = cluster.nodes[0].deploy(app, wasm)
    cluster.wait_running(app, rec["sha256"], marks)
    wait_placement(cluster, app)


def wait_placement(cluster: LocalCluster, app: str) -> None:
    """Wait until every node knows that every node runs ``app``, then for the actors'
    heartbeats to tell each node the others are alive (see ``deploy_and_wait``)."""
    names = {d.name for d in cluster.up}

    def known(d: Daemon) -> bool:
        found = [a for a in d.status()["apps"] if a["name"] == app]
        return bool(found) and set(found[0].get("versions", {})) >= names

    poll(lambda: all(known(d) for d in cluster.up), f"every node to know where {app} runs")
    time.sleep(SETTLE)


# -- clusters ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def three_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    local = LocalCluster(tmp_path_factory.mktemp("three"))
    try:
        local.start(3)
        deploy_and_wait(local, APP, counter_wasm())
        yield local
    finally:
        local.close()


@pytest.fixture(scope="module")
def solo_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    args = ["--actor-idle", "1", "--actor-state-max", str(STATE_MAX)]
    local = LocalCluster(
        tmp_path_factory.mktemp("solo"), args=[*args, "--cluster-key", CLUSTER_KEY]
    )
    try:
        node = local.add()  # alone: start() would wait for a neighbour
        node.start()
        node.wait_listening()
        deploy_and_wait(local, APP, counter_wasm())
        yield local
    finally:
        local.close()


def _whole(cluster: LocalCluster, request: pytest.FixtureRequest) -> Iterator[None]:
    checks = whole_cluster(cluster, request)
    next(checks)
    yield
    with contextlib.suppress(StopIteration):
        next(checks)


@pytest.fixture
def three(three_cluster: LocalCluster, request: pytest.FixtureRequest) -> Iterator[LocalCluster]:
    """The 3-node cluster, every node up; no crash and no unexpected ERROR line in the test.
    A node that an earlier test left down is started again, and the actors placed anew."""
    down = [d for d in three_cluster.nodes if not d.running]
    for _ in _whole(three_cluster, request):
        for d in down:
            d.wait_log(lambda r: str(r.get("msg", "")).startswith(f"running {APP} v"), since=0)
        if down:
            wait_placement(three_cluster, APP)
        yield three_cluster


@pytest.fixture
def solo(solo_cluster: LocalCluster, request: pytest.FixtureRequest) -> Iterator[Daemon]:
    for _ in _whole(solo_cluster, request):
        yield solo_cluster.nodes[0]


# -- one instance ------------------------------------------------------------------------------


@pytest.mark.timeout(300)
def test_concurrent_calls_through_every_node_run_one_at_a_time_on_one_instance(
    three: LocalCluster,
) -> None:
    nodes = three.nodes
    key = "serial"
    calls = 500
    before = {d.name: (metric(d, "assemblex_actor_activations_total"),
                       metric(d, "assemblex_actor_forwarded_total")) for d in nodes}  # fmt: skip

    def one(i: int) -> tuple[str, int, bytes, dict[str, str]]:
        d = nodes[i % len(nodes)]
        status, body, headers = actor(d, key, "increment")
        return d.name, status, body, headers

    started = time.monotonic()
    with ThreadPoolExecutor(max_workers=24) as pool:
        answers = list(pool.map(one, range(calls)))
    took = time.monotonic() - started
    failed = [(n, s, b[:200]) for n, s, b, _ in answers if s != 200]
    ran = Counter(
        (h.get("Assemblex-Actor-Owner"), h.get("Assemblex-Actor-Generation")) for *_, h in answers
    )
    assert not failed, (failed[:10], ran)
    stored = sorted(counts(b.decode())[0] for _, _, b, _ in answers)
    assert stored == list(range(1, calls + 1)), "every increment counted once, none lost"
    owners = {h["Assemblex-Actor-Owner"] for *_, h in answers}
    gens = {h["Assemblex-Actor-Generation"] for *_, h in answers}
    assert len(owners) == 1, owners
    assert len(gens) == 1, gens
    owner = owners.pop()
    # stored and in memory: one activation ran all of them
    assert ok(nodes[1], key, "get") == f"{calls} {calls}"
    view = info(nodes[2], key)
    assert view["owner"] == owner
    assert view["active"] is True
    assert str(view["generation"]) == gens.pop()

    after = {d.name: (metric(d, "assemblex_actor_activations_total"),
                      metric(d, "assemblex_actor_forwarded_total")) for d in nodes}  # fmt: skip
    activations = {n: after[n][0] - before[n][0] for n in after}
    assert activations == {d.name: float(d.name == owner) for d in nodes}
    sent = {d.name: sum(1 for n, *_ in answers if n == d.name) for d in nodes}
    forwarded = {n: after[n][1] - before[n][1] for n in after}
    # One forward per call that reached a node other than the owner (and two more gets' worth:
    # the get through node1 is forwarded when node1 is not the owner).
    want = {n: float(0 if n == owner else sent[n] + (n == nodes[1].name)) for n in sent}
    assert forwarded == want, f"{calls} calls in {took:.1f}s"


# -- failover ----------------------------------------------------------------------------------


class Clients:
    """Threads that call ``increment`` on one actor through the given nodes until stopped,
    recording every answer: (sent, answered, status, stored count or None, owner, gen)."""

    def __init__(self, nodes: list[Daemon], key: str, threads: int = 6, cap: int = 3000) -> None:
        self.nodes = nodes
        self.key = key
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.answers: list[tuple[float, float, int, int | None, str, int]] = []
        self.cap = cap
        self.threads = [threading.Thread(target=self._run, args=(i,)) for i in range(threads)]

    def _run(self, i: int) -> None:
        n = i
        while not self.stop.is_set():
            with self.lock:
                if len(self.answers) >= self.cap:
                    return
            d = self.nodes[n % len(self.nodes)]
            n += 1
            sent = time.monotonic()
            try:
                status, body, headers = actor(d, self.key, "increment")
            except OSError:
                status, body, headers = 0, b"", {}
            done = time.monotonic()
            stored = counts(body.decode())[0] if status == 200 else None
            owner = headers.get("Assemblex-Actor-Owner", "")
            gen = int(headers.get("Assemblex-Actor-Generation", "0") or 0)
            with self.lock:
                self.answers.append((sent, done, status, stored, owner, gen))

    def __enter__(self) -> Clients:
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(timeout=60)

    def acked(self) -> int:
        with self.lock:
            return sum(1 for a in self.answers if a[2] == 200)


@pytest.mark.timeout(300)
def test_a_killed_owner_fails_over_without_losing_or_doubling_an_increment(
    three: LocalCluster,
) -> None:
    key = "failover"
    status, body, headers = actor(three.nodes[0], key, "increment")
    assert status == 200, body
    first = counts(body.decode())[0]
    old_owner = headers["Assemblex-Actor-Owner"]
    old_gen = int(headers["Assemblex-Actor-Generation"])
    assert info(three.nodes[1], key)["owner"] == old_owner
    victim = next(d for d in three.nodes if d.name == old_owner)
    survivors = [d for d in three.nodes if d is not victim]
    alarms_before = {d.name: metric(d, "assemblex_actor_alarms_total") for d in survivors}

    with Clients(survivors, key) as clients:
        poll(lambda: clients.acked() >= 20, "20 increments before the kill")
        assert ok(survivors[0], key, "set_alarm", b"1500") == "ok"
        killed_at = time.monotonic()
        victim.kill()
        # Calls go on through the survivors; the increments after the failover and the
        # alarm's own increment land on the new owner.
        poll(
            lambda: any(a[2] == 200 and a[0] > killed_at for a in list(clients.answers)),
            "a successful call after the kill",
        )
        time.sleep(3.0)

    answers = clients.answers
    statuses = {a[2] for a in answers}
    # 200, or 503: a call forwarded to the owner when it died may or may not have run there
    # (its outcome is unknown, and the node says so), and a call that found no owner while
    # the dead node's lease ran out was not run. Nothing else is allowed.
    assert statuses <= {200, 503}, sorted(statuses)
    acked = [first] + [a[3] for a in answers if a[2] == 200 and a[3] is not None]
    assert len(acked) == len(set(acked)), "an acknowledged increment was counted twice"
    recovered = min(a[1] for a in answers if a[2] == 200 and a[0] > killed_at)
    assert recovered - killed_at <= 5.0, f"calls succeeded again {recovered - killed_at:.1f}s after"
    new = [a for a in answers if a[2] == 200 and a[0] > killed_at]
    new_owners = {a[4] for a in new}
    assert len(new_owners) == 1, new_owners
    assert old_owner not in new_owners
    new_owner = new_owners.pop()
    assert min(a[5] for a in new) > old_gen

    # The alarm set just before the kill fires on the new owner: one increment more than the
    # increments made (each 503 may or may not have made one).
    poll(lambda: info(survivors[0], key)["alarm_at"] is None, "the alarm to fire")
    view = info(survivors[1], key)
    assert view["owner"] == new_owner, view
    assert view["generation"] > old_gen, view
    final = counts(ok(survivors[0], key, "get"))[0]
    assert final >= max(acked)
    unknown = sum(1 for a in answers if a[2] == 503)
    assert 1 <= final - len(acked) <= 1 + unknown, (final, len(acked), unknown)
    alarms = {
        d.name: metric(d, "assemblex_actor_alarms_total") - alarms_before[d.name] for d in survivors
    }
    assert alarms == {d.name: float(d.name == new_owner) for d in survivors}, "fired once, there"


# -- routes ------------------------------------------------------------------------------------


BAD_KEYS = {
    "too long": "k" * 201,
    "a space": "a%20b",
    "an encoded slash": "a%2Fb",
    "non-ASCII": urllib.parse.quote("ключ"),
}


def test_actor_info_before_and_after_calls_and_bad_keys(three: LocalCluster) -> None:
    a, b, c = three.nodes
    key = "info-" + "k" * 195  # 200 characters: the longest key
    before = info(a, key)
    assert (before["active"], before["generation"], before["alarm_at"]) == (False, 0, None)
    assert before["owner"] in {d.name for d in three.nodes}
    assert info(b, key)["owner"] == before["owner"]
    status, body, headers = actor(c, key, "increment")
    assert (status, body) == (200, b"1 1")
    assert headers["Assemblex-Actor-Owner"] == before["owner"], "placement is the same for all"
    gen = int(headers["Assemblex-Actor-Generation"])
    assert gen > 0
    for d in three.nodes:
        assert info(d, key) == {
            "owner": before["owner"], "generation": gen, "active": True, "alarm_at": None
        }  # fmt: skip
    assert ok(a, key, "key") == key

    for what, bad in BAD_KEYS.items():
        for method, path in (("GET", f"/actors/{APP}/{bad}"), ("POST", f"/actors/{APP}/{bad}/get")):
            status, body, _ = request(method, a.url + path)
            assert status == 400, f"{what}: {method} {path[:60]}: {status} {body[:200]!r}"
    status, body, _ = request("GET", f"{a.url}/actors/no-such-app/k")
    assert status == 404, body


def test_a_plain_call_of_an_actor_op_fails_with_the_host_error(three: LocalCluster) -> None:
    status, body = three.nodes[0].call(APP, "increment")
    assert status == 500, body
    assert "actor.load: not in an actor call" in json.loads(body)["message"]


@pytest.mark.timeout(120)
def test_a_state_over_actor_state_max_fails_naming_the_limit(solo: Daemon) -> None:
    app = "storer"
    rec = solo.deploy(app, load_wat("actor_store"))
    solo.wait_running(app, rec["sha256"], 0)
    assert ok(solo, "s1", "put", b"x" * STATE_MAX, app=app) == ""
    status, body, _ = actor(solo, "s1", "put", b"x" * (STATE_MAX + 1), app=app)
    assert status == 500, body
    message = json.loads(body)["message"]
    assert f"{STATE_MAX + 1} bytes is over the {STATE_MAX}-byte limit" in message
    assert "--actor-state-max" in message


# -- durability --------------------------------------------------------------------------------


@pytest.mark.timeout(400)
def test_state_and_alarms_survive_a_restart_of_the_whole_cluster(three: LocalCluster) -> None:
    a = three.nodes[0]
    for i in range(1, 4):
        assert counts(ok(a, "durable", "increment"))[0] == i
    assert ok(a, "alarmed", "increment") == "1 1"
    assert ok(a, "alarmed", "set_alarm", b"10000") == "ok"
    assert info(a, "alarmed")["alarm_at"] is not None

    for d in three.nodes:
        assert d.stop() == 0
    three.nodes[0].restart()
    for d in three.nodes[1:]:
        d.start()
    for d in three.nodes[1:]:
        d.wait_listening()
    three.wait_members()

    # A new activation: the stored count is back, the instance's memory starts over.
    assert ok(three.nodes[1], "durable", "get") == "3 0"
    poll(
        lambda: counts(ok(three.nodes[2], "alarmed", "get"))[0] == 2 or None,
        "the alarm set before the restart to fire",
    )
    assert info(a, "alarmed")["alarm_at"] is None
    # It fired after the restart (metrics start over with each process).
    assert sum(metric(d, "assemblex_actor_alarms_total") for d in three.nodes) == 1


@pytest.mark.timeout(120)
def test_an_idle_actor_is_passivated_and_its_state_kept(solo: Daemon) -> None:
    assert ok(solo, "idle", "increment") == "1 1"
    assert ok(solo, "idle", "increment") == "2 2"
    assert info(solo, "idle")["active"] is True
    poll(lambda: info(solo, "idle")["active"] is False, "passivation after --actor-idle 1")
    assert metric(solo, "assemblex_actors_active") == 0
    # A new instance: memory starts at 1, the stored count goes on.
    assert ok(solo, "idle", "increment") == "3 1"


@pytest.mark.timeout(120)
def test_a_redeploy_keeps_the_stored_count(solo: Daemon) -> None:
    app = "recounter"
    rec = solo.deploy(app, counter_wasm())
    solo.wait_running(app, rec["sha256"], 0)
    assert ok(solo, "r", "increment", app=app) == "1 1"
    assert ok(solo, "r", "increment", app=app) == "2 2"
    mark = solo.mark()
    rec = solo.deploy(app, with_custom_section(counter_wasm(), "v2"))
    solo.wait_running(app, rec["sha256"], mark)
    assert counts(ok(solo, "r", "increment", app=app)) == (3, 1)


@pytest.mark.timeout(120)
def test_an_alarm_fires_once_and_is_counted(solo: Daemon) -> None:
    before = metric(solo, "assemblex_actor_alarms_total")
    assert ok(solo, "ring", "increment") == "1 1"
    assert ok(solo, "ring", "set_alarm", b"200") == "ok"
    poll(lambda: counts(ok(solo, "ring", "get"))[0] == 2 or None, "the alarm to fire")
    time.sleep(1.0)
    assert counts(ok(solo, "ring", "get"))[0] == 2, "an alarm fires once"
    assert metric(solo, "assemblex_actor_alarms_total") - before == 1
    assert ok(solo, "ring", "set_alarm", b"500") == "ok"
    assert ok(solo, "ring", "cancel_alarm") == "ok"
    assert info(solo, "ring")["alarm_at"] is None
    time.sleep(1.0)
    assert counts(ok(solo, "ring", "get"))[0] == 2, "a cancelled alarm does not fire"


# -- the SDKs ----------------------------------------------------------------------------------


@pytest.mark.timeout(180)
@pytest.mark.parametrize("lang", LANGS)
def test_each_sdk_counter_as_an_actor(solo: Daemon, lang: str) -> None:
    app = f"counter-{lang}"
    rec = solo.deploy(app, counter_wasm(lang))
    solo.wait_running(app, rec["sha256"], 0)
    assert ok(solo, "k1", "increment", app=app) == "1 1"
    assert ok(solo, "k1", "increment", app=app) == "2 2"
    assert ok(solo, "k1", "key", app=app) == "k1"
    assert ok(solo, "k2", "increment", app=app) == "1 1"
    assert ok(solo, "k1", "get", app=app) == "2 2"


# -- the cluster key ---------------------------------------------------------------------------


def _peer_post(d: Daemon, body: bytes, proof: str | None) -> int:
    headers = {"Content-Type": "application/msgpack"}
    if proof is not None:
        headers["Authorization"] = proof
    return request("POST", d.url + wire.PATH, body, headers)[0]


def test_peer_actor_messages_need_a_fresh_proof_for_this_node(solo: Daemon) -> None:
    node_id = (solo.data_dir / "node_id").read_text().strip()  # /status shows an alias
    body = wire.encode({"t": "info", "app": APP, "key": "proof"})
    digest = hashlib.sha256(body).hexdigest()
    assert _peer_post(solo, body, None) == 401
    other = blob_proof(CLUSTER_KEY, "another-node", digest, time.time(), purpose=ACTORS)
    assert _peer_post(solo, body, other) == 401
    wrong_key = blob_proof("not-the-key", node_id, digest, time.time(), purpose=ACTORS)
    assert _peer_post(solo, body, wrong_key) == 401
    proof = blob_proof(CLUSTER_KEY, node_id, digest, time.time(), purpose=ACTORS)
    assert _peer_post(solo, body, proof) == 200
    assert _peer_post(solo, body, proof) == 401, "a replayed proof"
    for_blobs = blob_proof(CLUSTER_KEY, node_id, digest, time.time())
    assert _peer_post(solo, body, for_blobs) == 401, "a proof for another purpose"


@pytest.mark.parametrize("good", [True, False], ids=["right-mac", "wrong-mac"])
def test_the_peer_client_refuses_an_answer_without_the_right_mac(good: bool) -> None:
    answer = msgpack.packb({"ok": True}, use_bin_type=True)

    async def handler(request: web.Request) -> web.Response:
        nonce = proof_nonce(request.headers.get("Authorization", ""))
        key = CLUSTER_KEY if good else "not-the-key"
        return web.Response(body=answer, headers={wire.REPLY_HEADER: reply_mac(key, nonce, answer)})

    async def main() -> dict[str, Any]:
        app = web.Application()
        app.router.add_post(wire.PATH, handler)
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        client = PeerClient(CLUSTER_KEY)
        try:
            return await client.send("peer", f"http://127.0.0.1:{port}", {"t": "hb"}, limit=5)
        finally:
            await client.close()
            await runner.cleanup()

    if good:
        assert asyncio.run(main()) == {"ok": True}
    else:
        with pytest.raises(ValueError, match="not proven by the cluster key"):
            asyncio.run(main())


# -- the CLI and /status -----------------------------------------------------------------------


def cli(*argv: str) -> tuple[int, str, str]:
    done = run_cli(*argv)
    return done.returncode, done.stdout, done.stderr


def test_the_actor_command_calls_and_shows_an_actor(solo: Daemon, tmp_path: Path) -> None:
    url = ("--url", solo.url)
    assert cli("actor", APP, "clik", "increment", *url) == (0, "1 1", "")
    assert cli("actor", APP, "clik", "increment", *url) == (0, "2 2", "")
    assert cli("actor", APP, "clik", "set_alarm", "--data", "60000", *url) == (0, "ok", "")
    rc, out, err = cli("actor", APP, "clik", *url)
    assert (rc, err) == (0, "")
    lines = out.splitlines()
    assert lines[:3] == [
        f"actor       {APP}/clik",
        f"owner       {solo.name}",
        f"generation  {info(solo, 'clik')['generation']}",
    ]
    # "yes", or passivated already (--actor-idle 1, and the command takes a while to start)
    assert lines[3] in ("active      yes", "active      no (passivated, or never called)")
    assert lines[4].startswith("alarm       ")
    assert lines[4].endswith("s)")  # "(in 59s)"
    rc, out, _ = cli("actor", APP, "clik", "--json", *url)
    assert rc == 0
    shown = json.loads(out)
    assert isinstance(shown.pop("active"), bool)  # --actor-idle 1: it may be passivated by now
    now = info(solo, "clik")
    del now["active"]
    assert shown == now
    payload = tmp_path / "ms"
    payload.write_text("120000")
    assert cli("actor", APP, "clik", "set_alarm", "--data-file", str(payload), *url)[:2] == (
        0,
        "ok",
    )
    assert cli("actor", APP, "clik", "cancel_alarm", *url)[:2] == (0, "ok")
    assert "alarm       none" in cli("actor", APP, "clik", *url)[1]

    rc, out, err = cli("actor", APP, "a b", "get", *url)
    assert (rc, out) == (1, "")
    assert err.startswith("assemblexd actor: error: actor key must be 1-200 characters")
    rc, out, err = cli("actor", "no-such-app", "k", "get", *url)
    assert (rc, out) == (1, "")
    assert err.startswith("assemblexd actor: error: ")
    assert "no-such-app" in err


def own_actors(d: Daemon) -> int:
    """The live actor count ``d`` shows for itself in its /status."""
    status = d.status()
    me = status["node"]["id"]
    count = next(m["actors"] for m in status["members"] if m["id"] == me)
    assert isinstance(count, int)
    return count


def test_status_shows_the_live_actors_of_each_node(three: LocalCluster) -> None:
    key = "status-view"
    owner_name = info(three.nodes[0], key)["owner"]
    owner = next(d for d in three.nodes if d.name == owner_name)
    before = own_actors(owner)
    status, body, headers = actor(three.nodes[0], key, "increment")
    assert status == 200, body
    assert headers["Assemblex-Actor-Owner"] == owner_name
    # The node's own count is live; the others' records carry theirs (refreshed with them).
    assert own_actors(owner) == before + 1
    for d in three.nodes:
        members = d.status()["members"]
        assert len(members) == 3
        assert all(isinstance(m.get("actors"), int) for m in members), members
    # The terminal view: each member's line with its count.
    rc, out, err = cli("status", "--url", owner.url)
    assert (rc, err) == (0, "")
    mine = [line for line in out.splitlines() if line.startswith("  * ")]
    assert len(mine) == 1
    assert owner_name in mine[0]
    want = f"{before + 1} actor{'' if before + 1 == 1 else 's'}"
    assert f" {want} " in mine[0], mine[0]


def test_a_lone_node_counts_its_actors_until_they_are_passivated(solo: Daemon) -> None:
    assert ok(solo, "lone-1", "increment") == "1 1"
    assert ok(solo, "lone-2", "increment") == "1 1"
    assert own_actors(solo) >= 2
    poll(lambda: own_actors(solo) == 0, "passivation of every actor (--actor-idle 1)")
