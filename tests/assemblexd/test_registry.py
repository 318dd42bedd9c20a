"""Apps in the replicated store: versions, rollback, undeploy, and supervisors that follow
records written elsewhere (two nodes in one process, their replicas synced by hand)."""

from __future__ import annotations

import asyncio
import dataclasses
import json
from collections.abc import Callable
from pathlib import Path

import pytest
from helpers import FakePeers, Wat

from assemblexd import apps as apps_module
from assemblexd.config import Config
from assemblexd.errors import BadRequest, UnknownApp
from assemblexd.node import Node
from assemblexd.records import AppRecord


def sync(a: Node, b: Node) -> None:
    """Full anti-entropy exchange between the two nodes' replicas."""
    b.replica.merge(a.replica.delta(b.replica.digest()))
    a.replica.merge(b.replica.delta(a.replica.digest()))


async def until(node: Node, predicate: Callable[[], bool], limit: float = 5.0) -> None:
    """Wait until ``predicate()`` holds, re-checked whenever ``node`` changes what it runs."""
    changed = asyncio.Event()
    peers(node).on_apps_changed.append(changed.set)
    try:
        async with asyncio.timeout(limit):
            while not predicate():
                await changed.wait()
                changed.clear()
    finally:
        peers(node).on_apps_changed.remove(changed.set)


def peers(node: Node) -> FakePeers:
    """The fake peers ``node`` was made with."""
    assert isinstance(node.peers, FakePeers)
    return node.peers


async def test_versions_and_rollback(tmp_path: Path, wat: Wat) -> None:
    async with Node(Config(data_dir=tmp_path)) as node:
        v1 = await node.deploy("app", wat("echo"))
        v2 = await node.deploy("app", wat("host_echo"), capabilities=["host"])
        assert (v1.version, v2.version) == (1, 2)
        assert [h.version for h in v2.history] == [1]
        assert await node.call("app", "main", b"x") == b"x"  # host_echo
        v3 = await node.rollback("app")
        assert (v3.version, v3.sha256, v3.capabilities) == (3, v1.sha256, v1.capabilities)
        with pytest.raises(Exception, match="unknown operation: main2"):
            await node.call("app", "main2", b"")  # echo again: it knows only echo/main
        assert node.app("app") == v3
        with pytest.raises(BadRequest, match="no previous version"):
            await node.rollback("app")
        with pytest.raises(UnknownApp):
            await node.rollback("ghost")


async def test_history_is_bounded(tmp_path: Path, wat: Wat) -> None:
    async with Node(Config(data_dir=tmp_path)) as node:
        guests = ["echo", "host_echo", "error", "noerror", "trap", "init_order", "console_log"]
        for g in guests:
            record = await node.deploy("app", wat(g))
        assert [h.version for h in record.history] == [6, 5, 4, 3, 2]


async def test_a_deploy_elsewhere_is_followed(tmp_path: Path, wat: Wat) -> None:
    async with (
        Node(Config(data_dir=tmp_path / "a", name="a"), peers=FakePeers()) as a,
        Node(Config(data_dir=tmp_path / "b", name="b"), peers=FakePeers()) as b,
    ):
        fetched: list[str] = []

        async def fetch_from_a(record: AppRecord) -> bytes:
            fetched.append(record.sha256)
            return a.storage.read_blob(record.sha256)

        peers(b).fetch = fetch_from_a
        peers(a).fetch = lambda r: _read(b, r)
        await a.deploy("echo", wat("echo"))
        sync(a, b)
        await until(b, lambda: b.running() == {"echo": 1})
        assert await b.call("echo", "echo", b"on b") == b"on b"
        assert fetched == [a.app("echo").sha256]
        assert b.storage.has_blob(a.app("echo").sha256)

        # A redeploy on b reaches a; calls on a keep working across the swap.
        await b.deploy("echo", wat("host_echo"))
        sync(a, b)
        await until(a, lambda: a.running() == {"echo": 2})
        assert await a.call("echo", "main", b"v2") == b"v2"

        # Undeploy on a reaches b.
        await a.undeploy("echo")
        sync(a, b)
        await until(b, lambda: b.running() == {})
        with pytest.raises(UnknownApp):
            await b.call("echo", "main", b"")


