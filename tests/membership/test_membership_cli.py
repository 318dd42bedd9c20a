"""``python -m membership``: arguments to configuration, and the stdin commands."""

from __future__ import annotations

import json

import pytest
from membership_cluster import cluster

from membership.__main__ import _command, parse_args


def test_parse_args_builds_the_node_configuration() -> None:
    config = parse_args(
        [
            "--id",
            "n1",
            "--listen",
            "tcp://0.0.0.0:7946",
            "--advertise",
            "tcp://10.1.2.3:7946",
            "--join",
            "tcp://a:1",
            "--join",
            "tcp://b:2",
            "--cluster-key",
            "s3cret",
            "--no-mdns",
            "--active",
            "4",
            "--shuffle-interval",
            "2.5",
        ]
    )
    assert config.node_id == "n1"
    assert config.advertise == "tcp://10.1.2.3:7946"
    assert config.join == ("tcp://a:1", "tcp://b:2")
    assert config.cluster_key == b"s3cret"
    assert config.mdns is False
    assert config.hyparview.active_size == 4
    assert config.hyparview.shuffle_interval == 2.5


def test_defaults_are_open_with_discovery() -> None:
    config = parse_args(["--id", "n1"])
    assert config.cluster_key is None
    assert config.mdns is True
    assert config.hyparview.active_size == 5
    assert config.hyparview.passive_size == 30


async def test_commands(capsys: pytest.CaptureFixture[str]) -> None:
    async with cluster("memory") as c:
        a = await c.start("a")
        b = await c.start("b", join=[a.me.address])
        await c.wait_until(c.symmetric)
        capsys.readouterr()
        assert _command(a, "broadcast hi")
        assert _command(a, "send b hello")
        assert _command(a, "send nobody hello")
        assert _command(a, "status")
        assert _command(a, "frobnicate")
        assert not _command(a, "quit")
        records = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
        assert [r["event"] for r in records] == ["sent", "error", "status", "error"]
        assert records[2]["active"] == [{"id": "b", "address": b.me.address}]
