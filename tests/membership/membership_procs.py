"""Membership nodes as separate processes (``python -m membership``), read through their JSON
lines on stdout."""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import sys
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any

FAST_ARGS = [
    "--active", "3",
    "--passive", "8",
    "--shuffle-interval", "0.5",
    "--keepalive", "0.2",
    "--keepalive-timeout", "3",
    "--repair-backoff", "0.2",
    "--repair-backoff-max", "1",
]  # fmt: skip


class NodeProcess:
    """One node process and the last things it reported."""

    def __init__(self, node_id: str, proc: asyncio.subprocess.Process) -> None:
        self.id = node_id
        self.proc = proc
        self.address = ""
        self.active: set[str] = set()
        self.passive: set[str] = set()
        self.broadcasts: list[str] = []
        self.ready = asyncio.Event()

    def apply(self, record: dict[str, Any]) -> None:
        match record.get("event"):
            case "ready":
                self.address = record["address"]
                self.ready.set()
            case "view":
                self.active, self.passive = set(record["active"]), set(record["passive"])
            case "broadcast":
                self.broadcasts.append(record["payload"])

    async def command(self, line: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(line.encode() + b"\n")
        await self.proc.stdin.drain()

    def kill(self) -> None:
        if self.proc.returncode is None:
            self.proc.send_signal(signal.SIGKILL)


class ProcessCluster:
    """Processes plus one `changed` event that every stdout line sets."""

    def __init__(self, group: asyncio.TaskGroup) -> None:
        self.nodes: dict[str, NodeProcess] = {}
        self.changed = asyncio.Event()
        self._group = group

    async def start(
        self, node_id: str, args: Sequence[str], prefix: Sequence[str] = ()
    ) -> NodeProcess:
        proc = await asyncio.create_subprocess_exec(
            *prefix,
            sys.executable,
            "-m",
            "membership",
            "--id",
            node_id,
            *args,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.DEVNULL,
        )
        node = NodeProcess(node_id, proc)
        self.nodes[node_id] = node
        self._group.create_task(self._read(node))
        return node

    async def _read(self, node: NodeProcess) -> None:
        assert node.proc.stdout is not None
        while line := await node.proc.stdout.readline():
            with contextlib.suppress(ValueError):
                node.apply(json.loads(line))
            self.changed.set()
        self.changed.set()

    async def wait_until(self, condition: Callable[[], bool], limit: float = 30.0) -> None:
        """Return once `condition()` holds, re-checked at every line any process prints."""
        async with asyncio.timeout(limit):
            while not condition():
                self.changed.clear()
                await self.changed.wait()

    def live(self) -> list[NodeProcess]:
        return [n for n in self.nodes.values() if n.proc.returncode is None]

    def connected(self, nodes: list[NodeProcess]) -> bool:
        """Views are symmetric among `nodes`, name no one else, and form one component."""
        ids = {n.id for n in nodes}
        by_id = {n.id: n for n in nodes}
        for node in nodes:
            if not node.active or not node.active <= ids:
                return False
            if any(node.id not in by_id[other].active for other in node.active):
                return False
        seen, todo = {nodes[0].id}, [nodes[0].id]
        while todo:
            for other in by_id[todo.pop()].active:
                if other not in seen:
                    seen.add(other)
                    todo.append(other)
        return seen == ids


@contextlib.asynccontextmanager
async def process_cluster() -> AsyncIterator[ProcessCluster]:
    async with asyncio.TaskGroup() as group:
        cluster = ProcessCluster(group)
        try:
            yield cluster
        finally:
            for node in cluster.nodes.values():
                node.kill()
            for node in cluster.nodes.values():
                await node.proc.wait()
