"""Zeroconf discovery: advertise this node and turn the nodes found into JOIN contacts.

Each node registers ``<name>._assemblex._tcp.local.`` with its node id (``id``) and peer
address (``addr``) in the TXT record, and browses the same type; every other node it resolves
becomes a `Peer` handed to ``on_found`` (the `Node` makes it a contact: joined through when
isolated, a passive candidate otherwise).

Multicast needs an interface that has it: the host's own loopback does not, but a network
namespace's ``lo`` does after ``ip link set lo up multicast on`` and
``ip route add 224.0.0.0/4 dev lo``. By default every IPv4 interface is used (loopback
included), so nodes on one machine find each other where multicast works.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import ipaddress
import logging
import re
from collections.abc import Callable
from types import TracebackType
from typing import Any
from urllib.parse import urlsplit

from zeroconf import InterfaceChoice, IPVersion, ServiceStateChange, Zeroconf
from zeroconf.asyncio import AsyncServiceBrowser, AsyncServiceInfo, AsyncZeroconf

from ._messages import Peer

__all__ = ["SERVICE_TYPE", "Discovery"]

SERVICE_TYPE = "_assemblex._tcp.local."
_log = logging.getLogger("membership.discovery")
_RESOLVE_MS = 3000


def _instance(node_id: str) -> str:
    """A DNS-safe, collision-resistant instance label for `node_id`."""
    label = re.sub(r"[^A-Za-z0-9-]", "-", node_id)[:40].strip("-") or "node"
    return f"{label}-{hashlib.sha256(node_id.encode()).hexdigest()[:8]}"


def _text(properties: dict[bytes, bytes | None], key: bytes) -> str | None:
    value = properties.get(key)
    try:
        return value.decode() if value else None
    except UnicodeDecodeError:
        return None


class Discovery:
    """Advertise `me` and report the other nodes found, while in ``async with``.

    Args:
        me: this node (its address's host should be an IP others can reach).
        on_found: called in the event loop with each resolved peer (repeats are possible).
        interfaces: IPv4 addresses to use; all interfaces by default.
    """

    def __init__(
        self,
        me: Peer,
        on_found: Callable[[Peer], None],
        interfaces: list[str] | None = None,
    ) -> None:
        self.me = me
        self._on_found = on_found
        self._interfaces: Any = interfaces or InterfaceChoice.All
        self._zeroconf: AsyncZeroconf | None = None
        self._browser: AsyncServiceBrowser | None = None
        self._info: AsyncServiceInfo | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._group: asyncio.TaskGroup | None = None

    def _service_info(self) -> AsyncServiceInfo:
        parts = urlsplit(self.me.address)
        addresses: list[bytes] = []
        with contextlib.suppress(ValueError):  # a host name: the TXT address still works
            addresses.append(ipaddress.ip_address(parts.hostname or "").packed)
        instance = _instance(self.me.id)
        return AsyncServiceInfo(
            SERVICE_TYPE,
            f"{instance}.{SERVICE_TYPE}",
            addresses=addresses,
            port=parts.port or 0,
            properties={"id": self.me.id, "addr": self.me.address},
            server=f"{instance}.local.",
        )

    async def __aenter__(self) -> Discovery:
        self._group = asyncio.TaskGroup()
        await self._group.__aenter__()
        self._zeroconf = AsyncZeroconf(interfaces=self._interfaces, ip_version=IPVersion.V4Only)
        self._info = self._service_info()
        await self._zeroconf.async_register_service(self._info, allow_name_change=True)
        self._browser = AsyncServiceBrowser(
            self._zeroconf.zeroconf, SERVICE_TYPE, handlers=[self._on_change]
        )
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        for task in list(self._tasks):
            task.cancel()
        try:
            if self._browser is not None:
                await self._browser.async_cancel()
            if self._zeroconf is not None:
                if self._info is not None:
                    await self._zeroconf.async_unregister_service(self._info)
                await self._zeroconf.async_close()
        finally:
            if self._group is not None:
                await self._group.__aexit__(None, None, None)

    def _on_change(
        self,
        zeroconf: Zeroconf,
        service_type: str,
        name: str,
        state_change: ServiceStateChange,
    ) -> None:
        if state_change is ServiceStateChange.Removed or self._group is None:
            return
        # Resolution is a network exchange; the browser calls us synchronously in the loop.
        task = self._group.create_task(self._resolve(service_type, name))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _resolve(self, service_type: str, name: str) -> None:
        if self._zeroconf is None:
            return
        info = AsyncServiceInfo(service_type, name)
        if not await info.async_request(self._zeroconf.zeroconf, _RESOLVE_MS):
            _log.debug("could not resolve %s", name)
            return
        node_id, address = _text(info.properties, b"id"), _text(info.properties, b"addr")
        if node_id is None or address is None:
            _log.debug("%s has no id/addr in its TXT record", name)
            return
        peer = Peer(node_id, address)
        if peer != self.me:
            _log.info("discovered %s", peer)
            self._on_found(peer)
