"""Fakes of what the scheduler and the pools drive: scripted guests, a ticker, instances.

They implement the runtime's protocols (``runtime.future.CallFuture``, ``Ticker``,
``runtime.pool.PoolInstance``, ``Instances``) with no wasmtime at all, and record what was done
to them, so that the scheduler's and the pools' decisions can be checked one by one.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from assemblexd.runtime.errors import WasmTrap
from assemblexd.runtime.future import HostCall, Sleep


@dataclass(frozen=True)
class Spin:
    """One poll that computes for ``seconds`` of guest time, then yields at a tick."""

    seconds: float = 0.001


@dataclass(frozen=True)
class Call:
    """One poll that ends in ``__host_call``."""

    namespace: str = "host"
    operation: str = "echo"
    payload: bytes = b"hi"
    binding: str = ""


@dataclass(frozen=True)
class Nap:
    """One poll that ends in a WASI sleep of ``seconds``."""

    seconds: float


@dataclass(frozen=True)
class Block:
    """One poll that blocks its thread until ``release`` is set (then yields)."""

    entered: threading.Event
    release: threading.Event


Step = Spin | Call | Nap | Block


@dataclass
class Resumed:
    ok: bool
    data: bytes
    rearm: bool


class FakeFuture:
    """A guest run as a script: each poll plays the next step; after the last, it is done."""

    def __init__(
        self,
        steps: Iterable[Step] = (),
        result: int = 1,
        trap: WasmTrap | None = None,
        on_close: Callable[[], object] | None = None,
    ) -> None:
        self._steps = list(steps)
        self._result = result
        self._trap = trap
        self._on_close = on_close
        self._pending: HostCall | Sleep | None = None
        self.time = 0.0
        self.polls: list[str] = []
        """The name of the thread of each poll."""
        self.resumed: list[Resumed] = []
        self.poisoned = False
        self.closed = False
        self.finished = False
        self.polling = False
        self.misuse: list[str] = []
        """What the scheduler did that a real future forbids (must stay empty)."""

    # -- the CallFuture protocol ----------------------------------------------------------

    def poll(self) -> bool:
        if self.closed:
            self.misuse.append("poll after close")
        if self._pending is not None:
            self.misuse.append("poll before the pending host call was answered")
        self.polling = True
        try:
            self.polls.append(threading.current_thread().name)
            if not self._steps:
                return True
            step = self._steps.pop(0)
            if isinstance(step, Spin):
                self.time += step.seconds
            elif isinstance(step, Call):
                self._pending = (step.binding, step.namespace, step.operation, step.payload)
            elif isinstance(step, Nap):
                self._pending = Sleep(step.seconds)
            else:
                step.entered.set()
                step.release.wait(10)
            return False
        finally:
            self.polling = False

    @property
    def pending(self) -> HostCall | Sleep | None:
        return self._pending

    def resume(self, ok: bool, data: bytes, *, rearm: bool) -> None:
        if self._pending is None:
            self.misuse.append("resume with nothing pending")
        self._pending = None
        self.resumed.append(Resumed(ok, data, rearm))

    @property
    def guest_time(self) -> float:
        return self.time

    def finish(self) -> int:
        self.finished = True
        if self._trap is not None:
            raise self._trap
        return self._result

    def poison(self) -> None:
        self.poisoned = True

    def close(self) -> None:
        if self.polling:
            self.misuse.append("close while a poll runs")
        self.closed = True
        if self._on_close is not None:
            self._on_close()


class FakeTicker:
    """The epoch ticker: counts the guests it ticks for; ``ticks`` moves when a test says."""

    def __init__(self) -> None:
        self.ticks = 0
        self.running = 0

    def enter(self) -> None:
        self.running += 1

    def leave(self) -> None:
        self.running -= 1


@dataclass
class FakeEngine:
    """What the scheduler needs (a ticker) and what a pool needs (``new_instance``)."""

    ticker: FakeTicker = field(default_factory=FakeTicker)
    made: list[FakeInstance] = field(default_factory=list)
    init_steps: dict[str, list[Step]] = field(default_factory=dict)
    """Init function name -> the script of its run, on every new instance."""
    init_traps: dict[str, WasmTrap] = field(default_factory=dict)

    def new_instance(self, compiled: FakeModule, max_memory: int, tag: object) -> FakeInstance:
        inst = FakeInstance(self, compiled, max_memory, tag)
        self.made.append(inst)
        return inst


@dataclass(frozen=True)
class FakeModule:
    init_functions: tuple[str, ...] = ()


class FakeInstance:
    """An instance: records the order of its life (instantiate, bind, init calls, close)."""

    def __init__(self, engine: FakeEngine, compiled: FakeModule, max_memory: int, tag: object):
        self.engine = engine
        self.compiled = compiled
        self.max_memory = max_memory
        self.tag = tag
        self.poisoned = False
        self.closed = False
        self.events: list[str] = []

    def _future(self, name: str) -> FakeFuture:
        steps = self.engine.init_steps.get(name, [])
        fut = FakeFuture(steps, trap=self.engine.init_traps.get(name))
        original = fut.poison

        def poison() -> None:  # as the real future: the run's instance is poisoned
            original()
            self.poisoned = True

        fut.poison = poison  # type: ignore[method-assign]
        return fut

    def instantiate(self) -> FakeFuture:
        self.events.append("instantiate")
        return self._future("<instantiate>")

    def bind(self) -> None:
        self.events.append("bind")

    def call_function(self, name: str) -> FakeFuture:
        self.events.append(name)
        return self._future(name)

    def close(self) -> None:
        self.events.append("close")
        self.closed = True
