"""A node's actors: routing, activation, the live instances, stores, alarms and heartbeats.

The rules live in ``core.py``; this module runs them. It keeps, per actor this node owns, an
:class:`Active` (the generation, the state, the alarm and the guest instance), and one FIFO
lock per actor, so calls to one actor run one at a time in arrival order. It talks to the
other nodes with :class:`~.wire.PeerClient` (``POST /peer/actors``) and answers them in
:meth:`Actors.handle`. docs/actors.md has the design and what it promises.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
from collections.abc import Awaitable, Callable, Iterable
from typing import Any, Protocol

from ..errors import AssemblexError, BadRequest, CallTimeout, GuestError, HostError, UnknownApp
from ..runtime import WasmTrap
from . import core
from .core import LEASE, Quorum, Sessions, State
from .errors import ActorUnavailable, Forwarded, NoQuorum
from .store import ActorStore
from .wire import NotSent, PeerClient

__all__ = ["Active", "ActorHost", "Actors", "Answer", "Held", "Member", "Retry"]

log = logging.getLogger("assemblexd.actors")

ROUND_TIMEOUT = 1.0
"""Seconds a prepare or accept round waits for answers before it counts what it has."""
MAX_HOPS = 2
"""How many times a call is forwarded at most before the node that has it waits and retries."""
ALARM_GRACE_MS = 2_000
"""A node that is not an actor's owner fires its due alarm this long after it is due (the
owner may have missed the record); the owner runs it once, whoever asks."""


@dataclasses.dataclass(frozen=True)
class Answer:
    """An actor call's response, and which activation ran it (``Assemblex-Actor-Owner`` and
    ``Assemblex-Actor-Generation`` in the HTTP answer)."""

    body: bytes
    owner: str
    """The name of the node that ran it."""
    generation: int


@dataclasses.dataclass(frozen=True)
class Member:
    id: str
    name: str
    url: str
    apps: frozenset[str]


class Runner(Protocol):
    """What the service needs of the node to run guests."""

    def loaded(self, app: str) -> Any | None:
        """The app's loaded version on this node (``apps.LoadedApp``), or None."""

    async def run(self, loaded: Any, inst: Any, op: str, payload: bytes, actor: ActorHost) -> bytes:
        """Run ``op`` on instance ``inst`` of ``loaded``, its ``actor`` namespace bound to
        ``actor``. Raises what ``/call`` raises."""


@dataclasses.dataclass
class Active:
    """An actor this node owns, activated with generation ``gen``."""

    app: str
    key: str
    gen: int
    seq: int
    state: bytes
    alarm_at: int | None
    inst: Any = None
    pool: Any = None
    version: int = 0
    granted: set[str] = dataclasses.field(default_factory=set)
    """The acceptors that granted ``gen`` (the quorum counts them: ``Quorum.valid_for``)."""
    last_call: float = 0.0
    deposed: bool = False
    timer: asyncio.TimerHandle | None = None


class _Slot:
    """One actor's place on this node: its activation, and the lock its calls take in turn
    (``async with slot``). ``busy`` while a call holds the lock or waits for it: a lock
    handed from one call to the next reads unlocked in between, and a slot dropped then
    would leave the next call running an activation no slot holds."""

    __slots__ = ("active", "lock", "users")

    def __init__(self) -> None:
        self.lock = asyncio.Lock()
        self.active: Active | None = None
        self.users = 0

    @property
    def busy(self) -> bool:
        return self.users > 0

    async def __aenter__(self) -> None:
        self.users += 1
        try:
            await self.lock.acquire()
        except BaseException:
            self.users -= 1
            raise

    async def __aexit__(self, *exc: object) -> None:
        self.lock.release()
        self.users -= 1


class Held(Exception):
    """The actor is held by another node's live lease: calls go there."""

    def __init__(self, holder: str) -> None:
        self.holder = holder


class Retry(Exception):
    """Nothing ran; the call may be routed again (after a short wait)."""


class ActorHost:
    """The ``actor`` namespace of one call of one actor."""

    def __init__(self, actors: Actors, act: Active) -> None:
        self._actors = actors
        self._act = act

    async def __call__(self, operation: str, payload: bytes) -> bytes:
        act, actors = self._act, self._actors
        if operation == "key":
            return act.key.encode()
        if operation == "load":
            return act.state
        if operation == "store":
            limit = actors.state_max
            if len(payload) > limit:
                raise HostError(
                    f"actor.store: state of {len(payload)} bytes is over the {limit}-byte"
                    " limit (--actor-state-max)"
                )
            await actors.replicate(act, payload, act.alarm_at)
            return b""
        if operation == "alarm":
            try:
                ms = int(payload.decode("ascii"))
            except (UnicodeDecodeError, ValueError):
                raise HostError("actor.alarm: payload must be milliseconds, ASCII digits") from None
            if ms < 0:
                raise HostError("actor.alarm: milliseconds must not be negative")
            await actors.replicate(act, act.state, int(time.time() * 1000) + ms)
            return b""
        if operation == "cancel":
            if act.alarm_at is not None:
                await actors.replicate(act, act.state, None)
            return b""
        raise HostError(f"unknown operation: actor.{operation}")


