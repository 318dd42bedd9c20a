"""Every guest example of every language, built from source, deployed to a real node and called.

The modules come from `scripts/build-guests` (`guests/build/<lang>-<example>.wasm`); a missing
one fails the test, it does not skip it: `scripts/test` and CI build them first. `redis3` runs
against the session's real redis-server. One node serves the whole module, so each module is
compiled once (Go modules take seconds), and the compiled modules are kept between runs in
guests/build/.cache/ (gitignored); a second node, without Redis, shares that cache.

`counter`, the actor example, runs on the runtime itself (the engine and the scheduler, no
node), one instance per actor kept across calls as the host keeps an actor's, with a fake
`actor` namespace that holds the actor's key, stored state and alarm in a dict and records
every host call, so the tests see what each SDK's actor helpers send.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from pathlib import Path

import pytest
import pytest_asyncio
import redis
from helpers import GUEST_BUILD_DIR, guest_wasm

from assemblexd.config import Config
from assemblexd.errors import GuestError, HostError
from assemblexd.node import Node
from assemblexd.runtime import CompiledModule, Engine, Instance, Scheduler

pytestmark = [pytest.mark.asyncio(loop_scope="module"), pytest.mark.redis]

CACHE_DIR = GUEST_BUILD_DIR / ".cache" / "compiled-for-tests"
LANGS = ("rust", "go", "assemblyscript", "zig")
EXAMPLES = ("hello", "redis3", "fib", "kv", "counter")

REDIS_VALUES = {"some_key1": b"alpha-", "some_key2": "βeta-".encode(), "some_key3": b"\x00gamma"}

Deploy = Callable[..., Awaitable[str]]


class Deployer:
    """Deploys each (module, capabilities) once per node and remembers the app name."""

    def __init__(self, node: Node) -> None:
        self.node = node
        self._apps: dict[tuple[str, str, tuple[str, ...] | None], str] = {}
        self._lock = asyncio.Lock()

    async def __call__(
        self, lang: str, example: str, capabilities: Sequence[str] | None = None
    ) -> str:
        caps = tuple(capabilities) if capabilities is not None else None
        key = (lang, example, caps)
        async with self._lock:
            if key not in self._apps:
                name = f"{lang}-{example}" + (
                    "" if caps is None else "-" + "-".join(caps or ("none",))
                )
                await self.node.deploy(name, guest_wasm(lang, example), capabilities=caps)
                self._apps[key] = name
            return self._apps[key]


def compiled_cache() -> Path:
    """The nodes' compiled-module cache, kept between runs next to the build outputs.

    The node names cache files `<sha256>-wasmtime<version>.cwasm` and drops any it cannot
    load, so a stale file is never used; files of modules that are no longer built are
    removed here so the folder does not grow with every rebuild.
    """
    cache = CACHE_DIR
    cache.mkdir(parents=True, exist_ok=True)
    current = {hashlib.sha256(p.read_bytes()).hexdigest() for p in GUEST_BUILD_DIR.glob("*.wasm")}
    for path in cache.glob("*.cwasm"):
        if path.name.split("-", 1)[0] not in current:
            path.unlink(missing_ok=True)
    return cache


@pytest.fixture(scope="module")
def data_dirs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """Data directories of the two nodes, both linked to the shared compiled-module cache."""
    cache = compiled_cache()
    dirs = tmp_path_factory.mktemp("node"), tmp_path_factory.mktemp("node-without-redis")
    for d in dirs:
        (d / "compiled").symlink_to(cache, target_is_directory=True)
    return dirs


@pytest.fixture(scope="module")
def redis_keys(redis_server: str) -> Iterator[redis.Redis]:
    """The three keys redis3 reads, SET in the real Redis."""
    client = redis.Redis.from_url(redis_server)
    client.mset(REDIS_VALUES)
    yield client
    client.close()


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def node(
    data_dirs: tuple[Path, Path], redis_server: str, redis_keys: redis.Redis
) -> AsyncIterator[Node]:
    config = Config(data_dir=data_dirs[0], redis_urls=(("", redis_server),), call_timeout=5.0)
    async with Node(config) as n:
        yield n


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def node_without_redis(data_dirs: tuple[Path, Path]) -> AsyncIterator[Node]:
    async with Node(Config(data_dir=data_dirs[1], call_timeout=5.0)) as n:
        yield n


@pytest.fixture(scope="module")
def deploy(node: Node) -> Deployer:
    return Deployer(node)


lang_param = pytest.mark.parametrize("lang", LANGS)


# -- the examples ---------------------------------------------------------------------------


@lang_param
async def test_hello(node: Node, deploy: Deploy, lang: str) -> None:
    app = await deploy(lang, "hello")
    assert await node.call(app, "main", b"Ada") == b"Hello, Ada!"
    assert await node.call(app, "main", b"") == b"Hello, World!"
    assert await node.call(app, "main", "Zoë 🦀".encode()) == "Hello, Zoë 🦀!".encode()
    # Bytes in, bytes out: a payload that is not UTF-8 comes back as it was sent.
    assert await node.call(app, "main", b"\xff\x00x") == b"Hello, \xff\x00x!"
    big = b"n" * 200_000
    assert await node.call(app, "main", big) == b"Hello, " + big + b"!"


@lang_param
async def test_hello_log_reaches_the_guest_logger_tagged_with_the_app(
    node: Node, deploy: Deploy, lang: str, caplog: pytest.LogCaptureFixture
) -> None:
    app = await deploy(lang, "hello")
    caplog.set_level(logging.INFO, logger="assemblexd.guest")
    line = f"a line from {lang}: héllo"
    assert await node.call(app, "log", line.encode()) == b"logged"
    records = [r for r in caplog.records if r.name == "assemblexd.guest"]
    assert len(records) == 1, [r.getMessage() for r in records]
    record = records[0]
    assert record.levelno == logging.INFO
    assert record.app == app  # type: ignore[attr-defined]
    assert record.version == 1  # type: ignore[attr-defined]
    assert record.getMessage() == f"[{app} v1] {line}"


@lang_param
async def test_redis3_reads_three_keys_through_host_calls(
    node: Node, deploy: Deploy, lang: str, redis_keys: redis.Redis
) -> None:
    app = await deploy(lang, "redis3")
    assert await node.call(app, "main", b"") == b"".join(REDIS_VALUES.values())
    # The payload is ignored; a value changed in Redis is read on the next call.
    redis_keys.set("some_key2", f"<{lang}>")
    try:
        expected = REDIS_VALUES["some_key1"] + f"<{lang}>".encode() + REDIS_VALUES["some_key3"]
        assert await node.call(app, "main", b"ignored") == expected
    finally:
        redis_keys.set("some_key2", REDIS_VALUES["some_key2"])


async def test_redis3_concurrent_calls_in_every_language(
    node: Node, deploy: Deploy, redis_keys: redis.Redis
) -> None:
    apps = [await deploy(lang, "redis3") for lang in LANGS]
    results = await asyncio.gather(*(node.call(app, "main", b"") for app in apps * 50))
    assert results == [b"".join(REDIS_VALUES.values())] * len(results)


@lang_param
@pytest.mark.parametrize(
    ("n", "answer"), [(b"0", b"0"), (b"1", b"1"), (b"10", b"55"), (b"24", b"46368")]
)
async def test_fib(node: Node, deploy: Deploy, lang: str, n: bytes, answer: bytes) -> None:
    app = await deploy(lang, "fib")
    assert await node.call(app, "main", n) == answer


@lang_param
async def test_kv_set_get_incr(node: Node, deploy: Deploy, lang: str) -> None:
    app = await deploy(lang, "kv")
    assert await node.call(app, "set", b"greeting=hello world") == b"ok"
    assert await node.call(app, "get", b"greeting") == b"hello world"
    # Split at the first '=': the value may contain more.
    assert await node.call(app, "set", b"eq=a=b=") == b"ok"
    assert await node.call(app, "get", b"eq") == b"a=b="
    assert await node.call(app, "set", b"greeting=") == b"ok"
    assert await node.call(app, "get", b"greeting") == b""
    # Twenty calls on warm instances: each incr sees the previous one.
    for i in range(1, 21):
        assert await node.call(app, "incr", b"hits") == str(i).encode()
    assert await node.call(app, "get", b"hits") == b"20"


async def test_kv_is_scoped_per_app(node: Node, deploy: Deploy) -> None:
    rust, zig = await deploy("rust", "kv"), await deploy("zig", "kv")
    assert await node.call(rust, "set", b"scoped=rust") == b"ok"
    assert await node.call(zig, "set", b"scoped=zig") == b"ok"
    assert await node.call(rust, "get", b"scoped") == b"rust"
    assert await node.call(zig, "get", b"scoped") == b"zig"


async def test_go_time_sleep_parks_the_guest(node: Node, deploy: Deploy) -> None:
    """Go's time.Sleep ends in WASI poll_oneoff: the guest waits without holding the loop or
    a thread, so concurrent sleeps overlap and other calls go on meanwhile."""
    app, hello = await deploy("go", "sleep"), await deploy("go", "hello")
    assert await node.call(app, "main", b"1") == b"slept 1ms"  # a warm instance to start
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    sleeps = [asyncio.create_task(node.call(app, "main", b"1000")) for _ in range(3)]
    await asyncio.sleep(0.05)
    assert await node.call(hello, "main", b"Ada") == b"Hello, Ada!"
    assert loop.time() - t0 < 0.5
    assert not any(s.done() for s in sleeps)
    assert await asyncio.gather(*sleeps) == [b"slept 1000ms"] * 3
    assert 1.0 <= loop.time() - t0 < 2.0  # together, not one after another (3 s)
    assert await _guest_error(node, app, "main", b"soon") == (
        "invalid number of milliseconds: soon"
    )


# -- the counter actor, on a fake actor namespace ---------------------------------------------


async def _answer(response: bytes) -> bytes:
    return response


class FakeActor:
    """The host's `actor` namespace for one actor (binding "", ops `key`, `load`, `store`,
    `alarm`, `cancel`): its key, stored state and pending alarm held in `actor`. An operation
    named in `fail` fails with that host error text; every host call is kept in `calls`."""

    def __init__(self, key: str, state: bytes = b"") -> None:
        self.actor: dict[str, bytes | None] = {"key": key.encode(), "state": state, "alarm": None}
        self.fail: dict[str, str] = {}
        self.calls: list[tuple[str, str, str, bytes]] = []

    def __call__(
        self, binding: str, namespace: str, operation: str, payload: bytes
    ) -> Awaitable[bytes]:
        self.calls.append((binding, namespace, operation, payload))
        if namespace != "actor":
            raise HostError(f"unknown namespace: {namespace}")
        if operation in self.fail:
            raise HostError(self.fail[operation])
        actor = self.actor
        if operation in ("key", "load"):
            return _answer(actor["key" if operation == "key" else "state"] or b"")
        if operation == "store":
            actor["state"] = payload
        elif operation == "alarm":
            actor["alarm"] = payload
        elif operation == "cancel":
            actor["alarm"] = None
        else:
            raise HostError(f"unknown operation: actor.{operation}")
        return _answer(b"")

    def operations(self) -> list[str]:
        """The operations called so far, checking that each went to binding "" of `actor`."""
        assert {(b, ns) for b, ns, _, _ in self.calls} <= {("", "actor")}, self.calls
        return [op for _, _, op, _ in self.calls]


class ActorRuntime:
    """The runtime without a node: compiles each counter module once, starts instances."""

    def __init__(self) -> None:
        self.engine = Engine()
        self.scheduler = Scheduler(self.engine, workers=1)
        self._compiled: dict[str, CompiledModule] = {}

    def close(self) -> None:
        self.scheduler.close()
        self.engine.close()

    async def start(self, lang: str, host: FakeActor) -> ActorGuest:
        """A new instance of `<lang>-counter`, initialized as a pool does it."""
        compiled = self._compiled.get(lang)
        if compiled is None:
            wasm = guest_wasm(lang, "counter")
            compiled = await asyncio.to_thread(self.engine.compile, wasm)
            self._compiled[lang] = compiled
        inst = self.engine.new_instance(compiled, 64 << 20, f"{lang}-counter")
        await self.scheduler.run(inst.instantiate(), 5.0, host)
        inst.bind()
        for name in compiled.init_functions:
            await self.scheduler.run(inst.call_function(name), 5.0, host)
        return ActorGuest(self.scheduler, inst, host)


class ActorGuest:
    """One actor's instance: calls run on it one at a time, against its fake namespace."""

    def __init__(self, scheduler: Scheduler, inst: Instance, host: FakeActor) -> None:
        self.scheduler = scheduler
        self.inst = inst
        self.host = host

    async def call(self, op: str, payload: bytes = b"") -> bytes:
        """The response; raises GuestError with the guest's error text."""
        fut = self.inst.guest_call(op.encode(), payload)
        if await self.scheduler.run(fut, 5.0, self.host) != 1:
            raise GuestError((fut.guest_error or b"").decode("utf-8", "replace"))
        return fut.response or b""

    async def error(self, op: str, payload: bytes = b"") -> str:
        with pytest.raises(GuestError) as info:
            await self.call(op, payload)
        return info.value.message


