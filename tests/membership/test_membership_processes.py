"""Real processes: eight nodes on 127.0.0.1 survive the loss of four, and zeroconf finds
peers inside a network namespace of our own."""

from __future__ import annotations

import os
import shutil
import subprocess
import uuid
from collections.abc import Iterator

import pytest
from membership_procs import FAST_ARGS, process_cluster


@pytest.mark.timeout(180)  # a few seconds alone; generous for a machine under load
async def test_eight_processes_lose_four_and_the_rest_stay_connected() -> None:
    async with process_cluster() as cluster:
        base = ["--listen", "tcp://127.0.0.1:0", "--no-mdns", *FAST_ARGS]
        seed = await cluster.start("p0", base)
        await cluster.wait_until(seed.ready.is_set)
        for i in range(1, 8):
            await cluster.start(f"p{i}", [*base, "--join", seed.address])
        everyone = list(cluster.nodes.values())
        await cluster.wait_until(lambda: cluster.connected(everyone), limit=80)

        for node in everyone[1::2]:
            node.kill()
        for node in everyone[1::2]:
            await node.proc.wait()
        survivors = everyone[0::2]
        names = {n.id for n in survivors}
        # The dead are dropped and the views refill: four survivors with room for three
        # neighbours each end up all connected to each other.
        await cluster.wait_until(
            lambda: (
                cluster.connected(survivors) and all(n.active == names - {n.id} for n in survivors)
            ),
            limit=60,
        )

        await survivors[0].command("broadcast after the storm")
        await cluster.wait_until(
            lambda: all("after the storm" in n.broadcasts for n in survivors[1:])
        )


@pytest.fixture
def namespace() -> Iterator[str]:
    """A fresh network namespace whose loopback carries multicast; deleted afterwards."""
    if shutil.which("ip") is None:
        pytest.skip("the ip command (iproute2) is not installed")
    if os.geteuid() != 0:
        pytest.skip("creating a network namespace needs root")
    name = f"amx-{uuid.uuid4().hex[:8]}"
    made = subprocess.run(["ip", "netns", "add", name], capture_output=True, text=True)
    if made.returncode != 0:
        pytest.skip(f"ip netns is unavailable here: {made.stderr.strip()}")
    try:
        for command in (
            ["ip", "link", "set", "lo", "up", "multicast", "on"],
            ["ip", "route", "add", "224.0.0.0/4", "dev", "lo"],
        ):
            subprocess.run(["ip", "netns", "exec", name, *command], check=True)
        yield name
    finally:
        subprocess.run(["ip", "netns", "del", name], check=False)


@pytest.mark.required("netns")
@pytest.mark.timeout(120)
async def test_zeroconf_discovery_builds_the_overlay_in_a_namespace(namespace: str) -> None:
    prefix = ["ip", "netns", "exec", namespace]
    async with process_cluster() as cluster:
        nodes = [
            await cluster.start(f"z{i}", ["--listen", "tcp://127.0.0.1:0", *FAST_ARGS], prefix)
            for i in range(3)
        ]
        # No --join anywhere: only mDNS can introduce them; free slots then fill up.
        await cluster.wait_until(
            lambda: cluster.connected(nodes) and all(len(n.active) == 2 for n in nodes),
            limit=90,
        )
