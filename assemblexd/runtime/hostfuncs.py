"""The host side of ``__host_call``: the namespaces a guest may call.

| namespace | binding | operations |
|---|---|---|
| ``host`` | any | ``echo`` (payload back), ``sleep`` (payload = ASCII milliseconds) |
| ``kv`` | the key | ``get``, ``set``, ``del``, ``incr`` on this node's store, scoped to the app |
| ``redis`` | ``""`` or a connection name | a Redis command |
| ``call`` | an app name | an operation of that app |
| ``actor`` | ignored | ``key``, ``load``, ``store``, ``alarm``, ``cancel``, in an actor call only |

Every failure reaches the guest as a host error text (:class:`~assemblexd.errors.HostError`),
never as an exception of the node. Details and choices: docs/host-functions.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping, Sequence
from types import MappingProxyType
from typing import Protocol

import msgpack
import redis.asyncio as aioredis
import redis.exceptions

from .errors import AssemblexError, HostError
from .scheduler import HostHandler

__all__ = [
    "MAX_SLEEP_MS",
    "NAMESPACES",
    "NAMESPACE_HANDLERS",
    "Grant",
    "Host",
    "KVQuota",
    "KVStore",
    "QuotaReplica",
    "ReplicaKV",
]

log = logging.getLogger(__name__)

REDIS_CONNECTIONS = 256
"""Connections per Redis binding; more commands in flight wait for one."""
MAX_SLEEP_MS = 60_000
"""``host.sleep`` is capped at this many milliseconds."""

# Redis commands whose single argument is the raw payload (the original benchmark's GET).
ONE_ARGUMENT = frozenset(
    "GET INCR DECR DEL EXISTS TTL PTTL STRLEN LLEN SCARD HGETALL HKEYS HVALS HLEN "
    "SMEMBERS TYPE PERSIST LPOP RPOP GETDEL UNLINK ZCARD KEYS DUMP".split()
)
# Commands that change the connection's state, block it, or administer the server.
DENIED = frozenset(
    "SUBSCRIBE PSUBSCRIBE SSUBSCRIBE UNSUBSCRIBE PUNSUBSCRIBE MONITOR SHUTDOWN DEBUG "
    "CONFIG SYNC PSYNC REPLICAOF SLAVEOF CLIENT MULTI EXEC DISCARD WATCH UNWATCH SELECT "
    "QUIT RESET AUTH HELLO BLPOP BRPOP BLMOVE BRPOPLPUSH BZPOPMIN BZPOPMAX BLMPOP BZMPOP "
    "XREAD XREADGROUP WAIT WAITAOF FLUSHALL FLUSHDB SAVE BGSAVE BGREWRITEAOF MODULE ACL "
    "SCRIPT FUNCTION FAILOVER CLUSTER READONLY READWRITE MIGRATE".split()
)


class ReplicaKV:
    """The ``kv`` store over the node's replica: the same methods, keys under ``kv/``."""

    def __init__(self, replica: KVStore) -> None:
        self._replica = replica

    def get(self, key: str) -> bytes | None:
        return self._replica.get(f"kv/{key}")

    def set(self, key: str, value: bytes) -> None:
        self._replica.set(f"kv/{key}", value)

    def delete(self, key: str) -> None:
        self._replica.delete(f"kv/{key}")

    def incr(self, key: str, n: int = 1) -> int:
        return self._replica.incr(f"kv/{key}", n)

    def value(self, key: str) -> int:
        return self._replica.value(f"kv/{key}")


COUNTER_BYTES = 8
"""What a counter costs against ``--max-kv`` beyond its key (its count, as a 64-bit integer)."""


class _Entry:
    """What one key of the ``kv`` store counts for against its app's quota."""

    __slots__ = ("counter", "key_bytes", "value_bytes")

    def __init__(self, key_bytes: int, value_bytes: int | None, counter: bool) -> None:
        self.key_bytes = key_bytes
        self.value_bytes = value_bytes
        """Length of the value; None without one (never set, or deleted)."""
        self.counter = counter

    @property
    def keys(self) -> int:
        return (self.value_bytes is not None) + self.counter

    @property
    def bytes(self) -> int:
        size = 0 if self.value_bytes is None else self.key_bytes + self.value_bytes
        return size + (self.key_bytes + COUNTER_BYTES if self.counter else 0)