async def test_concurrent_deploys_converge(tmp_path: Path, wat: Wat) -> None:
    async with (
        Node(Config(data_dir=tmp_path / "a", name="a"), peers=FakePeers()) as a,
        Node(Config(data_dir=tmp_path / "b", name="b"), peers=FakePeers()) as b,
    ):
        peers(a).fetch = lambda r: _read(b, r)
        peers(b).fetch = lambda r: _read(a, r)
        ra = await a.deploy("app", wat("echo"))
        rb = await b.deploy("app", wat("host_echo"))
        assert ra.version == rb.version == 1
        sync(a, b)
        assert a.app("app") == b.app("app")
        winner = a.app("app")
        await until(a, lambda: a.supervisors.loaded["app"].record.sha256 == winner.sha256)
        await until(b, lambda: b.supervisors.loaded["app"].record.sha256 == winner.sha256)
        assert a.registry.version("app") == b.registry.version("app") == 2
        # The losing deploy was acknowledged too: its node puts it into the winner's history,
        # without changing what runs (same pools, no reload).
        loser, loser_node = (ra, a) if winner.sha256 == rb.sha256 else (rb, b)
        pools = {a.supervisors.loaded["app"].pool, b.supervisors.loaded["app"].pool}
        # As its watcher does on the record change:
        await loser_node.supervisors.reconcile_once("app")
        sync(a, b)
        for node in (a, b):
            await node.supervisors.reconcile_once("app")
            record = node.app("app")
            assert (record.version, record.sha256, record.origin) == (
                winner.version,
                winner.sha256,
                winner.origin,
            )
            assert record.history == (dataclasses.replace(loser, history=(), seen=()),)
            assert node.supervisors.loaded["app"].record == record
        assert {a.supervisors.loaded["app"].pool, b.supervisors.loaded["app"].pool} == pools
        # ... and it can be rolled back to.
        back = await a.rollback("app")
        assert (back.version, back.sha256) == (3, loser.sha256)


async def test_a_deploy_that_lost_to_an_undeploy_is_not_brought_back(
    tmp_path: Path, wat: Wat
) -> None:
    async with (
        Node(Config(data_dir=tmp_path / "a", name="a"), peers=FakePeers()) as a,
        Node(Config(data_dir=tmp_path / "b", name="b"), peers=FakePeers()) as b,
    ):
        peers(a).fetch = lambda r: _read(b, r)
        peers(b).fetch = lambda r: _read(a, r)
        await a.deploy("app", wat("echo"))
        sync(a, b)
        await until(b, lambda: b.running() == {"app": 1})
        await a.deploy("app", wat("host_echo"))  # not synced yet
        await asyncio.sleep(0.01)
        await b.undeploy("app")  # the later write: it wins
        sync(a, b)
        await until(a, lambda: a.running() == {})
        await a.supervisors.reconcile_once("app")  # as its watcher does on the record change
        sync(a, b)
        for node in (a, b):
            with pytest.raises(UnknownApp):
                node.app("app")
            assert node.running() == {}


async def _read(node: Node, record: AppRecord) -> bytes:
    return node.storage.read_blob(record.sha256)


async def test_a_module_nobody_has_is_retried(tmp_path: Path, wat: Wat) -> None:
    async with (
        Node(Config(data_dir=tmp_path / "a", name="a"), peers=FakePeers()) as a,
        Node(Config(data_dir=tmp_path / "b", name="b"), peers=FakePeers()) as b,
    ):
        await a.deploy("echo", wat("echo"))
        sync(a, b)  # b has the record but no way to fetch the module yet
        await asyncio.sleep(0.2)
        assert b.running() == {}
        peers(b).fetch = lambda r: _read(a, r)
        await until(b, lambda: b.running() == {"echo": 1}, limit=10)


