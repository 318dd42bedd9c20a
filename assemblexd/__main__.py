"""The ``assemblexd`` command: run a node, or talk to one.

``main(argv)`` parses ``argv`` and returns the exit status; ``run`` builds a frozen ``Config``
from its flags (``config_from_args``) and serves the node until SIGINT or SIGTERM. The other
subcommands are thin wrappers over ``client.Client``.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import ipaddress
import json
import logging
import os
import re
import signal
import sys
import time
import urllib.parse
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .client import DEFAULT_URL, Client, ClientError
from .config import WILDCARD_HOSTS, Config
from .errors import AssemblexError, DataDirError
from .logs import FORMATS, setup_logging
from .tls import NodeTLS, TLSError, client_context

if TYPE_CHECKING:
    from aiohttp import web

__all__ = ["build_parser", "config_from_args", "main"]

log = logging.getLogger("assemblexd")

_DEFAULTS = Config()
KEEPALIVE_TIMEOUT = 75.0
"""Seconds an idle kept-alive HTTP connection stays open (aiohttp's own default is an hour)."""
_BINDING_RE = re.compile(r"[A-Za-z0-9_.-]+")


# -- argument types (each raises ArgumentTypeError with a readable message) ---------------------


def _int_at_least(low: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"must be at least {low}: {value}")
        return value

    return parse


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a positive number of seconds: {text}")
    return value


def _seconds(text: str) -> float:
    """A number of seconds, 0 included."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not 0 <= value < float("inf"):
        raise argparse.ArgumentTypeError(f"must be 0 or a positive number of seconds: {text}")
    return value


def _port(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a port number: {text!r}") from None
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"port out of range 0-65535: {value}")
    return value


def _redis_url(text: str) -> tuple[str, str]:
    """``URL`` (the default connection, binding "") or ``NAME=URL`` (a named one)."""
    binding, sep, url = text.partition("=")
    if not sep or "://" in binding or not _BINDING_RE.fullmatch(binding):
        binding, url = "", text
    if "://" not in url:
        raise argparse.ArgumentTypeError(
            f"expected URL or NAME=URL with a redis:// URL, got {text!r}"
        )
    return binding, url


# -- parser --------------------------------------------------------------------------------------


def _add_url(p: argparse.ArgumentParser, environ: Mapping[str, str]) -> None:
    p.add_argument(
        "--url",
        default=environ.get("ASSEMBLEX_URL", DEFAULT_URL),
        help="base URL of the node (default: $ASSEMBLEX_URL or %(default)s)",
    )
    ca = environ.get("ASSEMBLEX_TLS_CA")
    p.add_argument(
        "--tls-ca",
        metavar="FILE",
        type=Path,
        default=Path(ca) if ca else None,
        help="PEM bundle of the CAs trusted for an https:// URL (default: $ASSEMBLEX_TLS_CA,"
        " else the system's trust store)",
    )


def _add_token(p: argparse.ArgumentParser, environ: Mapping[str, str]) -> None:
    p.add_argument(
        "--token",
        default=environ.get("ASSEMBLEX_TOKEN"),
        help="deploy token, where the node requires one (default: $ASSEMBLEX_TOKEN)",
    )


def _add_read_token(p: argparse.ArgumentParser, environ: Mapping[str, str]) -> None:
    p.add_argument(
        "--read-token",
        metavar="T",
        default=environ.get("ASSEMBLEX_READ_TOKEN"),
        help="the node's read token (or its deploy token), where it requires one; without"
        " it, status shows no peer ids or addresses (default: $ASSEMBLEX_READ_TOKEN)",
    )


def build_parser(environ: Mapping[str, str] | None = None) -> argparse.ArgumentParser:
    """The full command-line parser; defaults that come from the environment read ``environ``."""
    env = os.environ if environ is None else environ
    parser = argparse.ArgumentParser(
        prog="assemblexd",
        description="Assemblex: a peer-to-peer serverless platform for WebAssembly (waPC).",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = sub.add_parser(
        "run",
        help="run a node",
        description="Run a node and serve its HTTP API until SIGINT/SIGTERM.",
    )
    net = run.add_argument_group("network")
    net.add_argument(
        "--host", metavar="H", default=_DEFAULTS.host, help="listen address (default: %(default)s)"
    )
    net.add_argument(
        "--port",
        metavar="P",
        type=_port,
        default=None,
        help=f"listen port (default: $PORT or {_DEFAULTS.port}; 0 picks a free one)",
    )
    net.add_argument(
        "--advertise",
        metavar="URL",
        default=None,
        help="URL peers reach this node at (default: made of --host and the port; with"
        " --host 0.0.0.0, this machine's primary address)",
    )
    net.add_argument(
        "--name", metavar="N", default=None, help="name of this node (default: <hostname>:<port>)"
    )
    net.add_argument(
        "--data-dir",
        metavar="D",
        type=Path,
        default=_DEFAULTS.data_dir,
        help="modules, app records and local state (default: %(default)s)",
    )
    net.add_argument(
        "--token",
        metavar="T",
        default=None,
        help="bearer token required to deploy, undeploy and roll back",
    )
    net.add_argument(
        "--call-token",
        metavar="T",
        default=None,
        help="bearer token required to call apps (default: calls are open)",
    )
    net.add_argument(
        "--read-token",
        metavar="T",
        default=None,
        help="bearer token required to read /status, /apps and /metrics (the --token is"
        " accepted too; default: open, and /status shows no peer ids or addresses)",
    )
    net.add_argument(
        "--header-timeout",
        metavar="S",
        type=_seconds,
        default=_DEFAULTS.header_timeout,
        help="seconds from a request's first byte to the end of its headers, else the"
        " connection is closed; 0: no limit (default: %(default)s)",
    )
    net.add_argument(
        "--body-timeout",
        metavar="S",
        type=_seconds,
        default=_DEFAULTS.body_timeout,
        help="seconds from a request's headers to the end of its body (deploys, calls), else"
        " 408; 0: no limit (default: %(default)s)",
    )
    net.add_argument(
        "--max-client-conns",
        metavar="N",
        type=_int_at_least(0),
        default=_DEFAULTS.max_client_conns,
        help="open connections per client IP address; past it a new one gets 503; 0: no"
        " cap (default: %(default)s)",
    )
    cluster = run.add_argument_group("cluster")
    cluster.add_argument(
        "--join",
        action="append",
        default=[],
        metavar="URL",
        help="URL of a node to join through, https:// with --tls-cert (repeatable)",
    )
    cluster.add_argument(
        "--no-mdns",
        dest="mdns",
        action="store_false",
        help="do not discover peers with zeroconf",
    )
    cluster.add_argument(
        "--cluster-key",
        metavar="K",
        default=None,
        help="shared secret every peer must prove (membership links and module fetches)",
    )
    cluster.add_argument(
        "--accept-cluster-key",
        action="append",
        default=[],
        metavar="K",
        help="also accept peers that prove K, to change the cluster key one node at a time"
        " (repeatable; see docs/operations.md)",
    )
    cluster.add_argument(
        "--insecure",
        action="store_true",
        help="allow listening beyond loopback without a cluster key",
    )
    tls = run.add_argument_group(
        "TLS", "Serve the port over HTTPS and dial peers over TLS only (wss://, https://)."
    )
    tls.add_argument(
        "--tls-cert",
        metavar="FILE",
        type=Path,
        default=None,
        help="PEM certificate (chain) of this node; it must name the host peers dial",
    )
    tls.add_argument(
        "--tls-key", metavar="FILE", type=Path, default=None, help="unencrypted PEM key of it"
    )
    tls.add_argument(
        "--tls-ca",
        metavar="FILE",
        type=Path,
        default=None,
        help="PEM bundle of the CAs whose certificates peers must have (a private cluster CA;"
        " default: the system's trust store)",
    )
    host = run.add_argument_group("guests")
    host.add_argument(
        "--redis-url",
        action="append",
        type=_redis_url,
        default=[],
        metavar="[NAME=]URL",
        help="Redis for the 'redis' host namespace: URL is the default connection, NAME=URL a"
        " named one guests select with their binding (repeatable)",
    )
    host.add_argument(
        "--pool-size",
        metavar="N",
        type=_int_at_least(0),
        default=_DEFAULTS.pool_size,
        help="idle warm instances kept per app (default: %(default)s)",
    )
    host.add_argument(
        "--max-instances",
        metavar="N",
        type=_int_at_least(1),
        default=_DEFAULTS.max_instances,
        help="live instances on this node; at it the least recently used idle one is freed,"
        " and with none idle calls get 503 (default: %(default)s)",
    )
    host.add_argument(
        "--idle-timeout",
        type=_seconds,
        default=_DEFAULTS.idle_timeout,
        metavar="S",
        help="seconds an instance may stay idle before it is freed; 0 keeps them"
        " (default: %(default)s)",
    )
    host.add_argument(
        "--call-timeout",
        type=_positive_float,
        default=_DEFAULTS.call_timeout,
        metavar="S",
        help="guest execution seconds per call, host waits excluded (default: %(default)s)",
    )
    host.add_argument(
        "--call-wall-timeout",
        type=_positive_float,
        default=_DEFAULTS.call_wall_timeout,
        metavar="S",
        help="wall-clock seconds per call, host waits included (default: %(default)s)",
    )
    host.add_argument(
        "--max-memory",
        type=_int_at_least(1),
        default=_DEFAULTS.max_memory_mib,
        metavar="MIB",
        help="linear memory per instance, MiB; its tables get 1/8 more (default: %(default)s)",
    )
    host.add_argument(
        "--max-upload",
        type=_int_at_least(1),
        default=_DEFAULTS.max_upload_mib,
        metavar="MIB",
        help="largest module POST /deploy accepts, MiB (default: %(default)s)",
    )
    host.add_argument(
        "--max-payload",
        type=_int_at_least(1),
        default=_DEFAULTS.max_payload_mib,
        metavar="MIB",
        help="largest call payload, MiB (default: %(default)s)",
    )
    host.add_argument(
        "--max-kv",
        type=_int_at_least(1),
        default=_DEFAULTS.max_kv_mib,
        metavar="MIB",
        help="bytes (keys and values) one app may keep in the kv store, MiB (default: %(default)s)",
    )
    host.add_argument(
        "--max-kv-keys",
        type=_int_at_least(1),
        default=_DEFAULTS.max_kv_keys,
        metavar="N",
        help="keys one app may keep in the kv store (default: %(default)s)",
    )
    host.add_argument(
        "--guest-log-rate",
        type=_int_at_least(1),
        default=_DEFAULTS.guest_log_rate,
        metavar="N",
        help="console lines per second one app may log, bursts of 10 times as many; the rest"
        " are dropped and counted (default: %(default)s)",
    )
    run.add_argument(
        "--max-apps",
        type=_int_at_least(1),
        default=_DEFAULTS.max_apps,
        metavar="N",
        help="apps a deploy may create in the cluster (default: %(default)s)",
    )
    run.add_argument(
        "--gc-interval",
        type=_seconds,
        default=_DEFAULTS.gc_interval,
        metavar="S",
        help="seconds between collections of module blobs no app record references; 0 turns"
        " the collector off (default: %(default)s)",
    )
    run.add_argument(
        "--gc-grace",
        type=_seconds,
        default=_DEFAULTS.gc_grace,
        metavar="S",
        help="seconds an unreferenced blob is kept after it was last stored or loaded"
        " (default: %(default)s)",
    )
    run.add_argument(
        "--log-format",
        choices=FORMATS,
        default=_DEFAULTS.log_format,
        help="log lines on stderr as text or JSON objects (default: %(default)s)",
    )

    deploy = sub.add_parser(
        "deploy", help="deploy a module", description="Upload a waPC module to a node."
    )
    deploy.add_argument("file", type=Path, metavar="FILE", help="the .wasm module")
    deploy.add_argument("--name", default=None, help="app name (default: FILE without .wasm)")
    deploy.add_argument(
        "--capabilities",
        default=None,
        metavar="NS[,NS...]",
        help="host namespaces to grant (host, kv, redis, call; default: all)",
    )
    _add_token(deploy, env)
    _add_url(deploy, env)

    call = sub.add_parser(
        "call",
        help="call an app",
        description="Call an operation of an app; the response bytes go to stdout.",
    )
    call.add_argument("app", metavar="APP")
    call.add_argument("op", metavar="OP", nargs="?", default="main", help="(default: %(default)s)")
    data = call.add_mutually_exclusive_group()
    data.add_argument("--data", default=None, metavar="S", help="payload text (UTF-8)")
    data.add_argument(
        "--data-file", type=Path, default=None, metavar="F", help="payload file ('-' for stdin)"
    )
    call.add_argument(
        "--token",
        default=env.get("ASSEMBLEX_CALL_TOKEN"),
        help="call token, where the node requires one (default: $ASSEMBLEX_CALL_TOKEN)",
    )
    _add_url(call, env)

    apps = sub.add_parser(
        "apps",
        help="list apps",
        description="List the apps a node knows; with APP, that app's versions (current and"
        " those a rollback goes back to, newest first).",
    )
    apps.add_argument("app", metavar="APP", nargs="?", default=None)
    _add_read_token(apps, env)
    _add_url(apps, env)

    rollback = sub.add_parser(
        "rollback",
        help="roll an app back",
        description="Make the previous version of an app current again, on every node (as a"
        " new version); again goes one further back.",
    )
    rollback.add_argument("app", metavar="APP")
    _add_token(rollback, env)
    _add_url(rollback, env)

    undeploy = sub.add_parser(
        "undeploy", help="remove an app", description="Remove an app from every node."
    )
    undeploy.add_argument("app", metavar="APP")
    _add_token(undeploy, env)
    _add_url(undeploy, env)

    status = sub.add_parser(
        "status", help="show a node's status", description="Summarize a node's status."
    )
    status.add_argument("--json", action="store_true", help="print the raw JSON instead")
    _add_read_token(status, env)
    _add_url(status, env)

    salvage = sub.add_parser(
        "salvage-log",
        help="recover a damaged replica.log",
        description="Recover the replica.log of a stopped node that refuses to start because"
        " the log is damaged before intact records: keep every intact record, skip the damaged"
        " ones (their content is lost on this node; peers may still have it), keep the"
        " damaged file as replica.log.damaged and write a clean log.",
    )
    salvage.add_argument(
        "--data-dir",
        metavar="D",
        type=Path,
        default=_DEFAULTS.data_dir,
        help="the node's data dir; the node must not be running (default: %(default)s)",
    )
    return parser


def config_from_args(ns: argparse.Namespace, environ: Mapping[str, str] | None = None) -> Config:
    """The node configuration of parsed ``run`` arguments. Raises ValueError on bad values."""
    env = os.environ if environ is None else environ
    port = ns.port
    if port is None:
        port = _port_from_env(env.get("PORT"))
    bindings = [b for b, _ in ns.redis_url]
    duplicates = sorted({b for b in bindings if bindings.count(b) > 1})
    if duplicates:
        shown = ", ".join(repr(b) if b else "the default" for b in duplicates)
        raise ValueError(f"--redis-url given twice for {shown}")
    if not ns.cluster_key and not ns.insecure and not _is_loopback(ns.host):
        raise ValueError(
            f"listening on {ns.host} reaches beyond this machine: give --cluster-key K so that"
            " only nodes that know it can join, or --insecure to run an open cluster"
        )
    if ns.accept_cluster_key and not ns.cluster_key:
        raise ValueError("--accept-cluster-key needs --cluster-key, the key this node proves")
    _check_tls_flags(ns)
    if ns.advertise is not None:
        _check_advertise(ns.advertise, tls=ns.tls_cert is not None)
    return Config(
        host=ns.host,
        port=port,
        advertise=ns.advertise,
        name=ns.name,
        data_dir=ns.data_dir,
        join=tuple(ns.join),
        mdns=ns.mdns,
        cluster_key=ns.cluster_key,
        accepted_cluster_keys=tuple(ns.accept_cluster_key),
        insecure=ns.insecure,
        tls_cert=ns.tls_cert,
        tls_key=ns.tls_key,
        tls_ca=ns.tls_ca,
        token=ns.token,
        call_token=ns.call_token,
        read_token=ns.read_token,
        header_timeout=ns.header_timeout,
        body_timeout=ns.body_timeout,
        max_client_conns=ns.max_client_conns,
        redis_urls=tuple(ns.redis_url),
        pool_size=ns.pool_size,
        max_instances=ns.max_instances,
        idle_timeout=ns.idle_timeout,
        max_kv_mib=ns.max_kv,
        max_kv_keys=ns.max_kv_keys,
        guest_log_rate=ns.guest_log_rate,
        call_timeout=ns.call_timeout,
        call_wall_timeout=ns.call_wall_timeout,
        max_memory_mib=ns.max_memory,
        max_upload_mib=ns.max_upload,
        max_payload_mib=ns.max_payload,
        max_apps=ns.max_apps,
        gc_interval=ns.gc_interval,
        gc_grace=ns.gc_grace,
        log_format=ns.log_format,
    )


def _check_tls_flags(ns: argparse.Namespace) -> None:
    """The TLS flags go together, and the --join URLs have this node's scheme."""
    if ns.tls_cert is not None and ns.tls_key is None:
        raise ValueError("--tls-cert needs --tls-key, the private key of the certificate")
    if ns.tls_key is not None and ns.tls_cert is None:
        raise ValueError("--tls-key needs --tls-cert, the certificate of the key")
    tls = ns.tls_cert is not None
    if ns.tls_ca is not None and not tls:
        raise ValueError("--tls-ca is for a node that serves TLS: give --tls-cert and --tls-key")
    for url in ns.join:
        if tls and not url.startswith(("https://", "wss://")):
            raise ValueError(f"--join {url}: a node that serves TLS joins through https:// URLs")
        if not tls and url.startswith(("https://", "wss://")):
            raise ValueError(
                f"--join {url}: joining a TLS cluster needs --tls-cert and --tls-key"
                " (a cluster is all TLS or all plain)"
            )


def _check_advertise(url: str, *, tls: bool) -> None:
    scheme = "https" if tls else "http"
    parts = urllib.parse.urlsplit(url)
    try:
        port = parts.port
    except ValueError:
        port = None
    if parts.scheme != scheme or not parts.hostname or port is None or parts.path not in ("", "/"):
        raise ValueError(
            f"--advertise {url}: give {scheme}://HOST:PORT, the address peers reach this node at"
        )


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _port_from_env(text: str | None) -> int:
    if text is None or not text.strip():
        return _DEFAULTS.port
    try:
        return _port(text.strip())
    except argparse.ArgumentTypeError as e:
        raise ValueError(f"$PORT: {e}") from None


# -- run -----------------------------------------------------------------------------------------


def load_tls(config: Config) -> NodeTLS | None:
    """The TLS contexts of ``config``, None when it serves plain HTTP. Raises TLSError."""
    if config.tls_cert is None or config.tls_key is None:
        return None
    return NodeTLS.load(config.tls_cert, config.tls_key, config.tls_ca)


async def serve(
    config: Config, stop: asyncio.Event | None = None, tls: NodeTLS | None = None
) -> int:
    """Run a node and its HTTP API until ``stop`` is set (or SIGINT/SIGTERM when it is None).

    ``tls``: the contexts of a config with a certificate (``load_tls``; loaded here when None).
    """
    # Imported here so that the client subcommands start without loading the runtime.
    from aiohttp import web

    from .api import create_app
    from .cluster import Cluster
    from .conns import GuardedRunner
    from .node import Node

    if tls is None:
        tls = load_tls(config)
    if stop is None:
        stop = asyncio.Event()
        _stop_on_signals(stop)
        if tls is not None:
            _reload_tls_on_sighup(tls, config)
    # The node's peers, made now and run below once the node listens (its URL known).
    cluster = Cluster(ssl=tls.client if tls is not None else None)
    async with Node(config, peers=cluster) as node:
        # handler_cancellation: a client that goes away cancels its call (the guest stops at
        # the next tick and its instance is dropped) instead of running it to the end.
        runner = GuardedRunner(
            create_app(node, peer_handler=cluster.handle_peer),
            header_timeout=config.header_timeout,
            max_client_conns=config.max_client_conns,
            keepalive_timeout=KEEPALIVE_TIMEOUT,
            access_log=None,
            shutdown_timeout=10.0,
            handler_cancellation=True,
        )
        await runner.setup()
        try:
            # A deep accept queue: bursts of thousands of new connections are expected.
            site = web.TCPSite(
                runner,
                config.host,
                config.port,
                backlog=4096,
                ssl_context=tls.server if tls is not None else None,
            )
            try:
                await site.start()
            except OSError as e:
                log.error("cannot listen on %s:%s: %s", config.host, config.port, e.strerror or e)
                return 1
            url = _listen_url(runner, config)
            node.url = url
            log.info("assemblexd %s listening on %s", config.node_name, url, extra={"url": url})
            if (
                config.advertise is None
                and config.host in WILDCARD_HOSTS
                and _is_loopback(urllib.parse.urlsplit(url).hostname or "")
            ):
                log.warning(
                    "listening on every interface, but this machine has no route beyond"
                    " loopback: peers are told %s, which only this machine reaches;"
                    " give --advertise URL",
                    url,
                )
            async with cluster.running(node):
                await stop.wait()
                log.info("shutting down")
        finally:
            await runner.cleanup()
    return 0


def _stop_on_signals(stop: asyncio.Event) -> None:
    loop = asyncio.get_running_loop()
    sigs = (signal.SIGINT, signal.SIGTERM)

    def on_signal() -> None:
        stop.set()
        # A second signal gets the default behaviour: an impatient user can still kill it.
        for s in sigs:
            loop.remove_signal_handler(s)

    for s in sigs:
        loop.add_signal_handler(s, on_signal)


def _reload_tls_on_sighup(tls: NodeTLS, config: Config) -> None:
    """SIGHUP reads the certificate, key and CA files again (a renewed certificate)."""
    cert, key = config.tls_cert, config.tls_key
    assert cert is not None
    assert key is not None

    def on_sighup() -> None:
        try:
            tls.reload(cert, key, config.tls_ca)
        except TLSError as e:
            log.error("SIGHUP: kept the certificate in use: %s", e)
        else:
            log.info("SIGHUP: reloaded the TLS certificate from %s", config.tls_cert)

    asyncio.get_running_loop().add_signal_handler(signal.SIGHUP, on_sighup)


def _listen_url(runner: web.AppRunner, config: Config) -> str:
    """The URL clients use, with the real port when the config asked for port 0."""
    for addr in runner.addresses:
        if isinstance(addr, tuple) and len(addr) >= 2:
            return dataclasses.replace(config, port=int(addr[1])).url
    return config.url


def _run(ns: argparse.Namespace) -> int:
    try:
        config = config_from_args(ns)
        tls = load_tls(config)  # read and checked before anything starts
    except ValueError as e:  # TLSError included
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


def _salvage_log(data_dir: Path) -> int:
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


# -- client commands -----------------------------------------------------------------------------


async def _client_command(ns: argparse.Namespace) -> int:
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
        elif ns.command == "apps" and ns.app is not None:
            rec = await client.app(ns.app, token=ns.read_token)
            print(_format_apps([rec, *rec.get("history", [])], current=True))
        elif ns.command == "apps":
            print(_format_apps(await client.apps(token=ns.read_token)))
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
            print(json.dumps(data, indent=2) if ns.json else _format_status(data))
    return 0


def _payload(ns: argparse.Namespace) -> bytes:
    if ns.data is not None:
        return str(ns.data).encode("utf-8")
    if ns.data_file is not None:
        if str(ns.data_file) == "-":
            return sys.stdin.buffer.read()
        return Path(ns.data_file).read_bytes()
    return b""


def _format_apps(apps: Sequence[Mapping[str, Any]], *, current: bool = False) -> str:
    """A table of app records; with ``current``, records of one app, the first one current
    (marked ``*``), with where and when each was deployed."""
    if not apps:
        return "no apps deployed"
    rows: list[tuple[str, ...]] = [("NAME", "VERSION", "SIZE", "SHA256", "CAPABILITIES")]
    if current:
        rows = [("", "VERSION", "SHA256", "DEPLOYED", "ON", "CAPABILITIES")]
    for i, a in enumerate(apps):
        caps = ",".join(a.get("capabilities", []))
        if current:
            when = a.get("deployed_at")
            rows.append(
                (
                    "*" if i == 0 else "",
                    str(a.get("version", "")),
                    str(a.get("sha256", ""))[:12],
                    time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(when))
                    if isinstance(when, int | float)
                    else "?",
                    str(a.get("origin", "")),
                    caps,
                )
            )
            continue
        rows.append(
            (
                str(a.get("name", "")),
                str(a.get("version", "")),
                str(a.get("size", "")),
                str(a.get("sha256", ""))[:12],
                caps,
            )
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join(
        "  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows
    )


def _label(x: Any) -> str:
    if isinstance(x, Mapping):
        return str(x.get("name") or x.get("id") or x.get("url") or "?")
    return str(x)


def _as_list(x: Any) -> list[Any]:
    if isinstance(x, Mapping):
        return [
            {"name": k, **v} if isinstance(v, Mapping) else {"name": k, "value": v}
            for k, v in x.items()
        ]
    return list(x) if isinstance(x, list | tuple) else []


def _format_status(data: Mapping[str, Any]) -> str:
    """The status in the terminal: this node, then the membership graph (each member, whether
    it is alive and its active-view neighbours by name), then each app with the version every
    node runs."""
    node = data.get("node", {})
    lines = [f"node       {_label(node)}"]
    if isinstance(node, Mapping):
        for key in ("id", "url"):
            if node.get(key):
                lines.append(f"{key:<10} {node[key]}")
    if isinstance(data.get("uptime"), int | float):
        lines.append(f"uptime     {_duration(data['uptime'])}")
    instances = data.get("instances")
    if isinstance(instances, Mapping):
        lines.append(
            f"instances  {instances.get('live', '?')} live of {instances.get('limit', '?')}"
        )
    members = [m for m in _as_list(data.get("members", [])) if isinstance(m, Mapping)]
    names = {str(m["id"]): _label(m) for m in members if m.get("id")}

    def peer_name(x: Any) -> str:
        peer_id = x.get("id") if isinstance(x, Mapping) else x
        if isinstance(peer_id, str) and peer_id in names:
            return names[peer_id]
        return _label(x)[:12]  # a peer with no member record yet: its id, shortened

    for key in ("active", "passive"):
        items = [peer_name(x) for x in _as_list(data.get(key, []))]
        lines.append(f"{key:<10} {len(items)}" + (f": {', '.join(items)}" if items else ""))
    items = [_label(x) for x in _as_list(data.get("members", []))]
    lines.append(f"members    {len(items)}" + (f": {', '.join(items)}" if items else ""))
    me = node.get("id") if isinstance(node, Mapping) else None
    lines.extend(_format_members(members, me, peer_name))
    apps = _as_list(data.get("apps", []))
    lines.append(f"apps       {len(apps)}")
    for a in apps:
        if not isinstance(a, Mapping):
            lines.append(f"  {a}")
            continue
        lines.append("  " + _format_app_status(a))
        versions = _format_versions(a, [_label(m) for m in members])
        if versions:
            lines.append(f"    {versions}")
    return "\n".join(lines)


def _format_members(
    members: Sequence[Mapping[str, Any]], me: Any, peer_name: Callable[[Any], str]
) -> list[str]:
    """One line per member: ``* name  url  alive  -> neighbour, ...`` (``*``: this node)."""
    rows = []
    for m in members:
        alive = m.get("alive")
        active = m.get("active")
        neighbours = sorted(peer_name(p) for p in active) if isinstance(active, list) else []
        rows.append(
            (
                _label(m),
                str(m.get("url") or "-"),
                "alive" if alive is True else "gone" if alive is False else "?",
                "-> " + (", ".join(neighbours) if neighbours else "(no neighbours)"),
            )
        )
    if not rows:
        return []
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return [
        ("  * " if me is not None and m.get("id") == me else "    ")
        + "  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip()
        for m, r in zip(members, rows, strict=True)
    ]


def _format_versions(a: Mapping[str, Any], members: Sequence[str]) -> str:
    """``on nodes: n1 v2, n2 v1, n3 -``: the version each member runs (``-``: none)."""
    versions = a.get("versions")
    if not isinstance(versions, Mapping):
        return ""
    order = [*members, *(str(n) for n in versions if str(n) not in members)]
    if not order:
        return ""
    shown = [f"{n} v{versions[n]}" if n in versions else f"{n} -" for n in order]
    return "on nodes: " + ", ".join(shown)


def _format_app_status(a: Mapping[str, Any]) -> str:
    version = a.get("version", a.get("value", "?"))
    text = f"{_label(a)} v{version}"
    versions = a.get("versions")
    if isinstance(versions, Mapping):
        stale = [f"{n} v{v}" for n, v in versions.items() if v != version]
        if stale:
            text += f" (behind: {', '.join(stale)})"
    pool = a.get("pool")
    if isinstance(pool, Mapping):
        text += f", pool {pool.get('idle', '?')} idle / {pool.get('busy', '?')} busy"
    return text


def _duration(seconds: float) -> str:
    s = int(seconds)
    d, h, m = s // 86400, s % 86400 // 3600, s % 3600 // 60
    parts = [f"{d}d"] * bool(d) + [f"{h}h"] * bool(d or h) + [f"{m}m"] * bool(d or h or m)
    return " ".join([*parts, f"{s % 60}s"])


# -- entry point ---------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    """Run the ``assemblexd`` command line; returns the exit status."""
    parser = build_parser()
    try:
        ns = parser.parse_args(argv)
    except SystemExit as e:
        # --help and usage errors: argparse already printed; keep main() returning.
        return e.code if isinstance(e.code, int) else 2
    if ns.command == "run":
        return _run(ns)
    if ns.command == "salvage-log":
        return _salvage_log(ns.data_dir)
    try:
        return asyncio.run(_client_command(ns))
    except ClientError as e:
        print(f"assemblexd {ns.command}: error: {e.message}", file=sys.stderr)
        return 1
    except OSError as e:
        print(f"assemblexd {ns.command}: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