class KVQuota:
    """How much of the ``kv`` store each app holds, and the limits of it.

    Measured on the node's replica, which holds every node's writes as far as they have been
    synced here: a value counts its key and value bytes, a counter its key and 8 bytes, and each
    counts as one key (a key with a value and a counter counts twice). The totals follow every
    change of the replica, local or merged (``Replica.subscribe``), so the quota holds across
    the cluster except for writes made on other nodes that have not reached this one yet.
    Merged writes are never refused (replicas must converge): the quota is checked where a guest
    writes. Thread-safe: the replica reports changes on the thread that made them.
    """

    def __init__(self, replica: QuotaReplica, max_bytes: int, max_keys: int) -> None:
        self.max_bytes = max_bytes
        self.max_keys = max_keys
        self._replica = replica
        self._lock = threading.Lock()
        self._entries: dict[str, _Entry] = {}
        """Replica key (``kv/<app>/<key>``) -> what it counts for."""
        self._usage: dict[str, list[int]] = {}
        """App -> [keys, bytes] in the replica."""
        self._writing: dict[str, dict[str, list[_Entry]]] = {}
        """App -> replica key -> what it holds once each write being made to it is made."""
        # Subscribed before the scan: a change meanwhile is counted twice at worst, and a
        # recount reads the replica's current state, so counting twice is harmless.
        self._unsubscribe = replica.subscribe(self._changed)
        for key in {*replica.keys("kv/"), *replica.counter_keys("kv/")}:
            self._changed(key)

    def close(self) -> None:
        self._unsubscribe()

    def usage(self, app: str) -> tuple[int, int]:
        """(keys, bytes) ``app`` holds in the store, as this node's replica knows it."""
        with self._lock:
            keys, size = self._usage.get(app, (0, 0))
            return keys, size

    def _changed(self, key: str) -> None:
        if not key.startswith("kv/"):
            return
        app, sep, user_key = key[3:].partition("/")
        if not sep:
            return
        # Measured under our lock (ours, then the replica's, never the other way round), so
        # that two threads recounting one key cannot apply an older measure last.
        with self._lock:
            value = self._replica.get(key)
            entry = _Entry(
                len(user_key.encode()),
                None if value is None else len(value),
                self._replica.value(key) > 0,
            )
            old = self._entries.get(key)
            usage = self._usage.setdefault(app, [0, 0])
            if old is not None:
                usage[0] -= old.keys
                usage[1] -= old.bytes
            usage[0] += entry.keys
            usage[1] += entry.bytes
            if entry.keys:
                self._entries[key] = entry
            else:
                self._entries.pop(key, None)

    @contextlib.contextmanager
    def write(self, app: str, key: str, *, value: int | None = None) -> Iterator[None]:
        """Check and hold room for a write of ``app``'s ``key`` while it is made: a value of
        ``value`` bytes, or (``value`` None) an increment of its counter.

        Raises HostError if the write would take the app past a limit; a write that takes
        nothing more (a value made shorter, a counter that exists) always passes.
        """
        scoped = f"kv/{app}/{key}"
        with self._lock:
            old = self._entries.get(scoped) or _Entry(len(key.encode()), None, False)
            new = _Entry(old.key_bytes, old.value_bytes, old.counter)
            if value is None:
                new.counter = True
            else:
                new.value_bytes = value
            writes = self._writing.setdefault(app, {})
            writes.setdefault(scoped, []).append(new)
            try:
                keys, size = self._usage.get(app, (0, 0))
                more_keys, more_bytes = self._in_flight(writes)
                if new.keys > old.keys and keys + more_keys > self.max_keys:
                    raise HostError(
                        f"kv: quota exceeded: the app would hold {keys + more_keys} keys, over"
                        f" its {self.max_keys} (--max-kv-keys); delete some first"
                    )
                if new.bytes > old.bytes and size + more_bytes > self.max_bytes:
                    raise HostError(
                        f"kv: quota exceeded: the app would hold {size + more_bytes} bytes,"
                        f" over its {self.max_bytes} (--max-kv); delete or shorten values first"
                    )
            except HostError:
                self._done(app, scoped, new)
                raise
        try:
            yield
        finally:
            with self._lock:
                self._done(app, scoped, new)

    def _in_flight(self, writes: dict[str, list[_Entry]]) -> tuple[int, int]:
        """What writes being made add to their app's usage, beyond what the replica holds:
        the room held for a write is no longer counted once the replica has its result (so a
        write counts once, whichever of the two is seen)."""
        more_keys = more_bytes = 0
        for scoped, targets in writes.items():
            now = self._entries.get(scoped)
            keys, size = (now.keys, now.bytes) if now is not None else (0, 0)
            more_keys += max(0, max(t.keys for t in targets) - keys)
            more_bytes += max(0, max(t.bytes for t in targets) - size)
        return more_keys, more_bytes

    def _done(self, app: str, scoped: str, target: _Entry) -> None:
        writes = self._writing[app]
        targets = writes[scoped]
        targets.remove(target)
        if not targets:
            del writes[scoped]
            if not writes:
                del self._writing[app]


