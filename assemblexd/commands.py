"""The subcommands of ``assemblexd``, each given its parsed arguments and returning the exit
status: ``run`` (a node, see ``serve``), ``salvage-log``, and the client commands (deploy,
call, actor, apps, rollback, undeploy, status), thin wrappers over ``client.Client`` whose output is
rendered by ``render``."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
from pathlib import Path

from .cli_parse import config_from_args
from .client import Client, ClientError
from .errors import AssemblexError, DataDirError
from .logs import setup_logging
from .render import ActorInfo, AppRow, Status, format_actor, format_apps, format_status
from .serve import load_tls, serve
from .tls import TLSError, client_context

__all__ = ["client_command", "run", "salvage_log"]

log = logging.getLogger("assemblexd")


def run(ns: argparse.Namespace) -> int:
    """``assemblexd run``: 2 on a configuration it cannot run with (said on stderr before
    anything starts), 1 when the node fails to start, 130 on a second ^C."""
    try:
        config = config_from_args(ns)
        tls = load_tls(config)  # read and checked before anything starts
    except ValueError as e:  # ConfigError and TLSError included
        print(f"assemblexd run: error: {e}", file=sys.stderr)
        return 2
    setup_logging(config.log_format)
    try:
        return asyncio.run(serve(config, tls=tls))
    except KeyboardInterrupt:
        return 130
    except DataDirError as e:
        log.error("cannot start: %s", e)
        return 2
    except (AssemblexError, OSError) as e:
        # The node refused to start (data dir not writable, bad configuration, ...).
        log.error("cannot start: %s", e.message if isinstance(e, AssemblexError) else e)
        return 1


def salvage_log(data_dir: Path) -> int:
    """``assemblexd salvage-log``: recover the damaged replica.log of a stopped node."""
    import crdt

    setup_logging("text")
    path = data_dir / "replica.log"
    try:
        node_id = (data_dir / "node_id").read_text().strip()
        if not path.is_file():
            raise FileNotFoundError(f"no {path}")
        replica = crdt.Replica(node_id, path, salvage=True)
    except (OSError, crdt.Error) as e:
        print(f"assemblexd salvage-log: error: {e}", file=sys.stderr)
        return 2
    replica.close()
    if not replica.salvaged:
        print(f"{path} has no damage before intact records: nothing to salvage")
        return 0
    spans = ", ".join(f"{a}-{b - 1}" for a, b in replica.salvaged)
    print(
        f"salvaged {path}: kept every intact record, skipped damaged bytes {spans};"
        f" the damaged file is kept as {replica.damaged_copy}"
    )
    return 0


async def client_command(ns: argparse.Namespace) -> int:
    """One client command against the node at ``ns.url``. Raises ClientError (and OSError
    for a local file it cannot read)."""
    try:
        ssl = client_context(ns.tls_ca) if ns.tls_ca is not None else None
    except TLSError as e:
        raise ClientError(str(e), code="local") from None
    async with Client(ns.url, ssl=ssl) as client:
        if ns.command == "deploy":
            rec = await client.deploy(
                ns.file, name=ns.name, capabilities=ns.capabilities, token=ns.token
            )
            print(
                f"deployed {rec['name']} version {rec['version']}"
                f" ({rec['size']} bytes, sha256 {rec['sha256']})"
            )
        elif ns.command == "call":
            payload = await asyncio.to_thread(_payload, ns)
            out = await client.call(ns.app, ns.op, payload, token=ns.token)
            sys.stdout.buffer.write(out)
            sys.stdout.buffer.flush()
        elif ns.command == "actor" and ns.op is not None:
            payload = await asyncio.to_thread(_payload, ns)
            out = await client.actor_call(ns.app, ns.key, ns.op, payload, token=ns.token)
            sys.stdout.buffer.write(out)
            sys.stdout.buffer.flush()
        elif ns.command == "actor":
            if ns.data is not None or ns.data_file is not None:
                raise ClientError("--data and --data-file go with an OP", code="local")
            data = await client.actor(ns.app, ns.key, token=ns.token)
            print(
                json.dumps(data, indent=2)
                if ns.json
                else format_actor(ns.app, ns.key, ActorInfo.from_json(data))
            )
        elif ns.command == "apps" and ns.app is not None:
            rec = await client.app(ns.app, token=ns.read_token)
            rows = [AppRow.from_json(r) for r in [rec, *rec.get("history", [])]]
            print(format_apps(rows, current=True))
        elif ns.command == "apps":
            print(
                format_apps([AppRow.from_json(r) for r in await client.apps(token=ns.read_token)])
            )
        elif ns.command == "rollback":
            rec = await client.rollback(ns.app, token=ns.token)
            print(
                f"rolled {rec['name']} back: version {rec['version']} runs the module of an"
                f" earlier one (sha256 {rec['sha256']})"
            )
        elif ns.command == "undeploy":
            await client.undeploy(ns.app, token=ns.token)
            print(f"undeployed {ns.app}")
        elif ns.command == "status":
            data = await client.status(token=ns.read_token)
            print(json.dumps(data, indent=2) if ns.json else format_status(Status.from_json(data)))
    return 0


def _payload(ns: argparse.Namespace) -> bytes:
    if ns.data is not None:
        return str(ns.data).encode("utf-8")
    if ns.data_file is not None:
        if str(ns.data_file) == "-":
            return sys.stdin.buffer.read()
        return Path(ns.data_file).read_bytes()
    return b""
