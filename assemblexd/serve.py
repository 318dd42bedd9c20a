"""The daemon: ``serve(config)`` runs a node and its HTTP API until told to stop."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import signal
import urllib.parse
from typing import TYPE_CHECKING

from .config import WILDCARD_HOSTS, Config, is_loopback
from .tls import NodeTLS, TLSError

if TYPE_CHECKING:
    from aiohttp import web

__all__ = ["KEEPALIVE_TIMEOUT", "load_tls", "serve"]

log = logging.getLogger("assemblexd")

KEEPALIVE_TIMEOUT = 75.0
"""Seconds an idle kept-alive HTTP connection stays open (aiohttp's own default is an hour)."""


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
    A wildcard ``host`` is advertised as this machine's primary address, found here
    (``Config.with_primary_address``) unless the config already has it.
    """
    # Imported here so that the client subcommands start without loading the runtime.
    from aiohttp import web

    from .api import create_app
    from .cluster import Cluster
    from .conns import GuardedRunner
    from .node import Node

    config = config.with_primary_address()
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
                and is_loopback(urllib.parse.urlsplit(url).hostname or "")
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
