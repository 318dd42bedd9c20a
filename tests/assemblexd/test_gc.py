"""The garbage collector of module blobs, on real nodes with real modules and a real data dir.

Files are made old with ``os.utime`` (the collector's clock is the files' mtime); the node's
periodic task is off (``gc_interval=0``) except where it is the subject, so each test runs
collections when it wants them.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import logging
import os
import time
from pathlib import Path
from typing import Any

import pytest
from helpers import FakePeers, Wat

from assemblexd.__main__ import build_parser, config_from_args, main
from assemblexd.config import Config
from assemblexd.node import Node
from assemblexd.records import AppRecord
from assemblexd.registry import record_key
from assemblexd.runtime import WASMTIME_VERSION
from assemblexd.storage import Collected, Storage

HOUR = 3600.0


def sha(wasm: bytes) -> str:
    return hashlib.sha256(wasm).hexdigest()


def compiled_name(sha256: str) -> str:
    return f"{sha256}-wasmtime{WASMTIME_VERSION}.cwasm"


def blobs(node: Node) -> set[str]:
    return {p.name for p in node.storage.blobs_dir.iterdir()}


def compiled(node: Node) -> set[str]:
    return {p.name for p in node.storage.compiled_dir.iterdir()}


def age(*dirs: Path, seconds: float = 2 * HOUR) -> None:
    """Make every file in ``dirs`` look last written ``seconds`` ago."""
    then = time.time() - seconds
    for d in dirs:
        for p in d.iterdir():
            os.utime(p, (then, then))


def age_all(node: Node) -> None:
    age(node.storage.blobs_dir, node.storage.compiled_dir)


def config(tmp_path: Path, **kw: Any) -> Config:
    """A node's config with the periodic collector off, unless ``kw`` says otherwise."""
    return dataclasses.replace(Config(data_dir=tmp_path, gc_interval=0), **kw)


async def test_a_module_pushed_out_of_history_is_removed(tmp_path: Path, wat: Wat) -> None:
    guests = ["echo", "host_echo", "error", "noerror", "trap", "init_order", "console_log"]
    async with Node(config(tmp_path)) as node:
        for g in guests:
            record = await node.deploy("app", wat(g))
        assert [h.sha256 for h in record.history] == [sha(wat(g)) for g in guests[-2:0:-1]]
        age_all(node)
        result = await node.collect_garbage()

        gone = sha(wat("echo"))  # v1, out of the 5-entry history
        kept = {sha(wat(g)) for g in guests[1:]}
        assert blobs(node) == kept
        assert gone not in kept
        assert compiled(node) == {compiled_name(s) for s in kept}
        assert (result.blobs_removed, result.compiled_removed) == (1, 1)
        assert result.blob_bytes_removed == len(wat("echo"))
        assert result.blob_bytes == sum(len(wat(g)) for g in guests[1:])

        assert await node.call("app", "x", b"") == b"logged"  # console_log, still running
        await node.rollback("app")  # init_order, from disk
        assert node.running() == {"app": 8}
        assert await node.call("app", "main", b"") == b"isw"
        for _ in range(4):
            await node.rollback("app")
        assert node.running() == {"app": 12}  # host_echo, the oldest entry of the history
        assert await node.call("app", "any", b"still here") == b"still here"