@pytest.fixture(scope="module")
def actor_runtime() -> Iterator[ActorRuntime]:
    runtime = ActorRuntime()
    yield runtime
    runtime.close()


@lang_param
async def test_counter_increment_stores_the_count_and_keeps_one_in_memory(
    actor_runtime: ActorRuntime, lang: str
) -> None:
    host = FakeActor("room-1")
    actor = await actor_runtime.start(lang, host)
    assert await actor.call("increment") == b"1 1"
    assert await actor.call("increment", b"ignored") == b"2 2"
    assert host.actor["state"] == b"2"
    assert host.operations() == ["load", "store", "load", "store"]
    assert [p for _, _, op, p in host.calls if op == "store"] == [b"1", b"2"]
    # get reads the state and changes nothing.
    assert await actor.call("get") == b"2 2"
    assert host.actor["state"] == b"2"
    assert host.operations()[4:] == ["load"]
    # What an alarm calls (op alarm, empty payload) counts as an increment.
    assert await actor.call("alarm") == b"3 3"
    assert host.actor["state"] == b"3"
    # A new instance of the same actor reads the stored count; its memory starts at zero.
    again = await actor_runtime.start(lang, host)
    assert await again.call("get") == b"3 0"
    assert await again.call("increment") == b"4 1"
    assert await actor.call("get") == b"4 3"


