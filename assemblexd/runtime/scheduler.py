"""The scheduler: drives guest code on wasmtime's async API from the asyncio loop.

Theory of operation
-------------------
A run of guest code is a :class:`~assemblexd.runtime.future.CallFuture` (the scheduler sees
nothing else of wasmtime). Each poll runs the guest until it finishes, suspends in
``__host_call``, or reaches an epoch tick (a few milliseconds of guest time).
The scheduler decides where the next poll happens:

* The first poll, and the first poll after a host call, run *on the loop thread*: almost
  every waPC call finishes inside it, so a short call costs no thread hand-off at all. The
  guest's loop time is counted across host calls (a token bucket of one slice, refilled a
  little by each host call, see ``_drive``): a guest that computes between host calls, and
  so never reaches a tick on the loop, leaves it once it has used its slice.
* A guest that reaches a tick is CPU-bound. Its next polls run as *slices* on a small pool of
  worker threads (one per core by default; wasmtime releases the GIL while wasm runs, so slices
  on different threads run in parallel). A slice polls until the guest finishes, calls the
  host, runs out of budget, or has used its quantum; then it returns to the loop so that other
  guests queued for the workers get their turn (round robin at the pool's queue).
* A guest that calls the host is parked: its host operation runs as an ordinary coroutine on
  the loop and no thread is held. When the coroutine finishes, the outcome is stored on the
  invocation and the next poll resumes the guest.
* A guest that sleeps through WASI (``poll_oneoff`` on a clock, see ``_wasm``) is parked the
  same way, on the loop's timers.

Guest time is the sum of the polls' durations, so it does not count time spent waiting on the
host; ``budget`` bounds it. A wall-clock limit is the caller's (``asyncio.timeout``).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
import time
from collections.abc import Awaitable, Callable
from typing import Protocol

from .errors import CallTimeout, GuestError, HostError
from .future import CallFuture, HostCall, Sleep, Ticker

__all__ = ["CallFuture", "HostCall", "HostHandler", "Scheduler", "Sleep", "Ticking"]

YIELD_EVERY = 16
"""Host calls of one guest between two forced yields to the event loop."""
HOP_CREDIT = 20e-6
"""Loop time a host call earns back for its guest (seconds): about what the loop thread
spends to hand a poll to a worker and take it back, so moving a guest that computes less
than this per host call would cost the loop more than it saves."""

HostHandler = Callable[[str, str, str, bytes], Awaitable[bytes]]
"""``await handler(binding, namespace, operation, payload)``: the host side of ``__host_call``.

Raises :class:`~assemblexd.runtime.errors.HostError` to hand the guest an error text.
"""


class Ticking(Protocol):
    """What the scheduler needs of the engine (``_wasm.Engine``): its epoch ticker."""

    @property
    def ticker(self) -> Ticker: ...


class _Run:
    """The scheduler's own state of one run, shared with the worker thread polling it."""

    __slots__ = ("cancelled", "worker")

    def __init__(self) -> None:
        self.worker: asyncio.Future[bool] | None = None
        """The worker-thread slice polling the run now, if any."""
        self.cancelled = False
        """Set on the loop when the run is abandoned: the worker stops at its next poll."""