async def test_an_undeployed_apps_module_is_removed(
    tmp_path: Path, wat: Wat, caplog: pytest.LogCaptureFixture
) -> None:
    async with Node(config(tmp_path)) as node:
        await node.deploy("gone", wat("echo"))
        await node.deploy("stays", wat("host_echo"))
        await node.undeploy("gone")
        age_all(node)
        with caplog.at_level(logging.INFO, logger="assemblexd.node"):
            await node.collect_garbage()
        assert blobs(node) == {sha(wat("host_echo"))}
        assert compiled(node) == {compiled_name(sha(wat("host_echo")))}
        assert any("garbage collection removed 1 blobs" in r.getMessage() for r in caplog.records)
        assert await node.call("stays", "main", b"ok") == b"ok"

        metrics = node.metrics_text().decode()
        assert 'assemblex_gc_removed_total{kind="blob"} 1.0' in metrics
        assert 'assemblex_gc_removed_total{kind="compiled"} 1.0' in metrics
        assert f'assemblex_gc_removed_bytes_total{{kind="blob"}} {len(wat("echo"))}.0' in metrics
        assert f'assemblex_stored_bytes{{kind="blob"}} {len(wat("host_echo"))}.0' in metrics

        # Nothing more to remove: no log line, the counters stay.
        caplog.clear()
        with caplog.at_level(logging.INFO, logger="assemblexd.node"):
            again = await node.collect_garbage()
        assert not again.removed
        assert not [r for r in caplog.records if "garbage" in r.getMessage()]
        assert 'assemblex_gc_removed_total{kind="blob"} 1.0' in node.metrics_text().decode()


async def test_a_young_blob_is_kept_even_unreferenced(tmp_path: Path, wat: Wat) -> None:
    async with Node(config(tmp_path)) as node:
        await node.deploy("app", wat("echo"))
        await node.undeploy("app")
        await node.collect_garbage()  # written moments ago: inside the grace period
        assert blobs(node) == {sha(wat("echo"))}
        assert compiled(node) == {compiled_name(sha(wat("echo")))}

        age(node.storage.blobs_dir, seconds=HOUR - 60)  # still inside it
        await node.collect_garbage()
        assert blobs(node) == {sha(wat("echo"))}

        # Storing old bytes again (a redeploy, a fetch) makes them young again.
        age_all(node)
        node.storage.put_blob(wat("echo"))
        await node.collect_garbage()
        assert blobs(node) == {sha(wat("echo"))}

        age_all(node)
        await node.collect_garbage()
        assert blobs(node) == set()
        assert compiled(node) == set()


async def test_the_grace_period_is_configurable(tmp_path: Path, wat: Wat) -> None:
    async with Node(config(tmp_path, gc_grace=60.0)) as node:
        await node.deploy("app", wat("echo"))
        await node.undeploy("app")
        age(node.storage.blobs_dir, node.storage.compiled_dir, seconds=30)
        await node.collect_garbage()
        assert blobs(node) == {sha(wat("echo"))}
        age(node.storage.blobs_dir, node.storage.compiled_dir, seconds=90)
        await node.collect_garbage()
        assert blobs(node) == set()


async def test_a_blob_shared_by_two_apps_stays_while_one_uses_it(tmp_path: Path, wat: Wat) -> None:
    async with Node(config(tmp_path)) as node:
        await node.deploy("a", wat("echo"))
        await node.deploy("b", wat("echo"))
        assert blobs(node) == {sha(wat("echo"))}  # stored once
        await node.undeploy("a")
        age_all(node)
        await node.collect_garbage()
        assert blobs(node) == {sha(wat("echo"))}
        assert compiled(node) == {compiled_name(sha(wat("echo")))}
        assert await node.call("b", "echo", b"b") == b"b"

        await node.undeploy("b")
        await node.collect_garbage()
        assert blobs(node) == set()
        assert compiled(node) == set()


async def test_a_redeploy_of_collected_bytes_stores_them_again(tmp_path: Path, wat: Wat) -> None:
    async with Node(config(tmp_path)) as node:
        await node.deploy("app", wat("echo"))
        await node.undeploy("app")
        age_all(node)
        await node.collect_garbage()
        assert blobs(node) == set()
        await node.deploy("app", wat("echo"))
        assert blobs(node) == {sha(wat("echo"))}
        assert compiled(node) == {compiled_name(sha(wat("echo")))}
        assert await node.call("app", "echo", b"back") == b"back"