@lang_param
async def test_counter_reads_a_stored_count(actor_runtime: ActorRuntime, lang: str) -> None:
    actor = await actor_runtime.start(lang, FakeActor("k", state=b"41"))
    assert await actor.call("get") == b"41 0"
    assert await actor.call("increment") == b"42 1"
    bad = await actor_runtime.start(lang, FakeActor("k", state=b"forty"))
    assert await bad.error("increment") == "invalid state: forty"
    assert await bad.error("get") == "invalid state: forty"


@lang_param
async def test_counter_key(actor_runtime: ActorRuntime, lang: str) -> None:
    host = FakeActor("user:42.eu-west_1")
    actor = await actor_runtime.start(lang, host)
    assert await actor.call("key") == b"user:42.eu-west_1"
    assert host.operations() == ["key"]
    assert host.calls[0][3] == b""


@lang_param
async def test_counter_alarm_set_and_cancel(actor_runtime: ActorRuntime, lang: str) -> None:
    host = FakeActor("a")
    actor = await actor_runtime.start(lang, host)
    assert await actor.call("set_alarm", b"250") == b"ok"
    assert host.calls == [("", "actor", "alarm", b"250")]  # ASCII milliseconds
    assert host.actor["alarm"] == b"250"
    assert await actor.call("set_alarm", b"0") == b"ok"
    assert host.actor["alarm"] == b"0"
    assert await actor.call("cancel_alarm") == b"ok"
    assert host.calls[-1] == ("", "actor", "cancel", b"")
    assert host.actor["alarm"] is None
    assert await actor.error("set_alarm", b"soon") == "invalid number of milliseconds: soon"
    assert await actor.error("set_alarm", b"") == "invalid number of milliseconds: "
    assert len(host.calls) == 3  # a bad payload makes no host call