class Scheduler:
    """Runs call futures to completion. One per node; owns the worker threads."""

    def __init__(
        self,
        engine: Ticking,
        workers: int = 0,
        quantum: float = 0.02,
        loop_slice: float = 0.002,
        max_host_calls: int = 100_000,
    ) -> None:
        self._engine = engine
        self.max_host_calls = max_host_calls
        self._quantum = quantum
        self._loop_slice = loop_slice
        self.workers = workers or os.cpu_count() or 1
        self._pool = concurrent.futures.ThreadPoolExecutor(
            max_workers=self.workers, thread_name_prefix="assemblex-guest"
        )
        self.slices = 0
        """Slices handed to worker threads so far (a metric)."""

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)

    async def run(
        self, fut: CallFuture, budget: float, host: HostHandler, deadline: float | None = None
    ) -> int:
        """Drive ``fut`` to completion and return the guest's i32 result.

        ``budget`` is guest time in seconds; ``deadline`` an optional wall-clock limit in the
        loop's time (``loop.time()``). Raises WasmTrap if the guest trapped, CallTimeout past
        either limit. If the run does not finish normally (trap, timeout, cancellation), the
        instance is marked poisoned: it is never used again.
        """
        ticker = self._engine.ticker
        ticker.enter()
        run = _Run()
        finished = False
        try:
            # Fast path: most calls finish in their first polls, on the loop, with no timer
            # armed and no thread hand-off.
            if not self._poll_on_loop(fut, self._loop_slice):
                if deadline is None:
                    await self._drive(fut, budget, host, run)
                else:
                    try:
                        async with asyncio.timeout_at(deadline):
                            await self._drive(fut, budget, host, run)
                    except TimeoutError:
                        raise CallTimeout("call ran over its wall-clock limit") from None
            result = fut.finish()  # raises WasmTrap: the instance stays poisoned
            finished = True
            return result
        finally:
            if not finished:
                fut.poison()
            worker = run.worker
            if worker is not None and not worker.done():
                # A worker thread is still inside a poll of this future: it stops at the next
                # tick (run.cancelled); only then may the future be deleted.
                run.cancelled = True
                worker.add_done_callback(lambda _: _close(fut, ticker))
            else:
                _close(fut, ticker)

    def _poll_on_loop(self, fut: CallFuture, allowance: float) -> bool:
        """Poll on the loop thread for at most about ``allowance`` seconds of guest time."""
        limit = fut.guest_time + allowance
        while True:
            if fut.poll():
                return True
            if fut.pending is not None or fut.guest_time >= limit:
                return False

    async def _drive(self, fut: CallFuture, budget: float, host: HostHandler, run: _Run) -> None:
        """Until the guest finishes: serve its host calls, run CPU-bound stretches on workers.

        The guest's time on the loop thread is counted across host calls, as a token bucket:
        it starts with one slice of loop time (``credit``; the fast path spent part of it),
        polls on the loop spend it, and each host call earns back ``HOP_CREDIT``, up to a
        slice. After a host call, the guest resumes on the loop while it has credit, else on a
        worker. A guest that computes between host calls thus leaves the loop once it has used
        its slice, and then gets at most ``HOP_CREDIT`` of loop time per host call on average;
        one that mostly calls the host stays on the loop (moving it would cost the loop more),
        and comes back to it if a stall (a poll preempted by the OS) moved it away.
        """
        loop = asyncio.get_running_loop()
        ticker = self._engine.ticker
        slice_ = self._loop_slice
        credit = slice_ - fut.guest_time  # so far every poll was on the loop (the fast path)
        host_calls = 0
        while True:
            if fut.guest_time > budget:
                raise CallTimeout(f"guest ran for more than {budget:g}s")
            request = fut.pending
            if request is not None:
                if isinstance(request, Sleep):
                    # A WASI sleep (poll_oneoff): a wait like host/sleep, on the loop's
                    # timers. Like any host wait it holds no thread, is not guest time, and
                    # the wall-clock limit cuts it short.
                    ticker.leave()
                    try:
                        await asyncio.sleep(request.seconds)
                    finally:
                        ticker.enter()
                    fut.resume(True, b"", rearm=True)
                else:
                    host_calls += 1
                    if host_calls > self.max_host_calls:
                        raise GuestError(f"guest made more than {self.max_host_calls} host calls")
                    # The host call, here rather than in a method of its own: one coroutine
                    # less per host call. A parked guest runs no code: the ticker need not
                    # tick for it.
                    ticks = ticker.ticks
                    ticker.leave()
                    try:
                        data = await host(*request)
                    except HostError as exc:
                        ok, data = False, str(exc).encode()
                    else:
                        ok = True
                    finally:
                        ticker.enter()
                    # Time spent waiting on the host is not guest time: give the guest a
                    # fresh tick if one passed. (Only then: most host calls answer sooner, and
                    # setting the deadline costs more than reading a counter.)
                    fut.resume(ok, data, rearm=ticker.ticks != ticks)
                    if host_calls % YIELD_EVERY == 0:
                        # Host calls that complete at once never suspend this task: let the
                        # loop serve everything else now and then (a guest flooding the host).
                        await asyncio.sleep(0)
                credit = min(credit + HOP_CREDIT, slice_)
                if credit > 0:
                    used = fut.guest_time
                    done = self._poll_on_loop(fut, credit)
                    credit -= fut.guest_time - used
                    if done:
                        return
                    continue
            run.worker = loop.run_in_executor(self._pool, self._slice, fut, budget, run)
            done = await asyncio.shield(run.worker)
            run.worker = None
            if done:
                return

    def _slice(self, fut: CallFuture, budget: float, run: _Run) -> bool:
        """On a worker thread: poll until done, a host call, the budget, or the quantum."""
        self.slices += 1
        end = time.perf_counter() + self._quantum
        while True:
            done = fut.poll()
            if (
                done
                or fut.pending is not None
                or run.cancelled
                or fut.guest_time > budget
                or time.perf_counter() > end
            ):
                return done


def _close(fut: CallFuture, ticker: Ticker) -> None:
    fut.close()
    ticker.leave()