async def test_a_version_still_running_is_kept(tmp_path: Path, wat: Wat) -> None:
    """The record is gone but the node has not unloaded the app yet: its module stays."""
    peers = FakePeers()
    async with Node(config(tmp_path), peers=peers) as node:
        await node.deploy("app", wat("echo"))
        age_all(node)
        unloaded = asyncio.Event()
        peers.on_apps_changed.append(unloaded.set)
        # A tombstone merged from elsewhere: the node unloads the app once its watcher runs.
        node.replica.delete(record_key("app"))
        assert node.running() == {"app": 1}
        await node.collect_garbage()  # reads the references before the watcher can run
        assert blobs(node) == {sha(wat("echo"))}

        async with asyncio.timeout(5):
            await unloaded.wait()
        assert node.running() == {}
        await node.collect_garbage()
        assert blobs(node) == set()


async def test_compiled_modules_of_another_wasmtime_are_removed(tmp_path: Path, wat: Wat) -> None:
    async with Node(config(tmp_path)) as node:
        record = await node.deploy("app", wat("echo"))
        cache = node.storage.compiled_dir
        mine = compiled_name(record.sha256)
        other = f"{record.sha256}-wasmtime0.0.1.cwasm"
        (cache / other).write_bytes((cache / mine).read_bytes())
        (cache / ".tmp-half").write_bytes(b"a crash's leftover")
        (cache / "notes.txt").write_bytes(b"not ours")
        result = await node.collect_garbage()  # at once: no grace for another version's files
        assert compiled(node) == {mine, ".tmp-half", "notes.txt"}
        assert result.compiled_removed == 1
        assert blobs(node) == {record.sha256}
        assert await node.call("app", "echo", b"x") == b"x"


async def test_a_collected_module_deployed_elsewhere_is_fetched(tmp_path: Path, wat: Wat) -> None:
    async with (
        Node(config(tmp_path / "a", name="a")) as a,
        Node(config(tmp_path / "b", name="b"), peers=(b_peers := FakePeers())) as b,
    ):
        fetched: list[str] = []

        async def fetch_from_a(record: AppRecord) -> bytes:
            fetched.append(record.sha256)
            return a.storage.read_blob(record.sha256)

        b_peers.fetch = fetch_from_a
        await b.deploy("old", wat("echo"))
        await b.undeploy("old")
        age_all(b)
        await b.collect_garbage()
        assert blobs(b) == set()

        changed = asyncio.Event()
        b_peers.on_apps_changed.append(changed.set)
        await a.deploy("new", wat("echo"))
        b.replica.merge(a.replica.delta(b.replica.digest()))
        async with asyncio.timeout(5):
            while b.running() != {"new": 1}:
                await changed.wait()
                changed.clear()
        assert fetched == [sha(wat("echo"))]
        assert blobs(b) == {sha(wat("echo"))}
        assert await b.call("new", "echo", b"on b") == b"on b"


async def test_the_node_collects_on_its_own(tmp_path: Path, wat: Wat) -> None:
    stray = Storage(tmp_path).put_blob(wat("echo"))  # no record names it
    age(tmp_path / "blobs")
    async with Node(config(tmp_path, gc_interval=0.05)) as node:
        done = asyncio.Event()
        results: list[Collected] = []
        node.on_collected.append(lambda r: (results.append(r), done.set()))
        async with asyncio.timeout(5):
            await done.wait()
        assert results[0].blobs_removed == 1
        assert stray not in blobs(node)


def test_flags() -> None:
    def run_config(*argv: str) -> Config:
        return config_from_args(build_parser({}).parse_args(["run", *argv]), {})

    assert (run_config().gc_interval, run_config().gc_grace) == (600.0, 3600.0)
    c = run_config("--gc-interval", "0", "--gc-grace", "120.5")
    assert (c.gc_interval, c.gc_grace) == (0.0, 120.5)


@pytest.mark.parametrize(
    "argv",
    [
        ["--gc-interval", "-1"],
        ["--gc-interval", "nan"],
        ["--gc-grace", "inf"],
        ["--gc-grace", "soon"],
    ],
)
def test_bad_flags(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run", *argv]) == 2
    assert "--gc-" in capsys.readouterr().err
