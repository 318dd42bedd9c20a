"""The cluster: a node's peers, the sync of its replica, and modules fetched from peers.

Theory of operation
-------------------
* **Membership.** A ``membership.Node`` (HyParView + Plumtree) runs over websockets on the
  node's own HTTP port (``GET /peer``), so a node needs one port. ``--join URL`` seeds and
  zeroconf discovery (``--no-mdns`` turns it off) give it contacts; the cluster key, when set,
  is proven by both ends of every peer link before anything else counts.
* **TLS.** A node that serves TLS (``--tls-cert``) advertises ``https://`` and dials its
  peers at ``wss://`` and fetches modules over ``https://`` only, verifying certificates with
  the client context it is given (``--tls-ca``, or the system's store); a plain node dials
  ``ws://`` and ``http://`` only. A cluster is all TLS or all plain: a member whose URL has
  the other scheme is one this node cannot reach.
* **Sync.** The replica's anti-entropy (``crdt.SyncNode``, the library's asyncio adapter of
  ``crdt.AntiEntropy``) treats the active view as its peers: a neighbour that comes up is sent
  our digest at once (a restarted or new node catches up that way), fresh local writes are
  pushed to every neighbour and forwarded onwards, and a periodic round repairs what pushes
  missed. Its messages ride membership's direct messages.
* **Members.** Each node keeps a record of itself in the store (``members/<id>``: name, URL,
  active view, the version of each app it runs, its live actors), rewritten when any of that
  but the actor count changes and every ``HEARTBEAT`` seconds; a node that stops cleanly marks
  its record ``left`` (the actors' quorum counts only members that have not left). ``/status``
  draws the graph from these records.
* **Modules.** A supervisor that needs a module it does not have asks the app's origin node,
  then the other members, for ``GET /blobs/<sha256>``; the node checks the hash before use.
  Module bytes never ride the gossip.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
import ssl
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
from aiohttp import web

import crdt
import membership

from .auth import blob_proof
from .config import MIB
from .node import Node
from .peers import FetchError, Views
from .records import AppRecord

__all__ = ["HEARTBEAT", "Cluster", "peer_address"]

log = logging.getLogger(__name__)

HEARTBEAT = 30.0
"""Seconds between two rewrites of this node's member record when nothing changed."""
ALIVE = 3 * HEARTBEAT
"""A member whose record is older than this, and who is in no view of ours, is shown as gone."""
PEER_PATH = "/peer"


def peer_address(url: str) -> str:
    """The membership address of the node whose HTTP URL is ``url``."""
    url = url.rstrip("/")
    if url.startswith("https://"):
        return "wss://" + url[len("https://") :] + PEER_PATH
    if url.startswith("http://"):
        return "ws://" + url[len("http://") :] + PEER_PATH
    if url.startswith(("ws://", "wss://")):
        return url
    return "ws://" + url + PEER_PATH


class Cluster:
    """Everything a node does with other nodes: the node's :class:`~assemblexd.peers.Peers`.

    Made before the node and passed to it (``Node(config, peers=cluster)``), then run with it
    once the node has opened its store and listens (its ``url`` known):
    ``async with cluster.running(node):``. Until then it has no peers: modules cannot be
    fetched (FetchError), ``views()`` is None and ``GET /peer`` is refused (503).

    Args:
        sync: the anti-entropy settings (defaults when None).
        ssl: the client context of a node that serves TLS: peers are dialled over ``wss://``
            and modules fetched over ``https://`` with it, and only so. None for a plain node.
    """

    def __init__(
        self,
        *,
        sync: crdt.SyncConfig | None = None,
        ssl: ssl.SSLContext | None = None,
    ) -> None:
        self._sync_config = sync
        self._ssl = ssl
        self.client_ssl = ssl
        self._running: _Running | None = None

    @contextlib.asynccontextmanager
    async def running(self, node: Node) -> AsyncIterator[Cluster]:
        """Run this node's membership, the sync of its replica and its member record, until
        the block exits. ``node`` is running (inside its ``async with``), its ``url`` set to
        where it listens."""
        if self._running is not None:
            raise RuntimeError("this cluster is running already")
        async with _Running(node, self._sync_config, self._ssl) as running:
            self._running = running
            try:
                yield self
            finally:
                self._running = None

    # -- Peers ------------------------------------------------------------------------------

    async def fetch_module(self, record: AppRecord) -> bytes:
        """The module of ``record`` from a peer: its origin first, then any other member.

        Raises FetchError.
        """
        if self._running is None:
            raise FetchError(
                f"module {record.sha256[:12]} is not on this node (the cluster is not running)"
            )
        return await self._running.fetch_module(record)

    def views(self) -> Views | None:
        """(active view, passive view, members); None while the cluster is not running."""
        return None if self._running is None else self._running.views()

    def peer_read_waits(self) -> dict[str, int]:
        return {} if self._running is None else self._running.peer_read_waits()

    def apps_changed(self) -> None:
        """The node runs other versions: its member record is rewritten."""
        if self._running is not None:
            self._running.member_dirty.set()

    # -- the HTTP API -----------------------------------------------------------------------

    async def handle_peer(self, request: web.Request) -> web.StreamResponse:
        """``GET /peer``: a peer's websocket, served as a membership channel."""
        if self._running is None:
            raise web.HTTPServiceUnavailable(reason="this node's cluster layer is not running")
        return await self._running.handle_peer(request)