async def test_a_peer_that_comes_up_cuts_the_fetch_backoff_short(
    tmp_path: Path, wat: Wat, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The only node with a module was away; when a peer comes up, the supervisors waiting
    to retry a fetch retry at once rather than at the end of their backoff (here 60 s)."""
    monkeypatch.setattr(apps_module, "RETRY_FIRST", 60.0)
    async with (
        Node(Config(data_dir=tmp_path / "a", name="a"), peers=FakePeers()) as a,
        Node(Config(data_dir=tmp_path / "b", name="b"), peers=FakePeers()) as b,
    ):
        await a.deploy("echo", wat("echo"))
        sync(a, b)  # b has the record but cannot fetch the module: it backs off for 60 s
        await asyncio.sleep(0.2)
        assert b.running() == {}
        peers(b).fetch = lambda r: _read(a, r)
        b.peer_up()
        await until(b, lambda: b.running() == {"echo": 1}, limit=10)


async def test_restart_serves_from_disk(tmp_path: Path, wat: Wat) -> None:
    config = Config(data_dir=tmp_path)
    async with Node(config) as node:
        await node.deploy("echo", wat("echo"))
        await node.deploy("gone", wat("echo"))
        await node.undeploy("gone")
    async with Node(config) as node:
        assert node.running() == {"echo": 1}  # at once, before any supervisor ran
        assert [r.name for r in node.apps()] == ["echo"]


async def test_a_record_whose_counter_bump_never_came_is_run(tmp_path: Path, wat: Wat) -> None:
    """The writer died between the record and the counter: the others run the record anyway."""
    async with (
        Node(Config(data_dir=tmp_path / "a", name="a"), peers=FakePeers()) as a,
        Node(Config(data_dir=tmp_path / "b", name="b"), peers=FakePeers()) as b,
    ):
        peers(b).fetch = lambda r: _read(a, r)
        await a.deploy("echo", wat("echo"))
        sync(a, b)
        await until(b, lambda: b.running() == {"echo": 1})
        # As registry.deploy does, but stopping after the record: no counter bump.
        sha = a.storage.put_blob(wat("host_echo"))
        record = a.registry.get("echo")
        assert record is not None
        import dataclasses

        from assemblexd.registry import record_key

        newer = dataclasses.replace(record, sha256=sha, size=len(wat("host_echo")), version=2)
        a.replica.set(record_key("echo"), newer.encode())
        sync(a, b)
        assert b.registry.version("echo") == 1  # the counter did not move
        await until(b, lambda: b.running() == {"echo": 2})
        assert await b.call("echo", "any", b"x") == b"x"  # host_echo answers any operation


def test_a_record_knows_the_writes_its_writer_had() -> None:
    base = AppRecord("app", 1, "a" * 64, 1, 0.0, "n1", seen=(("x", 1),))
    later = dataclasses.replace(base, version=2, seen=(("x", 2),))
    concurrent = dataclasses.replace(base, version=2, seen=(("x", 1), ("y", 1)))
    rival = dataclasses.replace(base, version=2, seen=(("x", 1), ("z", 1)))
    assert later.knows(base)
    assert concurrent.knows(base)
    assert not base.knows(later)
    assert not concurrent.knows(rival)
    assert not rival.knows(concurrent)
    # Stored with the record, not shown by the API; a record stored before it knows nothing.
    assert AppRecord.decode(concurrent.encode()) == concurrent
    assert "seen" not in concurrent.to_json()
    legacy = json.loads(concurrent.encode())
    del legacy["seen"]
    assert AppRecord.decode(json.dumps(legacy).encode()).seen == ()


async def test_a_node_runs_no_more_apps_than_its_limit_whatever_peers_send(
    tmp_path: Path, wat: Wat
) -> None:
    async with (
        Node(Config(data_dir=tmp_path / "a", name="a", max_apps=2), peers=FakePeers()) as a,
        Node(Config(data_dir=tmp_path / "b", name="b"), peers=FakePeers()) as b,
    ):
        peers(a).fetch = lambda r: _read(b, r)
        for name in ("one", "two", "three"):
            await b.deploy(name, wat("echo"))
        sync(a, b)
        await until(a, lambda: len(a.running()) == 2)
        await asyncio.sleep(0.1)  # time to run a third, if it would
        assert len(a.running()) == 2
        (waiting,) = {"one", "two", "three"} - set(a.running())
        assert a.app(waiting).version == 1  # known, listed, just not run here
        with pytest.raises(UnknownApp):
            await a.call(waiting, "echo", b"x")
        # An app undeployed frees a slot: the one waiting runs.
        await b.undeploy(next(iter(a.running())))
        sync(a, b)
        await until(a, lambda: waiting in a.running())
        assert len(a.running()) == 2
        assert await a.call(waiting, "echo", b"x") == b"x"