class QuotaReplica(Protocol):
    """What :class:`KVQuota` reads of the node's replica (``crdt.Replica``)."""

    def get(self, key: str) -> bytes | None: ...
    def value(self, key: str) -> int: ...
    def keys(self, prefix: str = "") -> Iterable[str]: ...
    def counter_keys(self, prefix: str = "") -> Iterable[str]: ...
    def subscribe(self, callback: Callable[[str], None]) -> Callable[[], None]:
        """Call ``callback(key)`` after each change of a key; returns the unsubscribe."""
        ...


class Grant(Protocol):
    """What a handler needs of an app (its ``AppRecord``): its name and the namespaces it
    may call."""

    @property
    def name(self) -> str: ...
    @property
    def capabilities(self) -> Sequence[str]: ...


class KVStore(Protocol):
    """What the ``kv`` namespace needs of a store (the local one now, the replicated one later)."""

    def get(self, key: str) -> bytes | None: ...
    def set(self, key: str, value: bytes) -> None: ...
    def delete(self, key: str) -> None: ...
    def incr(self, key: str, n: int = 1) -> int: ...
    def value(self, key: str) -> int: ...


ActorHost = Callable[[str, bytes], Awaitable[bytes]]
"""``await actor(operation, payload)``: the ``actor`` namespace of the actor being called."""

CallApp = Callable[[str, str, bytes, int], Awaitable[bytes]]
"""``await call_app(app, operation, payload, depth)``: the node's own call path."""