class Actors:
    """The actors of one node. ``async with Actors(...)``: heartbeats, passivation and alarms
    run until the block exits; then every actor is passivated and released.

    Args:
        me: this node's id; ``name`` its name.
        store: the acceptor's records (``store.py``).
        members: the cluster's members that have not left, this node included.
        runner: loads instances and runs calls.
        client: sends messages to peers.
        quorum: the quorum guard (``--actor-quorum``).
        idle: seconds without calls before an actor is passivated (``--actor-idle``).
        wait: seconds a call waits for an owner (``--actor-wait``).
        call_limit: seconds a forwarded call may take before the node that has the client
            gives up on it (503; the owner's own limits end it before).
        state_max: bytes of state at most (``--actor-state-max``).
        metrics: the node's metrics (``metrics.Metrics``).
    """

    def __init__(
        self,
        me: str,
        name: str,
        store: ActorStore,
        members: Callable[[], list[Member]],
        runner: Runner,
        client: PeerClient,
        *,
        quorum: bool,
        idle: float,
        wait: float,
        call_limit: float,
        state_max: int,
        metrics: Any,
        running: Callable[[], Iterable[str]],
    ) -> None:
        self.me = me
        self.name = name
        self.store = store
        self._members = members
        self._runner = runner
        self._client = client
        self._running = running
        self.idle = idle
        self.wait = wait
        self._call_limit = call_limit
        self.state_max = state_max
        self._metrics = metrics
        now = time.monotonic()
        self.sessions = Sessions(me, now)
        self.quorum = Quorum(time.time_ns(), guard=quorum)
        self._slots: dict[tuple[str, str], _Slot] = {}
        self._active = 0
        """How many slots have an active actor (the node's member record reads it often)."""
        self._contact: dict[str, float] = {}
        """When each peer was last heard from (monotonic)."""
        self._seen_gen: dict[tuple[str, str], int] = {}
        self._alarm_tasks: set[tuple[str, str]] = set()
        self._fired: dict[tuple[str, str], tuple[int, float]] = {}
        """The alarm each actor was last fired for by this node, and when."""
        self._tasks: set[asyncio.Task[Any]] = set()
        self._loops: list[asyncio.Task[None]] = []
        self._heartbeat_round = asyncio.Event()

    # -- lifecycle ------------------------------------------------------------------------

    async def __aenter__(self) -> Actors:
        self._loops = [
            asyncio.create_task(self._heartbeats(), name="actors:heartbeats"),
            asyncio.create_task(self._housekeeping(), name="actors:housekeeping"),
        ]
        return self

    async def __aexit__(self, *exc: object) -> None:
        releases = []
        for (app, key), slot in list(self._slots.items()):
            if slot.active is not None:
                act = slot.active
                self._drop(slot, act)
                releases.append(self._release(app, key, act.gen))
        if releases:
            with contextlib.suppress(Exception):
                async with asyncio.timeout(1.0):
                    await asyncio.gather(*releases, return_exceptions=True)
        tasks = [*self._loops, *self._tasks]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def _spawn(self, coro: Awaitable[Any], name: str) -> None:
        task = asyncio.ensure_future(coro)
        task.set_name(f"actors:{name}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -- what others see ------------------------------------------------------------------

    def active_count(self) -> int:
        return self._active

    def active_keys(self) -> list[tuple[str, str]]:
        return [k for k, s in self._slots.items() if s.active is not None]

    def has_quorum(self) -> bool:
        return self.quorum.valid(time.monotonic())

    def alive(self, now: float | None = None) -> set[str]:
        """The members heard from within a lease (this node always)."""
        now = time.monotonic() if now is None else now
        return {self.me} | {m for m, t in self._contact.items() if now - t <= LEASE}

    def owner_of(self, app: str, key: str, members: list[Member] | None = None) -> str | None:
        """The rendezvous owner of the actor among the alive members running ``app``
        (``members``: the members, when the caller has them already)."""
        alive = self.alive()
        candidates = [
            m.id
            for m in (self._members() if members is None else members)
            if m.id in alive and (app in m.apps if m.id != self.me else self._runs(app))
        ]
        return core.owner(app, key, candidates)

    def _runs(self, app: str) -> bool:
        return app in set(self._running())

    def _name_of(self, node: str) -> str:
        for m in self._members():
            if m.id == node:
                return m.name
        return node

    # -- calls ----------------------------------------------------------------------------

    async def call(
        self,
        app: str,
        key: str,
        op: str,
        payload: bytes,
        *,
        hops: int = 0,
        alarm: int | None = None,
    ) -> Answer:
        """Run ``op`` on the actor (``app``, ``key``) wherever it lives.

        Raises BadRequest (a bad key), UnknownApp, ActorUnavailable (no owner within
        ``--actor-wait``, or no quorum), Forwarded (the owner's answer), and what ``/call``
        raises.
        """
        if not core.valid_key(key):
            raise BadRequest("actor key must be 1-200 characters of letters, digits and . _ : -")
        started = time.perf_counter()
        deadline = time.monotonic() + self.wait
        delay = 0.02
        forwarded = False
        while True:
            if not self.quorum.valid(time.monotonic()):
                await self._await_quorum(min(deadline, time.monotonic() + LEASE))
                if not self.quorum.valid(time.monotonic()):
                    raise NoQuorum(
                        "no quorum: this node does not see a strict majority of the cluster's"
                        " members alive, so it serves no actor"
                    )
            slot = self._slots.get((app, key))
            target: str | None
            if slot is not None and (slot.active is not None or slot.busy):
                target = self.me
            else:
                target = self.owner_of(app, key)
                if target is None and self._runner.loaded(app) is None and hops == 0:
                    self._check_app(app)
            try:
                if target == self.me:
                    result = await self._run_here(app, key, op, payload, alarm)
                    self._observe(started, forwarded)
                    return result
                if target is not None and hops < MAX_HOPS:
                    forwarded = True
                    result = await self._forward(target, app, key, op, payload, hops, alarm)
                    self._observe(started, forwarded)
                    return result
                raise Retry
            except Held as held:
                if held.holder != self.me and hops < MAX_HOPS:
                    forwarded = True
                    try:
                        result = await self._forward(
                            held.holder, app, key, op, payload, hops, alarm
                        )
                    except Retry:
                        pass
                    else:
                        self._observe(started, forwarded)
                        return result
            except Retry:
                pass
            if hops > 0:
                # A forwarded call that did not run here goes back to the node that has the
                # client. Acceptors that named this node as the holder may hold a grant it no
                # longer uses (a release that did not reach them): let go of it.
                slot = self._slots.get((app, key))
                if slot is None or (slot.active is None and not slot.lock.locked()):
                    up_to = max(
                        self.store.record(app, key).promised, self._seen_gen.get((app, key), 0)
                    )
                    self._seen_gen[(app, key)] = up_to
                    self._spawn(self._release(app, key, up_to), "release")
                raise _RETRY
            if time.monotonic() + delay > deadline:
                raise ActorUnavailable(
                    f"actor {app}/{key} has no owner that can take it within"
                    f" {self.wait:g} s (--actor-wait); try again"
                )
            await asyncio.sleep(delay)
            delay = min(delay * 2, 0.25)

    def _check_app(self, app: str) -> None:
        for m in self._members():
            if app in m.apps:
                return
        raise UnknownApp(app)

    def _observe(self, started: float, forwarded: bool) -> None:
        where = "forwarded" if forwarded else "local"
        self._metrics.actor_call_seconds.labels(where).observe(time.perf_counter() - started)

    async def _await_quorum(self, until: float) -> None:
        while time.monotonic() < until and not self.quorum.valid(time.monotonic()):
            self._heartbeat_round.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(max(0.0, until - time.monotonic())):
                    await self._heartbeat_round.wait()

    async def _forward(
        self,
        target: str,
        app: str,
        key: str,
        op: str,
        payload: bytes,
        hops: int,
        alarm: int | None,
    ) -> Answer:
        member = next((m for m in self._members() if m.id == target), None)
        if member is None or not member.url:
            raise Retry
        self._metrics.actor_forwarded.inc()
        message = {
            "t": "call",
            "app": app,
            "key": key,
            "op": op,
            "payload": payload,
            "hops": hops + 1,
            "alarm": alarm,
        }
        try:
            reply = await self._send_while_alive(member, message)
        except NotSent:
            self._contact.pop(target, None)  # refused at once: it is gone
            raise Retry from None
        except (OSError, TimeoutError, ValueError) as exc:
            raise ActorUnavailable(
                f"the owner of actor {app}/{key} ({self._name_of(target)}) failed during the"
                f" call, which may or may not have run: {exc or type(exc).__name__}"
            ) from None
        if reply.get("retry"):
            raise Retry
        status = int(reply.get("status", 500))
        if status == 200:
            return Answer(
                bytes(reply.get("body", b"")),
                str(reply.get("owner", "")),
                int(reply.get("gen", 0)),
            )
        raise Forwarded(status, str(reply.get("code", "error")), str(reply.get("message", "")))

    async def _send_while_alive(self, member: Member, message: dict[str, Any]) -> dict[str, Any]:
        """``message``'s answer within the forwarded call's limit, given up earlier
        (TimeoutError) once ``member`` has answered no heartbeat for a lease: an owner cut off
        by a partition never answers, and its connection does not fail."""
        started = time.monotonic()
        send = asyncio.ensure_future(
            self._client.send(member.id, member.url, message, limit=self._call_limit)
        )
        try:
            while True:
                done, _ = await asyncio.wait({send}, timeout=core.HEARTBEAT)
                if done:
                    return send.result()
                now = time.monotonic()
                if now - started > LEASE and member.id not in self.alive(now):
                    raise TimeoutError(f"no answer to heartbeats for {LEASE:g} s")
        finally:
            send.cancel()

    async def _run_here(
        self, app: str, key: str, op: str, payload: bytes, alarm: int | None
    ) -> Answer:
        slot = self._slots.get((app, key))
        if slot is None:
            slot = self._slots[(app, key)] = _Slot()
        async with slot:
            if not self.quorum.valid(time.monotonic()):
                raise Retry
            act = slot.active
            if act is not None and not act.deposed and not self._valid_for(act):
                await self._extend(act)
                if not self._valid_for(act):
                    act.deposed = True  # too few of its grantors answer: take it anew
            if act is not None and act.deposed:
                self._drop(slot, act)
                act = None
            if act is None:
                if self.owner_of(app, key) != self.me and slot.active is None:
                    raise Retry  # the owner changed while this call waited
                act = await self._activate(app, key)
                slot.active = act
                self._active += 1
                self._arm_alarm(act)
            if alarm is not None and act.alarm_at != alarm:
                # An alarm someone else ran, or replaced: nothing to do.
                return Answer(b"", self.name, act.gen)
            if alarm is not None and alarm > _now_ms():
                self._arm_alarm(act)  # a timer that fired early: it fires again when due
                return Answer(b"", self.name, act.gen)
            loaded = self._runner.loaded(app)
            if loaded is None:
                self._drop(slot, act)
                self._spawn(self._release(app, key, act.gen), "release")
                raise Retry
            if act.inst is None or act.version != loaded.record.version:
                self._free_instance(act)
                try:
                    act.inst = await loaded.pool.acquire()
                except WasmTrap as exc:
                    raise GuestError(exc.describe("instance failed to start")) from None
                act.pool = loaded.pool
                act.version = loaded.record.version
            act.last_call = time.monotonic()
            try:
                result = await self._runner.run(loaded, act.inst, op, payload, ActorHost(self, act))
            finally:
                act.last_call = time.monotonic()
                if act.inst is not None and getattr(act.inst, "poisoned", False):
                    self._free_instance(act)  # a trap: the next call starts a new instance
                if alarm is not None:
                    self._metrics.actor_alarms.inc()
                    if act.alarm_at == alarm and not act.deposed:
                        with contextlib.suppress(AssemblexError):
                            await self.replicate(act, act.state, None)
                if act.deposed:
                    self._drop(slot, act)
            return Answer(result, self.name, act.gen)

    # -- activation and stores ------------------------------------------------------------

    def _quorum_members(self) -> list[Member]:
        members = self._members()
        if not any(m.id == self.me for m in members):
            members = [Member(self.me, self.name, "", frozenset()), *members]
        return members

    def _needed(self, members: list[Member]) -> int:
        """Answers (this node's included) an activation or a store needs."""
        if self.quorum.guard:
            return core.majority(len(members))
        alive = self.alive()
        return 2 if any(m.id in alive for m in members if m.id != self.me) else 1

    async def _activate(self, app: str, key: str) -> Active:
        """Take the actor with a new generation, holding its newest state. Raises Held,
        Retry."""
        k = (app, key)
        gen = max(self.store.record(app, key).promised, self._seen_gen.get(k, 0)) + 1
        failover = False  # a grant of any attempt took it from a node that had not let go
        for _ in range(8):
            members = self._quorum_members()
            needed = self._needed(members)
            granted: set[str] = set()
            replies = await self._prepare(app, key, gen, members, needed, granted)
            grants = [r for r in replies if r.get("ok")]
            failover = failover or any(r.get("failover") for r in grants)
            if len(grants) >= needed:
                act = await self._activated(app, key, gen, grants, members, needed, failover)
                act.granted = granted  # the same set: grants that come late count too
                return act
            # Not enough: let go of what was granted, now or late, so it blocks nobody.
            self._spawn(self._release(app, key, gen), "release")
            refusals = [r for r in replies if not r.get("ok") and "reason" in r]
            promised = max((int(r.get("promised", 0)) for r in refusals), default=0)
            self._seen_gen[k] = max(self._seen_gen.get(k, 0), promised)
            if any(r["reason"] == "lapsed" for r in refusals):
                self._lapse()
                raise Retry
            holders = sorted(
                {str(r.get("holder") or "") for r in refusals if r["reason"] == "held"}
                - {self.me, ""}
            )
            if holders:
                raise Held(holders[0])
            if any(r["reason"] == "generation" for r in refusals):
                gen = max(gen, promised) + 1
                continue
            raise Retry
        raise Retry

    async def _prepare(
        self,
        app: str,
        key: str,
        gen: int,
        members: list[Member],
        needed: int,
        granted: set[str],
    ) -> list[dict[str, Any]]:
        """A prepare round for ``gen``; each grant, whenever it comes, joins ``granted`` and
        counts as an answer of a heartbeat round sent now (an acceptor grants only to a
        session whose lease goes on)."""
        sent_at = time.monotonic()
        n = len(members)
        session = self.quorum.session

        def on_grant(member: str) -> None:
            granted.add(member)
            if self.quorum.session == session:
                self.quorum.answered(sent_at, member, n)

        message = {
            "t": "prepare",
            "from": self.me,
            "session": session,
            "app": app,
            "key": key,
            "gen": gen,
        }
        return await self._round(members, message, needed, on_grant)

    def _valid_for(self, act: Active) -> bool:
        members = len(self._quorum_members())
        return self.quorum.valid_for(act.granted, members, time.monotonic())

    async def _extend(self, act: Active) -> None:
        """Ask every acceptor for ``act``'s generation again: those that grant it (they held
        it, or never saw a newer one) join the acceptors it counts on."""
        members = self._quorum_members()
        replies = await self._prepare(act.app, act.key, act.gen, members, len(members), act.granted)
        if any(r.get("reason") in ("generation", "lapsed") for r in replies):
            act.deposed = True

    async def _activated(
        self,
        app: str,
        key: str,
        gen: int,
        grants: list[dict[str, Any]],
        members: list[Member],
        needed: int,
        failover: bool,
    ) -> Active:
        states = [_state(r.get("state")) for r in grants]
        best = core.best_state(states)
        act = Active(app, key, gen, 0, best.data if best else b"", best.alarm_at if best else None)
        same = sum(
            1
            for s in states
            if s is not None and best is not None and (s.gen, s.seq) == (best.gen, best.seq)
        )
        if best is not None and same < needed:
            # The newest state is on fewer nodes than a store needs: write it back first.
            await self.replicate(act, act.state, act.alarm_at)
        self._metrics.actor_activations.inc()
        if failover:
            self._metrics.actor_failovers.inc()
        return act

    async def replicate(self, act: Active, data: bytes, alarm_at: int | None) -> None:
        """Make ``data`` and ``alarm_at`` the actor's state, on this node and on as many
        others as a store needs. Raises HostError (deposed, or not acknowledged)."""
        if act.deposed:
            raise HostError("actor: this activation was deposed; its stores are refused")
        # The number is used up before the round: a round cut short (the call cancelled by
        # its client) may still land on acceptors, and the next store must not reuse it.
        seq = act.seq = act.seq + 1
        members = self._quorum_members()
        needed = self._needed(members)
        message = {
            "t": "accept",
            "from": self.me,
            "session": self.quorum.session,
            "app": act.app,
            "key": act.key,
            "gen": act.gen,
            "seq": seq,
            "data": data,
            "alarm_at": alarm_at,
        }
        replies = await self._round(members, message, needed)
        oks = sum(1 for r in replies if r.get("ok"))
        refused = [r for r in replies if not r.get("ok") and r.get("reason") == "generation"]
        # Acknowledged by enough nodes, the state is kept whatever one acceptor refused (a
        # node's prepare that failed left a higher promise there): any activation that
        # could follow reads one of the acceptors that wrote it.
        if refused and oks < needed:
            act.deposed = True
            newer = max(int(r.get("promised", 0)) for r in refused)
            raise HostError(
                f"actor.store: refused, generation {act.gen} of this actor was superseded by"
                f" generation {newer} (another node took it over)"
            )
        if oks < needed:
            act.deposed = True  # the state is on too few nodes to count on: start again
            raise HostError(
                f"actor.store: acknowledged by {oks} of the {needed} nodes needed"
                f" ({len(members)} members); the state may not have been kept"
            )
        act.state = data
        if alarm_at != act.alarm_at:
            act.alarm_at = alarm_at
            self._arm_alarm(act)

    async def _round(
        self,
        members: list[Member],
        message: dict[str, Any],
        needed: int,
        on_ok: Callable[[str], None] | None = None,
    ) -> list[dict[str, Any]]:
        """Send ``message`` to every member (this node's own acceptor directly); answers as
        they come, until ``needed`` are positive, every member answered, or ROUND_TIMEOUT.
        Late answers are kept out of it (the messages still arrive); ``on_ok`` is called
        with the id of each member that answers ``ok``, late or not."""
        replies: list[dict[str, Any]] = []
        done = asyncio.Event()
        pending = len(members)

        async def one(member: Member) -> None:
            nonlocal pending
            try:
                if member.id == self.me:
                    reply = await self.handle(message)
                else:
                    reply = await self._client.send(member.id, member.url, message, limit=2.0)
                    self._contact[member.id] = time.monotonic()
                reply["_from"] = member.id
                replies.append(reply)
                if on_ok is not None and reply.get("ok"):
                    on_ok(member.id)
            except Exception as exc:  # an unreachable peer is one answer fewer
                log.debug("actor message to %s failed: %s", member.name, exc)
            finally:
                pending -= 1
                if pending == 0 or sum(1 for r in replies if r.get("ok")) >= needed:
                    done.set()

        for member in members:
            if member.id == self.me or member.url:
                self._spawn(one(member), "round")
            else:
                pending -= 1
        if pending <= 0:
            done.set()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(ROUND_TIMEOUT):
                await done.wait()
        return list(replies)

    async def _release(self, app: str, key: str, up_to: int) -> None:
        """Let go of this node's generations of the actor up to ``up_to`` on the acceptors."""
        message = {"t": "release", "from": self.me, "app": app, "key": key, "up_to": up_to}

        async def one(member: Member) -> None:
            with contextlib.suppress(Exception):
                if member.id == self.me:
                    await self.handle(message)
                elif member.url:
                    await self._client.send(member.id, member.url, message, limit=2.0)

        await asyncio.gather(*(one(m) for m in self._quorum_members()))

    def _lapse(self) -> None:
        """A session of ours lapsed at an acceptor: every actor here may have been taken."""
        log.warning("actor lease lapsed: passivating %d actors", self.active_count())
        self.quorum.lapse(time.time_ns())
        for slot in self._slots.values():
            if slot.active is not None:
                slot.active.deposed = True
                if not slot.lock.locked():
                    self._drop(slot, slot.active)

    def _drop(self, slot: _Slot, act: Active) -> None:
        """Passivate ``act``: its instance freed, its alarm timer stopped, and its generation
        released at the acceptors (whatever the reason: a holding left behind would name this
        node as the owner to them until its session ends)."""
        self._free_instance(act)
        if act.timer is not None:
            act.timer.cancel()
            act.timer = None
        if slot.active is act:
            slot.active = None
            self._active -= 1
            self._spawn(self._release(act.app, act.key, act.gen), "release")

    def _free_instance(self, act: Active) -> None:
        if act.inst is not None:
            act.pool.discard(act.inst)
            act.inst = None
            act.pool = None

    # -- alarms ---------------------------------------------------------------------------

    def _arm_alarm(self, act: Active) -> None:
        if act.timer is not None:
            act.timer.cancel()
            act.timer = None
        if act.alarm_at is None:
            return
        loop = asyncio.get_running_loop()
        delay = max(0.0, act.alarm_at / 1000 - time.time())
        act.timer = loop.call_later(delay, self._fire, act.app, act.key, act.alarm_at)

    def _fire(self, app: str, key: str, alarm_at: int) -> None:
        k = (app, key)
        if k in self._alarm_tasks:
            # A call for this actor's alarm is on its way (from the scan of due alarms, say,
            # routed before this node took the actor): look again in a second rather than
            # drop this timer, which may be the only one.
            asyncio.get_running_loop().call_later(1.0, self._fire, app, key, alarm_at)
            return
        self._alarm_tasks.add(k)

        async def run() -> None:
            try:
                await self.call(app, key, "alarm", b"", alarm=alarm_at)
            except AssemblexError as exc:
                if exc.status in (GuestError.status, CallTimeout.status):
                    # The guest failed it (here or at the owner): cleared, not tried again.
                    log.warning("alarm of actor %s/%s failed: %s", app, key, exc.message)
                    return
                log.warning("alarm of actor %s/%s: %s (tried again in 1 s)", app, key, exc.message)
                self._fired.pop(k, None)  # the scan of due alarms tries it again
                slot = self._slots.get(k)
                if slot is not None and slot.active is not None:
                    act = slot.active
                    if act.alarm_at == alarm_at:
                        loop = asyncio.get_running_loop()
                        act.timer = loop.call_later(1.0, self._fire, app, key, alarm_at)
            finally:
                self._alarm_tasks.discard(k)

        self._spawn(run(), "alarm")

    def _due_alarms(self) -> None:
        """Fire the due alarms of actors not active here that this node owns (or that are
        overdue: their owner may not know of them)."""
        now = _now_ms()
        mono = time.monotonic()
        for k, (_, when) in list(self._fired.items()):
            if mono - when > 30:
                del self._fired[k]
        for (app, key), record in list(self.store.records.items()):
            due = record.alarm_at
            if due is None or due > now:
                continue
            slot = self._slots.get((app, key))
            if slot is not None and slot.active is not None:
                continue
            if self._fired.get((app, key), (None,))[0] == due:
                continue  # fired within 30 s: its owner ran it, and this record is behind
            if now >= due + ALARM_GRACE_MS or self.owner_of(app, key) == self.me:
                self._fired[(app, key)] = (due, mono)
                self._fire(app, key, due)

    # -- background -----------------------------------------------------------------------

    async def _heartbeats(self) -> None:
        while True:
            sent_at = time.monotonic()
            self.sessions.heartbeat(self.me, self.quorum.session, sent_at)
            members = self._quorum_members()
            self._answered(sent_at, self.me, len(members))
            message = {"t": "hb", "from": self.me, "session": self.quorum.session}
            for member in members:
                if member.id != self.me and member.url:
                    self._spawn(
                        self._heartbeat(member, message, sent_at, len(members)), "heartbeat"
                    )
            await asyncio.sleep(core.HEARTBEAT)

    async def _heartbeat(
        self,
        member: Member,
        message: dict[str, Any],
        sent_at: float,
        members: int,
    ) -> None:
        """One heartbeat of the round sent at ``sent_at``."""
        try:
            reply = await self._client.send(member.id, member.url, message, limit=LEASE)
        except Exception:
            return
        self._contact[member.id] = time.monotonic()
        if message["session"] != self.quorum.session:
            return  # a round of a session that lapsed meanwhile
        if reply.get("ok"):
            self._answered(sent_at, member.id, members)
        else:
            self._lapse()

    def _answered(self, sent_at: float, member: str, members: int) -> None:
        self.quorum.answered(sent_at, member, members)
        if self.quorum.valid(time.monotonic()):
            self._heartbeat_round.set()

    async def _housekeeping(self) -> None:
        """Every second: passivate idle actors and actors this node no longer owns; fire due
        alarms."""
        while True:
            await asyncio.sleep(1.0)
            now = time.monotonic()
            members = self._members()  # once per sweep: reading them is not cheap
            for (app, key), slot in list(self._slots.items()):
                act = slot.active
                if slot.busy:
                    continue
                if act is None:
                    del self._slots[(app, key)]
                    continue
                idle = now - act.last_call > self.idle
                moved = self.owner_of(app, key, members) not in (self.me, None)
                gone = self._runner.loaded(app) is None
                if idle or moved or gone:
                    self._drop(slot, act)
                    del self._slots[(app, key)]
                    self._spawn(self._release(app, key, act.gen), "release")
            self._metrics.actors_active.set(self.active_count())
            self._due_alarms()

    # -- messages from peers --------------------------------------------------------------

    async def handle(self, message: dict[str, Any]) -> dict[str, Any]:
        """Answer one message of a peer (or of this node itself). Raises BadRequest."""
        kind = message.get("t")
        now = time.monotonic()
        if kind == "hb":
            node, session = _text(message, "from"), _int(message, "session")
            self._contact[node] = now
            return {"ok": self.sessions.heartbeat(node, session, now)}
        app, key = _text(message, "app"), _text(message, "key")
        if not core.valid_key(key):
            raise BadRequest("bad actor key")
        if kind == "call":
            return await self._handle_call(message, app, key)
        if kind == "info":
            return self.info_here(app, key)
        node = _text(message, "from")
        record = self.store.record(app, key)
        if kind == "prepare":
            self._contact[node] = now
            decision = core.prepare(
                record, self.sessions, node, _int(message, "session"), _int(message, "gen"), now
            )
            if isinstance(decision, core.Refusal):
                return {
                    "ok": False,
                    "reason": decision.reason,
                    "promised": decision.promised,
                    "holder": decision.holder,
                }
            await self.store.write(app, key, decision.record)
            held = None
            if record.state_gen:
                data = await self.store.state(app, key)
                held = [record.state_gen, record.state_seq, data, record.alarm_at]
            failover = bool(record.holder) and record.holder != node and not record.released
            return {"ok": True, "state": held, "holder": record.holder, "failover": failover}
        if kind == "accept":
            self._contact[node] = now
            data = message.get("data", b"")
            if not isinstance(data, bytes):
                raise BadRequest("accept: data must be bytes")
            alarm_at = None if message.get("alarm_at") is None else _int(message, "alarm_at")
            state = State(_int(message, "gen"), _int(message, "seq"), data, alarm_at)
            accepted = core.accept(record, state)
            if isinstance(accepted, core.Refusal):
                return {"ok": False, "reason": "generation", "promised": accepted.promised}
            if accepted.changed:
                await self.store.write(app, key, accepted.record, data)
            return {"ok": True}
        if kind == "release":
            new = core.release(record, node, _int(message, "up_to"))
            if new is not None:
                await self.store.write(app, key, new)
            return {"ok": True}
        raise BadRequest(f"unknown actor message {kind!r}")

    async def _handle_call(self, message: dict[str, Any], app: str, key: str) -> dict[str, Any]:
        payload = message.get("payload", b"")
        if not isinstance(payload, bytes):
            raise BadRequest("call: payload must be bytes")
        alarm = message.get("alarm")
        try:
            answer = await self.call(
                app,
                key,
                _text(message, "op"),
                payload,
                hops=_int(message, "hops"),
                alarm=None if alarm is None else int(alarm),
            )
        except _RetryError:
            return {"retry": True}
        except AssemblexError as exc:
            return {"status": exc.status, "code": exc.code, "message": exc.message}
        return {"status": 200, "body": answer.body, "owner": answer.owner, "gen": answer.generation}

    def info_here(self, app: str, key: str) -> dict[str, Any]:
        """What this node knows of the actor: ``{owner, generation, active, alarm_at}``."""
        slot = self._slots.get((app, key))
        act = slot.active if slot is not None else None
        if act is not None:
            return {
                "owner": self.name,
                "generation": act.gen,
                "active": True,
                "alarm_at": act.alarm_at,
            }
        record = self.store.record(app, key)
        now = time.monotonic()
        holder = record.holder
        # This node's own sessions are in ``sessions`` too: a holding of one of its sessions
        # that lapsed (the actor was dropped without a release) is not live.
        live = (
            bool(holder)
            and not record.released
            and self.sessions.live(holder, record.holder_session, now)
        )
        owner = holder if live else self.owner_of(app, key)
        return {
            "owner": self._name_of(owner) if owner else None,
            "generation": record.promised,
            "active": False,
            "alarm_at": record.alarm_at,
        }

    async def info(self, app: str, key: str) -> dict[str, Any]:
        """``GET /actors/{app}/{key}``: asked of the node that holds or would own it."""
        if not core.valid_key(key):
            raise BadRequest("actor key must be 1-200 characters of letters, digits and . _ : -")
        if self._runner.loaded(app) is None:
            self._check_app(app)
        slot = self._slots.get((app, key))
        if slot is not None and slot.active is not None:
            return self.info_here(app, key)
        here = self.info_here(app, key)
        target = next(
            (m for m in self._members() if m.name == here["owner"] and m.id != self.me), None
        )
        if target is None or not target.url:
            return here
        try:
            answer = await self._client.send(
                target.id, target.url, {"t": "info", "app": app, "key": key}, limit=2.0
            )
        except Exception:
            return here
        return {k: answer.get(k) for k in ("owner", "generation", "active", "alarm_at")}


class _RetryError(AssemblexError):
    """A forwarded call that did not run here: the node that has the client routes it again."""

    status = 503
    code = "retry"


_RETRY = _RetryError("retry")


def _now_ms() -> int:
    return int(time.time() * 1000)


def _state(raw: Any) -> State | None:
    if not raw:
        return None
    gen, seq, data, alarm_at = raw
    return State(int(gen), int(seq), bytes(data), None if alarm_at is None else int(alarm_at))


def _text(message: dict[str, Any], field: str) -> str:
    value = message.get(field)
    if not isinstance(value, str):
        raise BadRequest(f"actor message: {field} must be a string")
    return value


def _int(message: dict[str, Any], field: str) -> int:
    value = message.get(field)
    if not isinstance(value, int) or isinstance(value, bool):
        raise BadRequest(f"actor message: {field} must be an integer")
    return value