class _Running:
    """A running cluster: the membership node, the sync of the replica, the member record
    and the HTTP session modules are fetched with. ``async with _Running(node, ...):``."""

    def __init__(
        self, node: Node, sync: crdt.SyncConfig | None, ssl: ssl.SSLContext | None
    ) -> None:
        self.node = node
        config = node.config
        key = config.cluster_key.encode() if config.cluster_key else None
        self._ssl = ssl
        self._blob_scheme = "https://" if ssl is not None else "http://"
        self.transport = membership.WebSocketTransport(path=PEER_PATH, ssl=ssl)
        self.membership = membership.Node(
            membership.NodeConfig(
                node_id=node.id,
                advertise=peer_address(node.url),
                join=tuple(peer_address(u) for u in config.join),
                cluster_key=key,
                accepted_keys=tuple(k.encode() for k in config.accepted_cluster_keys),
                mdns=config.mdns,
            ),
            self.transport,
        )
        self.sync = crdt.SyncNode(node.replica, self._send_sync, sync)
        self._peers: dict[str, membership.Peer] = {}
        self._sent = node.metrics.sync_bytes.labels("sent")
        self._received = node.metrics.sync_bytes.labels("received")
        self.member_dirty = asyncio.Event()
        """Set when this node's member record must be rewritten."""
        self._stack = contextlib.AsyncExitStack()
        self._tasks: list[asyncio.Task[None]] = []
        self._session: aiohttp.ClientSession | None = None
        self._handler = membership.websocket_handler(self.membership.handle_channel)

    async def __aenter__(self) -> _Running:
        events = self.membership.events()  # before the node starts: no event is missed
        await self._stack.enter_async_context(self.membership)
        self._session = await self._stack.enter_async_context(
            aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=60, sock_connect=5),
                connector=aiohttp.TCPConnector(ssl=self._ssl if self._ssl is not None else True),
            )
        )
        await self._stack.enter_async_context(self.sync)
        group = await self._stack.enter_async_context(asyncio.TaskGroup())
        for coro in (self._events(events), self._members_loop()):
            self._tasks.append(group.create_task(coro))
        self.member_dirty.set()
        return self

    async def __aexit__(self, *exc: object) -> None:
        for task in self._tasks:
            task.cancel()
        await self._leave()
        await self._stack.aclose()

    async def _leave(self) -> None:
        """Mark this node's member record as left (a clean stop), and give the sync a moment
        to push it: the actors' quorum counts the members that have not left."""
        record = {**self._full_record(), "updated": time.time(), "left": True}
        data = json.dumps(record, sort_keys=True).encode()
        try:
            await asyncio.to_thread(self.node.replica.set, f"members/{self.node.id}", data)
        except crdt.Error as exc:
            log.error("cannot mark this node's member record as left: %s", exc)
            return
        if self._peers:
            await asyncio.sleep(0.3)

    async def handle_peer(self, request: web.Request) -> web.StreamResponse:
        """``GET /peer``: a peer's websocket, served as a membership channel."""
        response: web.StreamResponse = await self._handler(request)
        return response

    # -- sync -------------------------------------------------------------------------------

    def _send_sync(self, peer_id: str, data: bytes) -> None:
        """A message of the sync for a neighbour: a membership direct message (dropped when
        the peer is no longer one; the next anti-entropy round repairs it)."""
        peer = self._peers.get(peer_id)
        if peer is None:
            return
        with contextlib.suppress(membership.MembershipError):
            self.membership.send(peer, data)
            self._sent.inc(len(data))

    async def _events(self, events: membership.Subscription) -> None:
        async for event in events:
            if isinstance(event, membership.DirectReceived):
                peer, payload = event.src, event.payload
                self._received.inc(len(payload))
                try:
                    await self.sync.receive(peer.id, payload)
                except crdt.RemoteError as exc:
                    log.warning("bad sync message from %s: %s", peer.id, exc)
            elif isinstance(event, membership.NeighborUp):
                peer = event.peer
                self._peers[peer.id] = peer
                log.info("neighbour up: %s", peer)
                await self.sync.add_peer(peer.id)
                self.member_dirty.set()
                self.node.peer_up()
            elif isinstance(event, membership.NeighborDown):
                peer = event.peer
                self._peers.pop(peer.id, None)
                log.info("neighbour down: %s", peer)
                await self.sync.remove_peer(peer.id)
                self.member_dirty.set()

    # -- members ----------------------------------------------------------------------------

    def _member_record(self) -> dict[str, Any]:
        return {
            "id": self.node.id,
            "name": self.node.name,
            "url": self.node.url,
            "active": sorted(p.id for p in self.membership.active_view()),
            "apps": self.node.running(),
        }

    def _full_record(self) -> dict[str, Any]:
        return {**self._member_record(), "actors": self.node.actors.active_count()}

    async def _members_loop(self) -> None:
        """Keep ``members/<id>`` up to date: on change, and every HEARTBEAT seconds."""
        key = f"members/{self.node.id}"
        written: dict[str, Any] | None = None
        last = 0.0
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(HEARTBEAT):
                    await self.member_dirty.wait()
            self.member_dirty.clear()
            record = self._member_record()
            if record != written or time.time() - last >= HEARTBEAT:
                full = {**self._full_record(), "updated": time.time()}
                data = json.dumps(full, sort_keys=True).encode()
                try:
                    await asyncio.to_thread(self.node.replica.set, key, data)
                except crdt.Error as exc:  # e.g. a failed fsync: try again at the next change
                    log.error("cannot write this node's member record: %s", exc)
                else:
                    written, last = record, time.time()
            await asyncio.sleep(0.2)  # coalesce bursts of changes into one write

    def members(self) -> list[dict[str, Any]]:
        """Every node this node knows of, itself included, with its active view and apps.

        A member is alive while some live node holds it in its active view: this node, or a
        member whose record is fresh (active views are the failure detector, so a dead node
        leaves every view within a keepalive timeout, while its own record stays fresh for a
        while and must not vouch for itself).
        """
        replica = self.node.replica
        now = time.time()
        records: dict[str, dict[str, Any]] = {}
        for key in replica.keys("members/"):
            raw = replica.get(key)
            if raw is None:
                continue
            try:
                m = json.loads(raw)
                records[str(m["id"])] = m
            except (ValueError, KeyError, TypeError):
                continue
        records[self.node.id] = {**self._full_record(), "updated": now}
        seen = {p.id for p in self.membership.active_view()}
        for member_id, m in records.items():
            if member_id != self.node.id and now - float(m.get("updated", 0)) < ALIVE:
                seen.update(str(i) for i in m.get("active", ()) if i != member_id)
        out = [
            {
                **m,
                "alive": member_id == self.node.id or (member_id in seen and not m.get("left")),
            }
            for member_id, m in records.items()
        ]
        return sorted(out, key=lambda m: str(m.get("name")))

    def peer_read_waits(self) -> dict[str, int]:
        status = self.membership.status()
        return {"paced": int(status["paced"]), "held": int(status["held"])}

    def views(self) -> Views:
        def peers(items: tuple[membership.Peer, ...]) -> list[dict[str, str]]:
            return [{"id": p.id, "address": p.address} for p in items]

        return (
            peers(self.membership.active_view()),
            peers(self.membership.passive_view()),
            self.members(),
        )

    # -- modules ----------------------------------------------------------------------------

    async def fetch_module(self, record: AppRecord) -> bytes:
        """The module of ``record`` from a peer: its origin first, then any other member."""
        assert self._session is not None
        origin: list[tuple[str, str]] = []
        others: list[tuple[str, str]] = []
        for m in self.members():
            if m.get("id") == self.node.id or not m.get("url"):
                continue
            found = (str(m["id"]), str(m["url"]))
            (origin if m.get("name") == record.origin else others).append(found)
        random.shuffle(others)
        errors = []
        limit = self.node.config.max_upload_mib * MIB
        for node_id, url in [*origin, *others]:
            try:
                return await self._get_blob(node_id, url, record.sha256, limit)
            except (aiohttp.ClientError, TimeoutError, FetchError) as exc:
                errors.append(f"{url}: {exc or type(exc).__name__}")
        raise FetchError(
            f"no peer could give module {record.sha256[:12]}"
            + (f" ({'; '.join(errors)})" if errors else " (no peers known)")
        )

    async def _get_blob(self, node_id: str, url: str, sha256: str, limit: int) -> bytes:
        assert self._session is not None
        if not url.startswith(self._blob_scheme):
            # A TLS node fetches over TLS only, and a plain node cannot reach a TLS one.
            raise FetchError(f"not an {self._blob_scheme} URL")
        headers = {}
        key = self.node.config.cluster_key
        if key:
            headers["Authorization"] = blob_proof(key, node_id, sha256, time.time())
        blob_url = f"{url.rstrip('/')}/blobs/{sha256}"
        async with self._session.get(blob_url, headers=headers) as resp:
            if resp.status != 200:
                raise FetchError(f"HTTP {resp.status}")
            data = bytearray()
            async for chunk in resp.content.iter_chunked(64 * 1024):
                data += chunk
                if len(data) > limit:
                    raise FetchError("module over the upload limit")
            return bytes(data)