class Host:
    """Host functions of one node; :meth:`handler` binds them to one caller."""

    def __init__(
        self,
        kv: KVStore,
        call_app: CallApp,
        redis_urls: Mapping[str, str],
        max_call_depth: int,
        on_host_call: Callable[[str], None] | None = None,
        kv_quota: KVQuota | None = None,
    ) -> None:
        self._store = kv
        self._quota = kv_quota
        self._call_app = call_app
        self._redis_urls = dict(redis_urls)
        self._redis: dict[str, aioredis.Redis] = {}
        self._redis_slots: dict[str, asyncio.Semaphore] = {}
        self._max_depth = max_call_depth
        self._on_host_call = on_host_call

    async def close(self) -> None:
        for client in self._redis.values():
            await client.aclose()
        self._redis.clear()

    def handler(self, record: Grant, depth: int, actor: ActorHost | None = None) -> HostHandler:
        """The ``__host_call`` handler for a guest of ``record`` at call depth ``depth``;
        ``actor`` is the ``actor`` namespace of an actor call (None outside one)."""
        capabilities = frozenset(record.capabilities)
        app = record.name
        on_host_call = self._on_host_call

        # Not itself a coroutine: it checks, then hands back the namespace's coroutine, which
        # saves a coroutine per host call. Its HostErrors are raised by the call, not by the
        # await; the scheduler's ``await handler(...)`` sees both alike.
        def handle(
            binding: str, namespace: str, operation: str, payload: bytes
        ) -> Awaitable[bytes]:
            if on_host_call is not None:
                on_host_call(namespace)
            if namespace not in capabilities:
                if namespace in NAMESPACE_HANDLERS:
                    raise HostError(f"capability not granted: {namespace}")
                raise HostError(f"unknown namespace: {namespace}")
            if namespace == "actor" and actor is not None:
                return actor(operation, payload)
            return NAMESPACE_HANDLERS[namespace](self, app, depth, binding, operation, payload)

        return handle

    # -- host -----------------------------------------------------------------------------

    async def _host(self, app: str, depth: int, binding: str, op: str, payload: bytes) -> bytes:
        if op == "echo":
            return payload
        if op == "sleep":
            try:
                ms = int(payload.decode("ascii"))
            except (UnicodeDecodeError, ValueError):
                raise HostError("host.sleep: payload must be milliseconds, ASCII digits") from None
            if ms < 0:
                raise HostError("host.sleep: milliseconds must not be negative")
            await asyncio.sleep(min(ms, MAX_SLEEP_MS) / 1000)
            return payload
        raise HostError(f"unknown operation: host.{op}")

    # -- kv -------------------------------------------------------------------------------

    async def _kv(self, app: str, depth: int, key: str, op: str, payload: bytes) -> bytes:
        if not key:
            raise HostError("kv: the binding must name a key")
        scoped = f"{app}/{key}"
        store = self._store
        try:
            if op == "get":
                value = store.get(scoped)
                if value is not None:
                    return value
                count = store.value(scoped)
                if count:
                    return str(count).encode()
                raise HostError(f"kv: no value for key {key!r}")
            # Writes wait for the store's fsync: off the loop, so that concurrent writers
            # share one (group commit) and other calls go on meanwhile.
            # The quota is checked before, and room held during, the write.
            quota = self._quota
            if op == "set":
                with quota.write(app, key, value=len(payload)) if quota else _NO_QUOTA:
                    await asyncio.to_thread(store.set, scoped, payload)
                return b""
            if op == "del":
                if store.get(scoped) is not None:  # no tombstone for a key without a value
                    await asyncio.to_thread(store.delete, scoped)
                return b""
            if op == "incr":
                try:
                    n = int(payload.decode("ascii")) if payload else 1
                except (UnicodeDecodeError, ValueError):
                    raise HostError("kv.incr: payload must be an ASCII integer") from None
                if n < 0:
                    raise HostError("kv.incr: counters only grow; the increment must be >= 0")
                if n == 0:
                    return str(store.value(scoped)).encode()
                with quota.write(app, key) if quota else _NO_QUOTA:
                    return str(await asyncio.to_thread(store.incr, scoped, n)).encode()
        except ValueError as exc:  # the store's limits (key or value too large)
            raise HostError(f"kv: {exc}") from None
        raise HostError(f"unknown operation: kv.{op}")

    # -- redis ----------------------------------------------------------------------------

    def _redis_client(self, binding: str) -> aioredis.Redis:
        client = self._redis.get(binding)
        if client is not None:
            return client
        url = self._redis_urls.get(binding)
        if url is None:
            if binding:
                raise HostError(f"redis: no connection named {binding!r}")
            raise HostError("redis: no Redis configured (start the node with --redis-url)")
        client = aioredis.Redis.from_url(
            url, socket_timeout=5, socket_connect_timeout=2, max_connections=REDIS_CONNECTIONS
        )
        # Raw replies: SET answers b"OK", not True.
        client.response_callbacks.clear()
        self._redis[binding] = client
        # redis-py's pool fails ("Too many connections") past its size instead of waiting:
        # commands beyond it wait here for a connection to come back.
        self._redis_slots[binding] = asyncio.Semaphore(REDIS_CONNECTIONS)
        return client

    async def _redis_call(
        self, app: str, depth: int, binding: str, op: str, payload: bytes
    ) -> bytes:
        command = op.upper()
        if not command.isascii() or not command.replace("_", "").isalnum():
            raise HostError(f"redis: bad command name {op!r}")
        if command in DENIED:
            raise HostError(f"redis: command {command} is not allowed")
        args: list[bytes | int | float]
        if not payload:
            args = []
        elif command in ONE_ARGUMENT:
            args = [payload]
        else:
            try:
                unpacked: object = msgpack.unpackb(payload, raw=True)
            except Exception:
                unpacked = None
            if not isinstance(unpacked, list) or not all(
                isinstance(a, bytes | int | float) for a in unpacked
            ):
                raise HostError(
                    f"redis: {command} takes a msgpack array of byte strings as payload"
                )
            args = unpacked
        client = self._redis_client(binding)
        try:
            async with self._redis_slots[binding]:
                reply = await client.execute_command(command, *args)  # type: ignore[no-untyped-call]
        except redis.exceptions.ResponseError as exc:
            raise HostError(f"redis: {exc}") from None
        except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError, OSError) as exc:
            raise HostError(f"redis: {exc}") from None
        return _encode_reply(reply)

    # -- actor ----------------------------------------------------------------------------

    async def _actor(self, app: str, depth: int, binding: str, op: str, payload: bytes) -> bytes:
        raise HostError(
            f"actor.{op}: not in an actor call (call the app at /actors/{{app}}/{{key}}/{{op}})"
        )

    # -- call -----------------------------------------------------------------------------

    async def _call(self, app: str, depth: int, target: str, op: str, payload: bytes) -> bytes:
        if depth + 1 > self._max_depth:
            raise HostError(f"call: depth limit ({self._max_depth}) reached")
        try:
            return await self._call_app(target, op or "main", payload, depth + 1)
        except AssemblexError as exc:
            message = exc.message
            # A chain of calls reports the innermost failure once, not once per level.
            if not message.startswith("call "):
                message = f"call {target}/{op}: {message}"
            raise HostError(message) from None


