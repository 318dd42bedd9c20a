"""The e2e harness's own promises (``cluster.whole_cluster``): a node that exits by itself
fails the test during which it happened (or, found down before a test, that test), and so does
an ERROR line a node logs during a test, unless the test expects it.

The fixture body is driven by hand here, with a stand-in for pytest's ``request``, around
things done to a real two-node cluster."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from cluster import LocalCluster, whole_cluster

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    local = LocalCluster(tmp_path_factory.mktemp("harness"))
    try:
        local.start(2)
        yield local
    finally:
        local.close()


def fake_request(*expected: str) -> Any:
    """What ``whole_cluster`` reads of pytest's request: the test's name, its
    ``expect_log_errors`` marker, the session's failure count, the plugin manager."""
    marker = SimpleNamespace(args=expected) if expected else None
    return SimpleNamespace(
        node=SimpleNamespace(name="driven-by-hand", get_closest_marker=lambda _name: marker),
        session=SimpleNamespace(testsfailed=0),
        config=SimpleNamespace(pluginmanager=SimpleNamespace(get_plugin=lambda _name: None)),
    )


def log_error_line(log_path: Path, msg: str) -> None:
    """Append an ERROR record to a node's log file, as the node would write it."""
    record = {"ts": "now", "level": "ERROR", "logger": "assemblexd.test", "msg": msg}
    with log_path.open("a", encoding="utf-8") as log:
        log.write(json.dumps(record) + "\n")


def finish(body: Iterator[None]) -> None:
    """Run the fixture body's teardown (after its ``yield``)."""
    with pytest.raises(StopIteration):
        next(body)


def test_an_unexpected_error_line_fails_the_test(cluster: LocalCluster) -> None:
    body = whole_cluster(cluster, fake_request())
    next(body)
    log_error_line(cluster.nodes[1].log_path, "something broke")
    with pytest.raises(pytest.fail.Exception, match=r"node1 logged unexpected ERROR lines"):
        next(body)


def test_an_expected_error_line_passes(cluster: LocalCluster) -> None:
    body = whole_cluster(cluster, fake_request(r"^something (broke|bent)$"))
    next(body)
    log_error_line(cluster.nodes[1].log_path, "something bent")
    finish(body)


def test_error_lines_before_the_test_are_not_its_own(cluster: LocalCluster) -> None:
    log_error_line(cluster.nodes[0].log_path, "an earlier test's problem")
    body = whole_cluster(cluster, fake_request())
    next(body)
    finish(body)


def test_a_crash_during_a_test_fails_it_and_the_node_comes_back(cluster: LocalCluster) -> None:
    victim = cluster.nodes[1]
    body = whole_cluster(cluster, fake_request())
    next(body)
    assert victim.proc is not None
    victim.proc.kill()  # as a crash would: not through Daemon.kill
    victim.proc.wait()
    with pytest.raises(pytest.fail.Exception, match=r"node1 exited by itself"):
        next(body)
    # Reported once: the next test starts it again and runs.
    body = whole_cluster(cluster, fake_request())
    next(body)
    assert victim.running
    finish(body)


def test_a_node_found_crashed_before_a_test_fails_it(cluster: LocalCluster) -> None:
    victim = cluster.nodes[1]
    assert victim.proc is not None
    victim.proc.kill()
    victim.proc.wait()
    with pytest.raises(pytest.fail.Exception, match=r"node1 exited by themselves before"):
        next(whole_cluster(cluster, fake_request()))
    body = whole_cluster(cluster, fake_request())
    next(body)
    assert victim.running
    finish(body)


def test_a_node_a_test_stopped_is_started_again(cluster: LocalCluster) -> None:
    victim = cluster.nodes[1]
    victim.stop()
    body = whole_cluster(cluster, fake_request())
    next(body)
    assert victim.running
    finish(body)