@lang_param
async def test_counter_failed_host_calls_are_guest_errors_with_the_hosts_text(
    actor_runtime: ActorRuntime, lang: str
) -> None:
    host = FakeActor("a")
    actor = await actor_runtime.start(lang, host)
    assert await actor.call("increment") == b"1 1"
    host.fail["store"] = "actor: this activation was deposed (generation 3 < 4)"
    assert await actor.error("increment") == (
        "actor: this activation was deposed (generation 3 < 4)"
    )
    assert await actor.error("alarm") == "actor: this activation was deposed (generation 3 < 4)"
    # Nothing changed: neither the stored count nor the one in memory.
    assert host.actor["state"] == b"1"
    assert await actor.call("get") == b"1 1"
    del host.fail["store"]
    assert await actor.call("increment") == b"2 2"
    # Every helper passes its failure on, as outside an actor call.
    outside = "actor: not in an actor call"
    host.fail.update(dict.fromkeys(("key", "load", "alarm", "cancel"), outside))
    for op, payload in [
        ("increment", b""),
        ("get", b""),
        ("key", b""),
        ("set_alarm", b"250"),
        ("cancel_alarm", b""),
    ]:
        assert await actor.error(op, payload) == outside, op
    assert host.actor == {"key": b"a", "state": b"2", "alarm": None}


