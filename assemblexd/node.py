"""A node: storage, the waPC runtime, host functions and app pools, composed; its lifecycle.

The HTTP API and the CLI talk to a :class:`Node` only: it is the facade of its parts, each in
its own module, and it makes, starts and stops them.

* ``apps.py``: one supervisor per app keeps what this node runs equal to the app's record.
* ``modules.py``: modules read from disk or fetched from a peer, compiled, and cached compiled.
* ``ops.py``: the API's operations (deploy, rollback, undeploy, call).
* ``gc.py``: module blobs no record needs any more are garbage-collected by a periodic task
  (``--gc-interval``, ``--gc-grace``), with ``storage.py``.
* ``status.py``: ``/status`` and ``/metrics``.
* ``actors/``: apps called as actors (``/actors/{app}/{key}/{op}``): one live instance per key
  in the cluster, durable state, alarms (docs/actors.md).

A node on its own keeps its apps in its replicated store and on disk and serves them; what it
needs from its peers (modules it lacks, the views it shows) it asks of the :class:`Peers` it is
given (``peers.py``; the cluster layer, ``cluster.py``, is the real one).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import secrets
import sqlite3
import time
from collections.abc import Callable, Coroutine, Sequence
from pathlib import Path
from typing import Any

import crdt

from .actors import ActorHost, Actors, ActorStore, Answer, Member, PeerClient
from .apps import LoadedApp, Supervisors
from .config import MIB, Config
from .errors import DataDirError, NotFound
from .gc import Collector
from .metrics import Metrics
from .modules import Modules
from .ops import Operations
from .peers import FetchError, NoPeers, Peers
from .records import AppRecord
from .registry import Registry
from .runtime import Engine, Host, Instance, InstanceCap, KVQuota, ReplicaKV, Scheduler
from .status import Status
from .storage import Collected, Storage, atomic_write

__all__ = ["FetchError", "Node"]

log = logging.getLogger(__name__)

MEMBERS_TTL = 0.25
"""Seconds the actors' view of the members (read from the store) is kept."""


