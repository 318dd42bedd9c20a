"""``python -m membership``: run one standalone membership node over TCP.

It prints one JSON object per line on stdout: ``ready`` (with its address), ``view`` whenever
its active view changes, ``broadcast`` and ``direct`` for each message received. It reads
commands on stdin, one per line: ``broadcast TEXT``, ``send NODE_ID TEXT``, ``status`` and
``quit`` (the end of stdin only stops reading commands). ``quit``, SIGTERM or SIGINT stop it.
Tests and scripts drive clusters of processes this way; the daemon embeds `Node` instead.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import signal
import stat
import sys
from dataclasses import replace
from typing import Any

from ._config import HyParViewConfig, NodeConfig
from ._errors import MembershipError
from ._messages import BroadcastReceived, DirectReceived, Event, NeighborDown, NeighborUp
from ._node import Node

__all__ = ["main", "parse_args"]


def parse_args(argv: list[str] | None = None) -> NodeConfig:
    """The node's configuration from the command line."""
    parser = argparse.ArgumentParser(prog="python -m membership", description=__doc__)
    parser.add_argument("--id", required=True, help="node id, unique in the cluster")
    parser.add_argument("--listen", default="tcp://127.0.0.1:0", help="tcp://host:port")
    parser.add_argument("--advertise", help="address peers dial (default: the bound one)")
    parser.add_argument("--join", action="append", default=[], metavar="URL", help="seed")
    parser.add_argument("--no-mdns", action="store_true", help="no zeroconf discovery")
    parser.add_argument("--cluster-key", help="shared secret of the cluster")
    parser.add_argument("--active", type=int, default=5, help="active view size")
    parser.add_argument("--passive", type=int, default=30, help="passive view size")
    parser.add_argument("--shuffle-interval", type=float, default=10.0, help="seconds")
    parser.add_argument("--keepalive", type=float, default=1.0, help="ping interval, seconds")
    parser.add_argument("--keepalive-timeout", type=float, default=5.0, help="seconds")
    parser.add_argument("--repair-backoff", type=float, default=1.0, help="seconds")
    parser.add_argument("--repair-backoff-max", type=float, default=30.0, help="seconds")
    parser.add_argument("--log-level", default="WARNING")
    args = parser.parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), stream=sys.stderr)
    membership = replace(
        HyParViewConfig(),
        active_size=args.active,
        passive_size=args.passive,
        shuffle_interval=args.shuffle_interval,
        repair_backoff=args.repair_backoff,
        repair_backoff_max=args.repair_backoff_max,
    )
    return NodeConfig(
        node_id=args.id,
        listen=args.listen,
        advertise=args.advertise,
        join=tuple(args.join),
        cluster_key=args.cluster_key.encode() if args.cluster_key else None,
        mdns=not args.no_mdns,
        hyparview=membership,
        keepalive_interval=args.keepalive,
        keepalive_timeout=args.keepalive_timeout,
    )


def _emit(record: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(record, sort_keys=True) + "\n")
    sys.stdout.flush()


def _view(node: Node) -> dict[str, Any]:
    return {
        "event": "view",
        "active": sorted(p.id for p in node.active_view()),
        "passive": sorted(p.id for p in node.passive_view()),
    }


def _report(node: Node, event: Event) -> None:
    match event:
        case NeighborUp() | NeighborDown():
            _emit(_view(node))
        case BroadcastReceived(msg_id, origin, payload):
            text = payload.decode(errors="replace")
            _emit({"event": "broadcast", "id": msg_id, "origin": origin, "payload": text})
        case DirectReceived(src, payload):
            _emit({"event": "direct", "src": src.id, "payload": payload.decode(errors="replace")})


def _command(node: Node, line: str) -> bool:
    """Run one stdin command; False means quit."""
    verb, _, rest = line.strip().partition(" ")
    try:
        if verb == "broadcast":
            _emit({"event": "sent", "id": node.broadcast(rest.encode())})
        elif verb == "send":
            target, _, text = rest.partition(" ")
            peer = next((p for p in node.active_view() if p.id == target), None)
            if peer is None:
                _emit({"event": "error", "message": f"{target} is not a neighbour"})
            else:
                node.send(peer, text.encode())
        elif verb == "status":
            _emit({"event": "status", **node.status()})
        elif verb == "quit":
            return False
        elif verb:
            _emit({"event": "error", "message": f"unknown command {verb!r}"})
    except MembershipError as exc:
        _emit({"event": "error", "message": str(exc)})
    return True


async def _stdin_lines() -> asyncio.StreamReader:
    mode = os.fstat(sys.stdin.fileno()).st_mode
    if not (stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode) or sys.stdin.isatty()):
        raise ValueError("stdin is not a pipe, a socket or a terminal")
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    return reader


async def run(config: NodeConfig) -> None:
    """Run a node until SIGTERM/SIGINT or ``quit``."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    async with Node(config) as node, asyncio.TaskGroup() as group:
        events = node.events()
        _emit({"event": "ready", "id": node.me.id, "address": node.me.address})

        async def report() -> None:
            async for event in events:
                _report(node, event)

        async def commands() -> None:
            try:
                reader = await _stdin_lines()
            except (OSError, ValueError):  # stdin is a file or /dev/null: no commands
                return
            while line := await reader.readline():
                if not _command(node, line.decode(errors="replace")):
                    stop.set()
                    return

        tasks = [group.create_task(report()), group.create_task(commands())]
        await stop.wait()
        for task in tasks:
            task.cancel()


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the exit status."""
    config = parse_args(argv)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(run(config))
    return 0


if __name__ == "__main__":
    sys.exit(main())
