"""An actor's slot on its node outlives the hand-over of its lock from one call to the next.

An asyncio lock released to a waiting call reads unlocked until that call runs. The
housekeeping that passivates idle actors must not drop the slot in that moment: the waiting
call would then activate the actor anew in a slot no longer listed, whose instance nothing
ever frees, while the next call activates it once more beside it.
"""

from __future__ import annotations

import asyncio
import types
from pathlib import Path
from typing import Any

import pytest

from assemblexd.actors import Actors, ActorStore, Member, PeerClient, service
from assemblexd.metrics import Metrics


class Pool:
    def __init__(self) -> None:
        self.live = 0
        self.acquired = 0

    async def acquire(self) -> str:
        self.live += 1
        self.acquired += 1
        return f"instance{self.acquired}"

    def discard(self, inst: str) -> None:
        self.live -= 1


async def test_housekeeping_keeps_a_slot_whose_lock_is_being_handed_over(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    housekeeping = asyncio.Event()
    real_sleep = asyncio.sleep

    async def sleep(delay: float) -> None:
        if delay == 1.0:  # the housekeeping's round: run when the test says
            await housekeeping.wait()
            housekeeping.clear()
        else:
            await real_sleep(delay)

    shim = types.SimpleNamespace(**{n: getattr(asyncio, n) for n in asyncio.__all__})
    shim.sleep = sleep
    monkeypatch.setattr(service, "asyncio", shim)

    pool = Pool()
    loaded = types.SimpleNamespace(pool=pool, record=types.SimpleNamespace(version=1))
    first_may_end = asyncio.Event()
    ran: list[tuple[str, Any]] = []

    class Runner:
        def loaded(self, app: str) -> Any:
            return loaded

        async def run(self, loaded: Any, inst: Any, op: str, payload: bytes, actor: Any) -> bytes:
            ran.append((op, inst))
            if op == "first":
                await first_may_end.wait()
                # The housekeeping's round comes next in the loop: just after this call
                # hands the lock to the second one, before that one runs.
                housekeeping.set()
            return b""

    store = ActorStore(tmp_path / "actors.sqlite")
    me = Member("me", "me", "", frozenset({"app"}))
    actors = Actors(
        "me", "me", store, lambda: [me], Runner(), PeerClient(None),
        quorum=False, idle=0.0, wait=5.0, call_limit=10.0, state_max=1024, metrics=Metrics(),
        running=lambda: ["app"],
    )  # fmt: skip
    try:
        async with actors:
            first = asyncio.create_task(actors.call("app", "k", "first", b""))
            while not ran:
                await real_sleep(0.01)
            second = asyncio.create_task(actors.call("app", "k", "second", b""))
            await real_sleep(0.1)  # the second call waits for the lock
            first_may_end.set()
            answers = [await first, await second]
            assert [a.generation for a in answers] == [1, 1], "one activation ran both"
            assert ran == [("first", "instance1"), ("second", "instance1")]
            assert actors.active_count() == 1
        assert pool.live == 0, "every instance freed at the end"
    finally:
        store.close()
