"""The scheduler: drives guest code on wasmtime's async API from the asyncio loop.

Theory of operation
-------------------
A run of guest code is a :class:`~assemblexd._wasm.CallFuture`. Each poll runs the guest until it
finishes, suspends in ``__host_call``, or reaches an epoch tick (a few milliseconds of guest
time). The scheduler decides where the next poll happens:

* The first poll, and the first poll after every host call, run *on the loop thread*: almost
  every waPC call finishes inside it, so a short call costs no thread hand-off at all.
* A guest that reaches a tick is CPU-bound. Its next polls run as *slices* on a small pool of
  worker threads (one per core by default; wasmtime releases the GIL while wasm runs, so slices
  on different threads run in parallel). A slice polls until the guest finishes, calls the
  host, runs out of budget, or has used its quantum; then it returns to the loop so that other
  guests queued for the workers get their turn (round robin at the pool's queue).
* A guest that calls the host is parked: its host operation runs as an ordinary coroutine on
  the loop and no thread is held. When the coroutine finishes, the outcome is stored on the
  invocation and the next poll resumes the guest.

Guest time is the sum of the polls' durations, so it does not count time spent waiting on the
host; ``budget`` bounds it. A wall-clock limit is the caller's (``asyncio.timeout``).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
import time
from collections.abc import Awaitable, Callable

from ._wasm import CallFuture, Engine, Invocation
from .errors import CallTimeout, HostError

__all__ = ["HostHandler", "Scheduler"]

HostHandler = Callable[[str, str, str, bytes], Awaitable[bytes]]
"""``await handler(binding, namespace, operation, payload)``: the host side of ``__host_call``.

Raises :class:`~assemblexd.errors.HostError` to hand the guest an error text.
"""


class Scheduler:
    """Runs call futures to completion. One per node; owns the worker threads."""

    def __init__(self, engine: Engine, workers: int = 0, quantum: float = 0.02) -> None:
        self._engine = engine
        self._quantum = quantum
        self.workers = workers or os.cpu_count() or 1
        self._pool = concurrent.futures.ThreadPoolExecutor(
            max_workers=self.workers, thread_name_prefix="assemblex-guest"
        )
        self.slices = 0
        """Slices handed to worker threads so far (a metric)."""

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)

    async def run(self, fut: CallFuture, budget: float, host: HostHandler) -> int:
        """Drive ``fut`` to completion and return the guest's i32 result.

        Raises WasmTrap if the guest trapped, CallTimeout when it used more than ``budget``
        seconds of guest time. If the run does not finish normally (trap, timeout,
        cancellation), the instance is marked poisoned: it is never used again.
        """
        inv = fut.invocation
        ticker = self._engine.ticker
        ticker.enter()
        running: asyncio.Future[bool] | None = None
        finished = False
        try:
            on_loop = True
            while True:
                if on_loop:
                    done = fut.poll()
                else:
                    running = asyncio.get_running_loop().run_in_executor(
                        self._pool, self._slice, fut, budget
                    )
                    done = await asyncio.shield(running)
                    running = None
                if done:
                    result = fut.finish()  # raises WasmTrap: the instance is poisoned
                    finished = True
                    return result
                if inv.cpu_time > budget:
                    raise CallTimeout(f"guest ran for more than {budget:g}s")
                request = inv.host_request
                if request is not None and not inv.host_done:
                    await self._host_call(inv, request, host)
                    on_loop = True
                else:
                    on_loop = False
        finally:
            if not finished:
                inv.instance.poisoned = True
            if running is not None and not running.done():
                # A worker is still inside a poll of this future: it stops at the next tick
                # (inv.cancelled); only then may the future be deleted.
                inv.cancelled = True
                running.add_done_callback(lambda _: _close(fut, ticker))
            else:
                _close(fut, ticker)

    async def _host_call(
        self, inv: Invocation, request: tuple[str, str, str, bytes], host: HostHandler
    ) -> None:
        binding, namespace, operation, payload = request
        try:
            data = await host(binding, namespace, operation, payload)
        except HostError as exc:
            inv.complete_host_call(False, str(exc).encode())
        else:
            inv.complete_host_call(True, data)
        # Time spent waiting on the host is not guest time: give the guest a fresh tick.
        inv.instance.rearm()

    def _slice(self, fut: CallFuture, budget: float) -> bool:
        """On a worker thread: poll until done, a host call, the budget, or the quantum."""
        self.slices += 1
        inv = fut.invocation
        end = time.perf_counter() + self._quantum
        while True:
            done = fut.poll()
            if (
                done
                or inv.host_request is not None
                or inv.cancelled
                or inv.cpu_time > budget
                or time.perf_counter() > end
            ):
                return done


def _close(fut: CallFuture, ticker: object) -> None:
    fut.close()
    ticker.leave()  # type: ignore[attr-defined]
