"""The narrow interface between the scheduler and a run of guest code.

The :class:`~assemblexd.runtime.scheduler.Scheduler` drives anything that is a
:class:`CallFuture` (wasmtime's, ``_wasm.CallFuture``, or a test's fake): poll it, look at the
host call it waits on, hand that call's outcome back, read its guest time. It knows nothing
else of wasmtime, which is what lets the scheduler and the pools be tested without it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

__all__ = ["CallFuture", "HostCall", "Sleep", "Ticker"]

HostCall = tuple[str, str, str, bytes]
"""A guest's ``__host_call``: (binding, namespace, operation, payload). A plain tuple: one is
made per host call, and a tuple costs least."""


@dataclass(frozen=True, slots=True)
class Sleep:
    """A guest waiting in WASI ``poll_oneoff`` for a clock: resume it after ``seconds``."""

    seconds: float


class CallFuture(Protocol):
    """One run of guest code (a waPC call, an instantiation, an init function)."""

    def poll(self) -> bool:
        """Run the guest until it finishes (True), or yields at an epoch tick or waits on the
        host (False). Blocks the calling thread for at most about one tick of guest time."""
        ...

    @property
    def pending(self) -> HostCall | Sleep | None:
        """What the guest waits on, if anything: a host call, or a WASI sleep. None once
        :meth:`resume` has answered it (until the guest makes its next one)."""
        ...

    def resume(self, ok: bool, data: bytes, *, rearm: bool) -> None:
        """Answer :attr:`pending`: the next poll resumes the guest with success (``ok``, the
        response ``data``) or failure (the error text ``data``). ``rearm`` gives the guest a
        fresh epoch deadline first (a tick passed while it waited: waiting is not guest time).
        """
        ...

    @property
    def guest_time(self) -> float:
        """Seconds spent inside :meth:`poll` so far (guest time; host waits excluded)."""
        ...

    def finish(self) -> int:
        """After the last poll returned True: the guest's i32 result; raises
        :class:`~assemblexd.runtime.errors.WasmTrap` if it trapped."""
        ...

    def poison(self) -> None:
        """The run did not end normally (trap, timeout, cancellation): its instance must
        never run again."""
        ...

    def close(self) -> None:
        """Release the run (cancels it if unfinished). Idempotent; never while a poll of it
        is running on another thread."""
        ...


class Ticker(Protocol):
    """The epoch ticker, as the scheduler sees it (``_wasm.EpochTicker``)."""

    @property
    def ticks(self) -> int:
        """Epoch increments so far."""
        ...

    def enter(self) -> None:
        """A guest runs (or may run) from now: tick."""
        ...

    def leave(self) -> None:
        """A guest stopped running (finished, or waits on the host)."""
        ...
