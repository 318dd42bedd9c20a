"""The status page of a 5-node cluster in headless Chromium: a screenshot, and the rendered DOM.

Chromium is Debian's ``chromium`` package (``scripts/test`` installs it). It loads a node's
``/status`` as a browser does (its navigation asks for ``text/html``), runs the page's script
(``--virtual-time-budget``), and either writes a screenshot or prints the DOM as rendered.
The screenshot stays in the test's temporary folder; with ``ASSEMBLEX_UPDATE_SCREENSHOT=1`` it
replaces ``docs/img/status.png`` (shown in docs), so a plain test run leaves the tree clean.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from cluster import LocalCluster, http, poll, tagged_guest
from helpers import REPO_ROOT, load_wat

pytestmark = pytest.mark.e2e

NODES = 5
SCREENSHOT = REPO_ROOT / "docs" / "img" / "status.png"
WINDOW = (1200, 900)
CHROMIUM_TIMEOUT = 90.0
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[LocalCluster]:
    base = tmp_path / "cluster"
    base.mkdir()  # LocalCluster writes its logs there and expects it to exist
    local = LocalCluster(base)
    try:
        local.start(NODES)
        yield local
    finally:
        local.close()


def chromium(tmp_path: Path, url: str, *mode: str) -> subprocess.CompletedProcess[str]:
    """Headless Chromium on ``url`` (``mode``: ``--screenshot=F`` or ``--dump-dom``)."""
    exe = shutil.which("chromium")
    if exe is None:
        pytest.fail("chromium is not installed (scripts/test installs Debian's chromium)")
    profile = Path(tempfile.mkdtemp(prefix="chromium-", dir=tmp_path))  # a fresh profile
    argv = [
        exe, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        "--hide-scrollbars", f"--user-data-dir={profile}",
        f"--window-size={WINDOW[0]},{WINDOW[1]}", "--virtual-time-budget=3000",
        *mode, url,
    ]  # fmt: skip
    done = subprocess.run(
        argv,
        capture_output=True,
        text=True,
        timeout=CHROMIUM_TIMEOUT,
        env={"HOME": str(profile), "PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"},
        check=False,
    )
    assert done.returncode == 0, f"chromium exited {done.returncode}:\n{done.stderr[-3000:]}"
    return done


def start_an_actor(cluster: LocalCluster, app: str) -> str:
    """Call an actor of ``app`` once every node knows where the app runs (the nodes place
    actors by the member records, and hear each other by heartbeats every 0.5 s); the name
    of the node it lives on."""
    names = {d.name for d in cluster.nodes}

    def placed() -> bool:
        return all(
            set(a.get("versions", {})) == names
            for d in cluster.nodes
            for a in d.status()["apps"]
            if a["name"] == app
        )

    poll(placed, f"every node to know where {app} runs")
    time.sleep(1.5)
    status, body = http("POST", f"{cluster.nodes[0].url}/actors/{app}/page/put", b"state")
    assert status == 200, body
    status, body = http("GET", f"{cluster.nodes[0].url}/actors/{app}/page")
    assert status == 200, body
    owner: str = json.loads(body)["owner"]
    return owner


def png_size(data: bytes) -> tuple[int, int]:
    """Width and height from a PNG's IHDR chunk."""
    assert data[:8] == PNG_SIGNATURE, "not a PNG"
    assert data[12:16] == b"IHDR", "no IHDR chunk first"
    return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")


@pytest.mark.timeout(300)
def test_status_page_draws_the_five_node_graph(cluster: LocalCluster, tmp_path: Path) -> None:
    nodes = cluster.nodes
    # Apps, so that the page has versions to show: one on every node, one redeployed; and an
    # actor live on one node.
    marks = cluster.marks()
    hello = nodes[0].deploy("hello", tagged_guest("hello-v1"))
    store = nodes[0].deploy("store", load_wat("actor_store"))
    cluster.wait_running("hello", hello["sha256"], marks)
    cluster.wait_running("store", store["sha256"], marks)
    owner = start_an_actor(cluster, "store")
    marks = cluster.marks()  # the deploys below rewrite every member record, actors included
    hello = nodes[3].deploy("hello", tagged_guest("hello-v2"))
    greeter = nodes[1].deploy("greeter", tagged_guest("greeter-v1"))
    cluster.wait_running("hello", hello["sha256"], marks)
    cluster.wait_running("greeter", greeter["sha256"], marks)

    shown = nodes[2]
    want_apps = {"hello": hello["version"], "greeter": greeter["version"], "store": 1}
    want_actors = {d.name: int(d.name == owner) for d in nodes}

    def complete() -> bool:
        """The graph as ``shown`` knows it: 5 alive members, each with the current apps,
        every active link claimed by both of its ends."""
        members = shown.status()["members"]
        if len(members) != NODES or not all(m["alive"] and m["active"] for m in members):
            return False
        if any(m["apps"] != want_apps for m in members):
            return False
        if {m["name"]: m.get("actors") for m in members} != want_actors:
            return False
        links = {(m["id"], p) for m in members for p in m["active"]}
        return all((b, a) in links for a, b in links)

    poll(complete, "a complete membership graph on " + shown.name, describe=cluster.describe)

    # The screenshot, as the README shows it.
    shot = tmp_path / "status.png"
    chromium(tmp_path, shown.url + "/status", f"--screenshot={shot}")
    data = shot.read_bytes()
    assert png_size(data) == WINDOW
    assert len(data) > 20_000, f"a {len(data)}-byte PNG is too small to show a graph"
    if os.environ.get("ASSEMBLEX_UPDATE_SCREENSHOT") == "1":
        SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(shot, SCREENSHOT)

    # The DOM as rendered: five nodes drawn, this one highlighted, none gone.
    dom = chromium(tmp_path, shown.url + "/status", "--dump-dom").stdout
    svg = re.search(r'<svg id="graph"[^>]*>', dom)
    assert svg is not None, dom[:2000]
    assert f'data-nodes="{NODES}"' in svg.group(0)
    assert 'data-alive="5"' in svg.group(0)
    drawn = re.findall(r'<g class="(node[^"]*)" data-id="[^"]*" data-name="([^"]*)"', dom)
    assert sorted(name for _, name in drawn) == [d.name for d in nodes]
    assert [name for cls, name in drawn if "self" in cls.split()] == [shown.name]
    assert not [name for cls, name in drawn if "dead" in cls.split()]
    edges = re.search(r'data-edges="(\d+)"', svg.group(0))
    assert edges is not None
    assert int(edges.group(1)) >= NODES - 1, "a connected graph of 5 nodes has 4 links or more"
    for app in want_apps:
        assert f'data-app="{app}"' in dom
    shown_actors = dict(
        re.findall(r'data-name="([^"]*)" data-alive="[^"]*" data-actors="(\d*)"', dom)
    )
    assert shown_actors == {n: str(c) for n, c in want_actors.items()}
    assert f'<td id="actors">{want_actors[shown.name]} live here</td>' in dom