_NO_QUOTA = contextlib.nullcontext()


def _encode_reply(reply: object) -> bytes:
    """A Redis reply as the guest gets it: bytes as they are, numbers in ASCII, nil empty,
    anything else (arrays, maps) as msgpack."""
    if reply is None:
        return b""
    if isinstance(reply, bytes):
        return reply
    if isinstance(reply, bool):
        return b"1" if reply else b"0"
    if isinstance(reply, int | float):
        return str(reply).encode()
    if isinstance(reply, str):
        return reply.encode()
    return bytes(msgpack.packb(_plain(reply), use_bin_type=True))


def _plain(value: object) -> object:
    if isinstance(value, list | tuple | set):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {_plain(k): _plain(v) for k, v in value.items()}
    return value


NamespaceHandler = Callable[[Host, str, int, str, str, bytes], Awaitable[bytes]]
"""``await handler(host, app, depth, binding, operation, payload)``: one namespace's host
functions (a method of :class:`Host`)."""

# The one registry of namespaces: the capabilities an app may be granted (``AppRecord``,
# ``--capabilities``), the labels of ``assemblex_host_calls_total`` and the dispatch of
# ``__host_call`` all come from it. A namespace added here is all of them at once.
NAMESPACE_HANDLERS: Mapping[str, NamespaceHandler] = MappingProxyType(
    {
        "host": Host._host,
        "kv": Host._kv,
        "redis": Host._redis_call,
        "call": Host._call,
        "actor": Host._actor,
    }
)
"""Namespace -> its handler, in the order they are listed to users."""

NAMESPACES: tuple[str, ...] = tuple(NAMESPACE_HANDLERS)
"""Every host namespace a guest may call."""