# -- the SDKs' error paths -------------------------------------------------------------------


async def _guest_error(node: Node, app: str, op: str, payload: bytes) -> str:
    with pytest.raises(GuestError) as info:
        await node.call(app, op, payload)
    return info.value.message


@lang_param
@pytest.mark.parametrize("example", EXAMPLES)
async def test_unknown_operation(node: Node, deploy: Deploy, lang: str, example: str) -> None:
    app = await deploy(lang, example)
    assert await _guest_error(node, app, "nope", b"x") == "unknown operation: nope"
    assert await _guest_error(node, app, "", b"") == "unknown operation: "


@lang_param
async def test_failed_host_call_denied_capability(node: Node, deploy: Deploy, lang: str) -> None:
    app = await deploy(lang, "redis3", capabilities=["host", "kv"])
    assert await _guest_error(node, app, "main", b"") == "capability not granted: redis"
    # The failure does not spoil the instance: the next call fails the same way.
    assert await _guest_error(node, app, "main", b"") == "capability not granted: redis"


@lang_param
async def test_failed_host_call_without_redis(node_without_redis: Node, lang: str) -> None:
    app = await Deployer(node_without_redis)(lang, "redis3")
    assert (
        await _guest_error(node_without_redis, app, "main", b"")
        == "redis: no Redis configured (start the node with --redis-url)"
    )


@lang_param
async def test_failed_host_call_kv_get_of_a_missing_key(
    node: Node, deploy: Deploy, lang: str
) -> None:
    app = await deploy(lang, "kv")
    assert await _guest_error(node, app, "get", b"missing") == "kv: no value for key 'missing'"
    # The instance goes on serving after the error.
    assert await node.call(app, "set", b"present=1") == b"ok"
    assert await node.call(app, "get", b"present") == b"1"


@lang_param
async def test_handler_errors(node: Node, deploy: Deploy, lang: str) -> None:
    fib, kv = await deploy(lang, "fib"), await deploy(lang, "kv")
    assert await _guest_error(node, fib, "main", b"x1") == "invalid number: x1"
    assert await _guest_error(node, fib, "main", b"") == "invalid number: "
    assert await _guest_error(node, kv, "set", b"no-equals-sign") == "set expects key=value"
    assert await node.call(fib, "main", b"12") == b"144"


async def test_a_missing_module_fails_with_how_to_build_it() -> None:
    # async only because the module's asyncio mark applies to every test here
    with pytest.raises(pytest.fail.Exception, match=r"run scripts/build-guests rust"):
        guest_wasm("rust", "no-such-example")
