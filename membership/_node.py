"""`Node`: the asyncio adapter that runs an `Overlay` over real connections.

It is deliberately thin: it authenticates channels, reads frames and feeds them to the core,
sends the core's outbox, and re-arms one timer at the core's `next_deadline()`. Everything
that decides anything is in the core.

Links. One `_Link` per authenticated channel, each with a reader (in the task that accepted
or dialled it) and a writer task draining a bounded send queue. A message for a peer goes
over that peer's newest link, or a new connection is dialled (the frames wait for it). The
links of active peers are the failure detector: when the last link of an active peer ends
(reset, EOF, garbage, keepalive timeout, handshake failure, or a peer too slow to drain its
queue), the core hears `on_unreachable` and replaces it. Links to other peers (shuffle
replies, refused NEIGHBOR requests) close after ``idle_timeout`` without a protocol message.

Inbound limits. A link's reader spends a token per frame from a bucket of ``peer_burst``
refilled at ``peer_rate`` per second and, with none left, waits before reading on; it also
waits while a subscriber has ``max_pending_direct`` direct messages from that peer unread.
Waiting is back-pressure, not loss: the frames stay in the sender's socket and send queue,
and a sender that lets its queue overflow drops the link itself.

Keepalive. A writer that has sent nothing for ``keepalive_interval`` sends a PING; a reader
that has received nothing for ``keepalive_timeout`` closes its link. A crashed process's
links reset at once; a silent host (or a stopped process) is detected within the timeout.

Reconnection with backoff. Seeds (``join``) are re-dialled with exponential backoff and
jitter until one answers. After that the core owns reconnection: free active slots are
refilled from the passive view, and an isolated node re-joins through a remembered contact,
both with the core's own exponential backoff.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import secrets
from collections.abc import Coroutine
from types import TracebackType
from typing import Any

from ._auth import TAG_SIZE, Handshake, LinkAuth
from ._codec import decode, encode
from ._config import NodeConfig
from ._errors import LocalProtocolError, MembershipError, RemoteProtocolError
from ._messages import CoreMessage, Direct, Event, Gossip, Hello, Peer, Ping, Proof
from ._overlay import Overlay
from ._subscription import Subscription
from ._transport import Channel, TcpTransport, Transport

__all__ = ["Node"]

_log = logging.getLogger("membership.node")
_PING = encode(Ping())


class _Link:
    """One authenticated channel to `peer`; `auth` seals and opens its frames (None when the
    cluster is open)."""

    def __init__(
        self,
        peer: Peer,
        channel: Channel,
        auth: LinkAuth | None,
        queue_size: int,
        burst: int,
        now: float,
    ) -> None:
        self.peer = peer
        self.channel = channel
        self.auth = auth
        self.queue: asyncio.Queue[bytes] = asyncio.Queue(queue_size)
        self.last_protocol = now  # last core message sent or received
        self.tokens = float(burst)  # the reader's token bucket (NodeConfig.peer_rate)
        self.refilled = now


class Node:
    """A membership node: HyParView + Plumtree over authenticated connections.

    Use as ``async with Node(config) as node:``; leaving the block shuts it down.

    Args:
        config: identity, addresses, seeds, key and protocol parameters.
        transport: how to dial and listen (TCP by default).
        rng: randomness for the protocol (a fresh unseeded generator by default).
    """

    def __init__(
        self,
        config: NodeConfig,
        transport: Transport | None = None,
        *,
        rng: random.Random | None = None,
    ) -> None:
        self.config = config
        self.transport: Transport = transport or TcpTransport(
            config.max_frame, config.connect_timeout
        )
        self._rng = rng or random.Random()
        self._core: Overlay | None = None
        self._links: dict[Peer, list[_Link]] = {}
        self._dialing: dict[Peer, list[bytes]] = {}
        self._subscriptions: list[Subscription] = []
        self._drained = asyncio.Event()  # a subscriber read a direct message
        self._tasks: set[asyncio.Task[None]] = set()
        self._group: asyncio.TaskGroup | None = None
        self._stack = contextlib.AsyncExitStack()
        self._wakeup = asyncio.Event()
        self._armed = float("inf")
        self._closing = False
        self._me: Peer | None = None
        self._refused = 0
        self._paced = 0  # times a link was read slower for its peer_rate
        self._held = 0  # times a link was not read for a subscriber's backlog

    # --- lifecycle -----------------------------------------------------------------------

    async def __aenter__(self) -> Node:
        cfg = self.config
        stack = self._stack
        self._group = await stack.enter_async_context(asyncio.TaskGroup())
        advertise = cfg.advertise
        if cfg.listen is not None:
            bound = await stack.enter_async_context(
                self.transport.serve(cfg.listen, self.handle_channel)
            )
            advertise = advertise or bound
        if advertise is None:
            await stack.aclose()
            raise LocalProtocolError("a node needs a listen or an advertise address")
        self._me = Peer(cfg.node_id, advertise)
        self._core = Overlay(
            self._me, self._rng, self._now(), hyparview=cfg.hyparview, plumtree=cfg.plumtree
        )
        self._spawn(self._timer_loop())
        for address in cfg.join:
            self.join(address)
        if cfg.mdns:
            from ._discovery import Discovery  # zeroconf only when asked for

            try:
                await stack.enter_async_context(Discovery(self._me, self.add_contact))
            except OSError as exc:  # no multicast-capable interface: seeds still work
                _log.warning("mDNS discovery is off: %s", exc)
        _log.info("node %s up", self._me)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._closing = True
        for subscription in self._subscriptions:
            subscription.close()
        for task in list(self._tasks):
            task.cancel()
        channels = [link.channel for links in self._links.values() for link in links]
        await asyncio.gather(*(channel.aclose() for channel in channels))
        await self._stack.aclose()

    # --- the user's API ------------------------------------------------------------------

    @property
    def me(self) -> Peer:
        """This node, as its peers know it."""
        if self._me is None:
            raise LocalProtocolError("the node is not started")
        return self._me

    def broadcast(self, payload: bytes) -> int:
        """Send `payload` to every node of the cluster; returns its message id.

        Raises:
            LocalProtocolError: the payload does not fit in a frame.
        """
        self._check_size(payload)
        msg_id = self._overlay.broadcast(payload, self._now())
        self._flush()
        return msg_id

    def send(self, peer: Peer, payload: bytes) -> None:
        """Send `payload` to neighbour `peer` alone (received as `DirectReceived`).

        Raises:
            NotNeighborError: `peer` is not in the active view.
            LocalProtocolError: the payload does not fit in a frame.
        """
        self._check_size(payload)
        self._overlay.send_direct(peer, payload)
        self._flush()

    def events(self) -> Subscription:
        """A new subscription to this node's events, from now on.

        Iterate it with ``async for``; it ends when the node stops. Each subscription has its
        own unbounded queue: read it, or `close()` it.
        """
        subscription = Subscription(self._subscriptions.remove, self._drained.set)
        self._subscriptions.append(subscription)
        return subscription

    def active_view(self) -> tuple[Peer, ...]:
        """Current neighbours."""
        return self._overlay.active_view()

    def passive_view(self) -> tuple[Peer, ...]:
        """Peers held in reserve."""
        return self._overlay.passive_view()

    def status(self) -> dict[str, Any]:
        """A JSON-ready summary for ``/status``: this node, its views and its links."""

        def peers(items: tuple[Peer, ...]) -> list[dict[str, str]]:
            return [{"id": p.id, "address": p.address} for p in items]

        core = self._overlay
        return {
            "id": self.me.id,
            "address": self.me.address,
            "active": peers(core.active_view()),
            "passive": peers(core.passive_view()),
            "pending": peers(core.membership.pending),
            "links": sum(len(links) for links in self._links.values()),
            "refused": self._refused,
            "paced": self._paced,
            "held": self._held,
        }

    def join(self, address: str) -> None:
        """Dial seed `address` (retried with backoff until it answers) and join through it."""
        self._spawn(self._seed(address))

    def add_contact(self, peer: Peer) -> None:
        """Offer a peer found by discovery: joined through if this node is isolated."""
        if not self._closing and peer != self._me:
            self._overlay.add_contact(peer, self._now())
            self._flush()

    async def handle_channel(self, channel: Channel) -> None:
        """Serve an accepted channel (TCP, or a websocket the daemon accepted) until it ends."""
        try:
            peer, auth = await self._handshake(channel, initiator=False)
        except (MembershipError, TimeoutError) as exc:
            self._refused += 1
            _log.info("refused an incoming connection: %s", exc)
            return
        await self._run_link(peer, channel, auth)

    # --- internals -----------------------------------------------------------------------

    @property
    def _overlay(self) -> Overlay:
        if self._core is None:
            raise LocalProtocolError("the node is not started")
        return self._core

    @staticmethod
    def _now() -> float:
        return asyncio.get_running_loop().time()

    @property
    def max_payload(self) -> int:
        """The largest payload `broadcast` and `send` take: the frame limit less the
        envelope of a `Gossip` from this node (its id, the largest id and round, and a 4-byte
        bin header) and a frame's authentication tag."""
        envelope = len(encode(Gossip(2**64 - 1, 0xFFFF, self.me.id, b""))) + 3 + TAG_SIZE
        return self.config.max_frame - envelope

    def _check_size(self, payload: bytes) -> None:
        if len(payload) > self.max_payload:
            raise LocalProtocolError(
                f"payload of {len(payload)} bytes is over this node's {self.max_payload}-byte "
                f"limit (frames of {self.config.max_frame} bytes)"
            )

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        if self._group is None or self._closing:
            coro.close()
            return
        task = self._group.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _flush(self) -> None:
        """Send the core's outbox, publish its events, re-arm the timer if it moved."""
        core = self._overlay
        encoded: dict[int, bytes] = {}
        for peer, msg in core.take_outbox():
            frame = encoded.get(id(msg))
            if frame is None:
                frame = encoded[id(msg)] = encode(msg)
            self._send(peer, frame)
        for event in core.take_events():
            self._publish(event)
        deadline = core.next_deadline()
        if deadline is not None and deadline < self._armed:
            self._wakeup.set()

    def _publish(self, event: Event) -> None:
        for subscription in self._subscriptions:
            subscription.put(event)

    def _send(self, peer: Peer, frame: bytes) -> None:
        links = self._links.get(peer)
        if links:
            link = links[-1]
            link.last_protocol = self._now()
            try:
                link.queue.put_nowait(frame)
            except asyncio.QueueFull:
                _log.warning("%s does not keep up; dropping its link", peer)
                self._spawn(link.channel.aclose())
            return
        waiting = self._dialing.get(peer)
        if waiting is None:
            self._dialing[peer] = [frame]
            self._spawn(self._dial(peer))
        elif len(waiting) < self.config.send_queue:
            waiting.append(frame)

    async def _timer_loop(self) -> None:
        core = self._overlay
        while True:
            core.tick(self._now())
            self._flush()
            deadline = core.next_deadline()
            self._armed = float("inf") if deadline is None else deadline
            self._wakeup.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout_at(None if deadline is None else deadline):
                    await self._wakeup.wait()

    async def _handshake(
        self, channel: Channel, *, initiator: bool
    ) -> tuple[Peer, LinkAuth | None]:
        """Authenticate `channel` (see `_auth`): the dialling end proves first, and the
        accepting end proves only once it has checked that proof."""
        cfg = self.config
        handshake = Handshake(
            self.me,
            cfg.cluster_key,
            secrets.token_bytes(32),
            cfg.accepted_keys,
            initiator=initiator,
        )
        async with asyncio.timeout(self.config.connect_timeout):
            await channel.send(encode(handshake.hello()))
            hello = decode(await channel.receive())
            if not isinstance(hello, Hello):
                raise RemoteProtocolError("expected Hello")
            answer = handshake.on_hello(hello)
            if answer is not None:
                await channel.send(encode(answer))
            proof = decode(await channel.receive())
            if not isinstance(proof, Proof):
                raise RemoteProtocolError("expected Proof")
            answer = handshake.on_proof(proof)
            if answer is not None:
                await channel.send(encode(answer))
            return handshake.peer, handshake.link

    async def _connect(self, address: str) -> tuple[Peer, Channel, LinkAuth | None]:
        channel = await self.transport.connect(address)
        try:
            peer, auth = await self._handshake(channel, initiator=True)
        except BaseException:
            await channel.aclose()
            raise
        return peer, channel, auth

    async def _dial(self, peer: Peer) -> None:
        try:
            found, channel, auth = await self._connect(peer.address)
            if found != peer:
                await channel.aclose()
                raise RemoteProtocolError(f"{peer.address} is now {found}")
        except (MembershipError, TimeoutError) as exc:
            _log.info("cannot reach %s: %s", peer, exc)
            self._dialing.pop(peer, None)
            if not self._closing:
                self._overlay.on_unreachable(peer, self._now())
                self._flush()
            return
        await self._run_link(peer, channel, auth)

    async def _seed(self, address: str) -> None:
        delay = self.config.seed_backoff
        while True:
            try:
                peer, channel, auth = await self._connect(address)
            except (MembershipError, TimeoutError) as exc:
                _log.info("seed %s: %s; retrying in %.1f s", address, exc, delay)
                await asyncio.sleep(delay * (0.5 + self._rng.random()))
                delay = min(2 * delay, self.config.seed_backoff_max)
                continue
            await self._run_link(peer, channel, auth, contact=True)
            return

    async def _run_link(
        self, peer: Peer, channel: Channel, auth: LinkAuth | None, *, contact: bool = False
    ) -> None:
        """Register a link, run its reader here and its writer in a task, then clean up."""
        cfg = self.config
        link = _Link(peer, channel, auth, cfg.send_queue, cfg.peer_burst, self._now())
        self._links.setdefault(peer, []).append(link)
        for frame in self._dialing.pop(peer, []):
            link.queue.put_nowait(frame)
        reason = "closed"
        try:
            async with asyncio.TaskGroup() as group:
                writer = group.create_task(self._writer(link))
                if contact:
                    self.add_contact(peer)
                reason = await self._reader(link)
                writer.cancel()
        finally:
            await channel.aclose()
            self._drop_link(link, reason)

    def _drop_link(self, link: _Link, reason: str) -> None:
        links = self._links.get(link.peer, [])
        if link in links:
            links.remove(link)
        if links:
            return
        self._links.pop(link.peer, None)
        if not self._closing and self._overlay.is_neighbor(link.peer):
            _log.info("lost neighbour %s: %s", link.peer, reason)
            self._overlay.on_unreachable(link.peer, self._now())
            self._flush()

    async def _reader(self, link: _Link) -> str:
        core, timeout = self._overlay, self.config.keepalive_timeout
        try:
            while True:
                async with asyncio.timeout(timeout):
                    frame = await link.channel.receive()
                if link.auth is not None:
                    frame = link.auth.open(frame)
                msg = decode(frame)
                if isinstance(msg, Ping):
                    continue
                if isinstance(msg, Hello | Proof):
                    raise RemoteProtocolError("handshake message on an open link")
                now = self._now()
                link.last_protocol = now
                message: CoreMessage = msg
                core.on_message(link.peer, message, now)
                self._flush()
                await self._pace(link, now)
                if isinstance(msg, Direct):
                    await self._room_for(link.peer)
        except TimeoutError:
            return "keepalive timeout"
        except RemoteProtocolError as exc:
            _log.warning("closing the link to %s: %s", link.peer, exc)
            return str(exc)
        except MembershipError as exc:
            return str(exc)

    async def _pace(self, link: _Link, now: float) -> None:
        """Spend a token of the link's bucket; wait for one when there is none left."""
        rate = self.config.peer_rate
        if not rate:
            return
        link.tokens = min(self.config.peer_burst, link.tokens + (now - link.refilled) * rate) - 1
        link.refilled = now
        if link.tokens < 0:
            self._paced += 1
            await asyncio.sleep(-link.tokens / rate)

    async def _room_for(self, peer: Peer) -> None:
        """Wait until no subscriber has `max_pending_direct` unread messages from `peer`."""
        limit = self.config.max_pending_direct

        def full() -> bool:
            return any(s.direct_pending(peer) >= limit for s in self._subscriptions)

        if not full():
            return
        self._held += 1
        while True:
            self._drained.clear()  # before the check: a read in between sets it again
            if not full():
                return
            await self._drained.wait()

    async def _writer(self, link: _Link) -> None:
        cfg = self.config
        try:
            while True:
                try:
                    async with asyncio.timeout(cfg.keepalive_interval):
                        frame = await link.queue.get()
                except TimeoutError:
                    idle = self._now() - link.last_protocol
                    if idle > cfg.idle_timeout and not self._overlay.is_neighbor(link.peer):
                        break
                    frame = _PING
                if link.auth is not None:
                    frame = link.auth.seal(frame)
                await link.channel.send(frame)
        except MembershipError:
            pass
        await link.channel.aclose()