class Node:
    """One assemblexd node. Use as ``async with Node(config, peers=...) as node:``.

    Apps live in the replicated store (``registry.py``); one supervisor per app keeps what this
    node runs equal to the app's record there, whoever wrote it. A node alone is a cluster of
    one: its peers (``peers``, :class:`NoPeers` by default) only add modules fetched from them
    and the views and members ``/status`` shows.

    Args:
        config: the node's settings.
        peers: what the node needs from its peers (``cluster.Cluster``); none by default.
    """

    def __init__(self, config: Config, *, peers: Peers | None = None) -> None:
        self.config = config
        try:
            self.storage = Storage(Path(config.data_dir))
            self.id = self._node_id()
        except OSError as exc:  # not a directory, not writable, node_id unreadable...
            raise DataDirError(f"data dir {config.data_dir}: {exc}") from exc
        self.name = config.node_name
        self.url = config.url
        """The URL peers and clients reach this node at (the server sets the real port)."""
        self.peers: Peers = peers if peers is not None else NoPeers()
        self.metrics = Metrics()
        self.metrics.instances_freed = lambda: {
            "evicted": self._cap.evicted,
            "expired": self._cap.expired,
        }
        # Nothing to show while there are no peers (no series rather than an empty family).
        self.metrics.peer_read_waits = lambda: self.peers.peer_read_waits() or None
        self.on_collected: list[Callable[[Collected], None]] = []
        """Called after each garbage collection, with what it did."""
        self._cap: InstanceCap[Instance] = InstanceCap(config.max_instances)
        self._engine: Engine | None = None
        self._scheduler: Scheduler | None = None
        self._replica: crdt.Replica | None = None
        self._registry: Registry | None = None
        self._host: Host | None = None
        self._kv_quota: KVQuota | None = None
        self._supervisors: Supervisors | None = None
        self._operations: Operations | None = None
        self._collector: Collector | None = None
        self._status: Status | None = None
        self._actor_store: ActorStore | None = None
        self._actor_client: PeerClient | None = None
        self._actors: Actors | None = None
        self._members_cache: tuple[float, list[Member]] | None = None
        self._stack = contextlib.AsyncExitStack()
        self._group: asyncio.TaskGroup | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self.started_at = time.time()

    # -- lifecycle --------------------------------------------------------------------------

    async def __aenter__(self) -> Node:
        tick = self.config.epoch_tick_ms / 1000
        self._engine = Engine(tick=tick, log_sink=self._guest_log)
        self._scheduler = Scheduler(
            self._engine,
            workers=self.config.cpu_workers,
            loop_slice=tick,
            max_host_calls=self.config.max_host_calls,
        )
        try:
            self._replica = self._open_replica()
        except BaseException:
            await self.__aexit__(None, None, None)
            raise
        self._registry = Registry(self._replica, self.name)
        self._kv_quota = KVQuota(
            self._replica, self.config.max_kv_mib * MIB, self.config.max_kv_keys
        )
        self._host = Host(
            ReplicaKV(self._replica),
            self._call_from_guest,
            dict(self.config.redis_urls),
            self.config.max_call_depth,
            on_host_call=self.metrics.host_call,
            kv_quota=self._kv_quota,
        )
        self._make_parts(self._engine, self._scheduler, self._registry, self._host)
        try:
            self._actor_store = ActorStore(Path(self.config.data_dir) / "actors.sqlite")
        except sqlite3.Error as exc:
            await self.__aexit__(None, None, None)
            raise DataDirError(f"{self.config.data_dir}/actors.sqlite: {exc}") from exc
        config = self.config
        self._actor_client = PeerClient(
            config.cluster_key, config.accepted_cluster_keys, self.peers.client_ssl
        )
        self._actors = Actors(
            self.id,
            self.name,
            self._actor_store,
            self._actor_members,
            _ActorRunner(self.supervisors, self._ops),
            self._actor_client,
            quorum=config.actor_quorum,
            idle=config.actor_idle,
            wait=config.actor_wait,
            call_limit=config.actor_wait + config.call_wall_timeout + 5.0,
            state_max=config.actor_state_max,
            metrics=self.metrics,
            running=lambda: self.supervisors.loaded.keys(),
        )
        supervisors = self.supervisors
        # Serve what is on disk at once, before any peer is heard from.
        for name in self.registry.names():
            await supervisors.reconcile_once(name)
        self._group = await self._stack.enter_async_context(asyncio.TaskGroup())
        self._spawn(supervisors.watch())
        if self.config.gc_interval > 0:
            assert self._collector is not None
            self._spawn(self._collector.run(self.config.gc_interval))
        if self.config.idle_timeout > 0:
            self._spawn(self._expirer())
        await self._stack.enter_async_context(self._actors)
        return self

    def _make_parts(
        self, engine: Engine, scheduler: Scheduler, registry: Registry, host: Host
    ) -> None:
        """Make the node's parts, each given what it needs of the others."""
        assert self._kv_quota is not None
        modules = Modules(self.storage, engine, self.metrics, self.peers.fetch_module)
        supervisors = Supervisors(
            self.config,
            registry,
            modules,
            engine=engine,
            scheduler=scheduler,
            cap=self._cap,
            host=host,
            metrics=self.metrics,
            spawn=self._spawn,
            apps_changed=self.peers.apps_changed,
        )
        self._supervisors = supervisors
        self._operations = Operations(
            self.config,
            self.storage,
            registry,
            supervisors,
            modules,
            scheduler=scheduler,
            host=host,
            metrics=self.metrics,
        )
        self._collector = Collector(
            self.storage,
            registry,
            supervisors.modules_in_use,
            self.metrics,
            grace=self.config.gc_grace,
            on_collected=self.on_collected,
        )
        self._status = Status(
            registry,
            supervisors,
            self._cap,
            self.peers,
            self.metrics,
            self._kv_quota,
            self.started_at,
            actors=lambda: self.actors.active_count(),
        )

    async def __aexit__(self, *exc: object) -> None:
        for task in self._tasks:
            task.cancel()
        await self._stack.aclose()
        if self._actor_client is not None:
            await self._actor_client.close()
        if self._actor_store is not None:
            self._actor_store.close()
        if self._supervisors is not None:
            self._supervisors.close()
        if self._host is not None:
            await self._host.close()
        if self._kv_quota is not None:
            self._kv_quota.close()
        if self._scheduler is not None:
            self._scheduler.close()
        if self._engine is not None:
            self._engine.close()
        if self._replica is not None:
            self._replica.close()

    def _open_replica(self) -> crdt.Replica:
        """The replicated store of the data dir. Raises DataDirError."""
        path = Path(self.config.data_dir) / "replica.log"
        if not path.exists() and any(self.storage.blobs_dir.iterdir()):
            # Blobs without a log: the log was lost or moved, not a first start.
            log.warning(
                "%s has module blobs but no replica.log: starting with an empty store"
                " (apps come back only from peers)",
                self.config.data_dir,
            )
        try:
            return crdt.Replica(self.id, path)
        except crdt.DamagedLogError as exc:
            raise DataDirError(
                f"{exc}: restore it from a backup, or recover its intact records with"
                f" 'assemblexd salvage-log --data-dir {self.config.data_dir}'"
            ) from exc
        except crdt.Error as exc:  # another node's log, a bad header, a bad node_id
            raise DataDirError(str(exc)) from exc

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        assert self._group is not None
        task = self._group.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _node_id(self) -> str:
        path = Path(self.config.data_dir) / "node_id"
        try:
            return path.read_text().strip()
        except FileNotFoundError:
            node_id = secrets.token_hex(8)
            atomic_write(path, node_id.encode())
            return node_id

    def _guest_log(self, inst: Instance, line: bytes) -> None:
        """The engine's sink for guests' console lines: the app's log (``apps.py``)."""
        if self._supervisors is not None:
            self._supervisors.guest_log(inst, line)

    async def _expirer(self) -> None:
        """Free instances idle for longer than --idle-timeout, checking twice per timeout (at
        most every 30 s): an instance is freed between 1 and 1.5 timeouts after its last use."""
        timeout = self.config.idle_timeout
        while True:
            await asyncio.sleep(min(timeout / 2, 30.0))
            self._cap.expire(timeout)

    @property
    def replica(self) -> crdt.Replica:
        assert self._replica is not None, "use the node inside 'async with'"
        return self._replica

    @property
    def registry(self) -> Registry:
        assert self._registry is not None, "use the node inside 'async with'"
        return self._registry

    @property
    def engine(self) -> Engine:
        assert self._engine is not None, "use the node inside 'async with'"
        return self._engine

    @property
    def supervisors(self) -> Supervisors:
        """What this node runs of each app, and the supervisors that keep it so."""
        assert self._supervisors is not None, "use the node inside 'async with'"
        return self._supervisors

    @property
    def _ops(self) -> Operations:
        assert self._operations is not None, "use the node inside 'async with'"
        return self._operations

    def peer_up(self) -> None:
        """A peer came up (called by the cluster layer): supervisors waiting to retry a
        module fetch retry now, instead of at the end of their backoff."""
        if self._supervisors is not None:
            self._supervisors.peer_up()

    # -- the API ----------------------------------------------------------------------------

    async def deploy(
        self, name: str, wasm: bytes, capabilities: Sequence[str] | None = None
    ) -> AppRecord:
        """Validate, store and load a module; every node of the cluster follows.

        Raises InvalidModule, BadRequest, PayloadTooLarge.
        """
        return await self._ops.deploy(name, wasm, capabilities)

    async def rollback(self, name: str) -> AppRecord:
        """Make the previous version of ``name`` current again, cluster-wide.

        Raises UnknownApp, or BadRequest when there is no previous version.
        """
        return await self._ops.rollback(name)

    async def call(self, app: str, op: str, payload: bytes) -> bytes:
        """Run one operation.

        Raises UnknownApp, GuestError, CallTimeout, Overloaded, PayloadTooLarge.
        """
        return await self._ops.call(app, op, payload, 0)

    async def _call_from_guest(self, app: str, op: str, payload: bytes, depth: int) -> bytes:
        return await self._ops.call(app, op, payload, depth)

    def apps(self) -> list[AppRecord]:
        """Every deployed app (cluster-wide, as this node's store knows them)."""
        return self._ops.apps()

    def app(self, name: str) -> AppRecord:
        """Raises UnknownApp."""
        return self._ops.app(name)

    def running(self) -> dict[str, int]:
        """The version of each app this node runs now."""
        return self.supervisors.running()

    async def undeploy(self, name: str) -> None:
        """Undeploy ``name`` cluster-wide. Raises UnknownApp.

        The record and its history go, so its modules are collected after the grace period
        unless another app's record uses them.
        """
        await self._ops.undeploy(name)

    def blob_path(self, sha256: str) -> Path:
        """Path of a stored module. Raises NotFound."""
        path = self.storage.blob_path(sha256)
        if path is None:
            raise NotFound(f"no module with sha256 {sha256}")
        return path

    # -- actors ---------------------------------------------------------------------------

    @property
    def actors(self) -> Actors:
        assert self._actors is not None, "use the node inside 'async with'"
        return self._actors

    async def actor_call(self, app: str, key: str, op: str, payload: bytes) -> Answer:
        """Run ``op`` on actor (``app``, ``key``), wherever in the cluster it lives.

        Raises BadRequest, UnknownApp, ActorUnavailable, Forwarded, and what ``call`` raises.
        """
        return await self.actors.call(app, key, op, payload)

    async def actor_info(self, app: str, key: str) -> dict[str, Any]:
        """``{owner, generation, active, alarm_at}`` of the actor."""
        return await self.actors.info(app, key)

    def _actor_members(self) -> list[Member]:
        """The cluster's members that have not left, for the actors (this node alone while
        it holds no member record of a cluster). Read from the store at most every
        ``MEMBERS_TTL`` seconds (every actor call asks)."""
        now = time.monotonic()
        if self._members_cache is not None and now - self._members_cache[0] < MEMBERS_TTL:
            return self._members_cache[1]
        members = self._read_actor_members()
        self._members_cache = (now, members)
        return members

    def _read_actor_members(self) -> list[Member]:
        views = self.peers.views()
        me = Member(self.id, self.name, self.url, frozenset(self.running()))
        if views is not None:
            records = views[2]
        else:
            # The cluster layer is not running (a node alone, or one starting: it listens
            # before its membership runs). The member records it holds still count, or a
            # member that restarts would take itself for a cluster of one meanwhile.
            records = self._member_records()
            if not any(m.get("id") == self.id for m in records):
                return [me, *self._members_of(records)]
        return self._members_of(records)

    def _member_records(self) -> list[dict[str, Any]]:
        if self._replica is None:
            return []
        records = []
        for key in self._replica.keys("members/"):
            raw = self._replica.get(key)
            with contextlib.suppress(ValueError, TypeError):
                record = json.loads(raw) if raw is not None else None
                if isinstance(record, dict) and isinstance(record.get("id"), str):
                    records.append(record)
        return records

    def _members_of(self, records: list[dict[str, Any]]) -> list[Member]:
        members = []
        for m in records:
            if m.get("left") and m.get("id") != self.id:
                continue
            apps = m.get("apps") or {}
            members.append(
                Member(
                    str(m.get("id")),
                    str(m.get("name")),
                    str(m.get("url") or ""),
                    frozenset(apps) if isinstance(apps, dict) else frozenset(),
                )
            )
        return members

    # -- garbage collection -----------------------------------------------------------------

    def referenced_modules(self) -> set[str]:
        """The sha256 of every module this node must keep (``Collector.referenced_modules``)."""
        assert self._collector is not None, "use the node inside 'async with'"
        return self._collector.referenced_modules()

    async def collect_garbage(self) -> Collected:
        """Collect the modules no record needs now (``Collector.collect``). Raises OSError."""
        assert self._collector is not None, "use the node inside 'async with'"
        return await self._collector.collect()

    # -- status -----------------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        """JSON-ready: this node, its views, the members it knows (the graph), the apps."""
        assert self._status is not None, "use the node inside 'async with'"
        return self._status.status({"id": self.id, "name": self.name, "url": self.url})

    def metrics_text(self) -> bytes:
        """Prometheus text exposition."""
        assert self._status is not None, "use the node inside 'async with'"
        return self._status.metrics_text()


class _ActorRunner:
    """What the actors need of the node to run guests: the loaded apps and the call path."""

    def __init__(self, supervisors: Supervisors, ops: Operations) -> None:
        self._supervisors = supervisors
        self._ops = ops

    def loaded(self, app: str) -> LoadedApp | None:
        return self._supervisors.loaded.get(app)

    async def run(
        self, loaded: LoadedApp, inst: Instance, op: str, payload: bytes, actor: ActorHost
    ) -> bytes:
        return await self._ops.call_actor(loaded, inst, op, payload, actor)
