"""The pure rules of actors: placement, leases, and what an acceptor grants (docs/actors.md).

Nothing here does I/O or reads a clock: every function takes the time as an argument, so the
rules replay in tests exactly. The service (``service.py``) feeds them messages and times.

* **Placement.** :func:`owner` is rendezvous hashing: every node computes the same owner of an
  actor from the same candidates, and when a candidate comes or goes only the actors it wins
  or held move.
* **Leases.** Every node sends each member a heartbeat every ``HEARTBEAT`` seconds, naming its
  *session* (a number that grows each time the node starts or loses its quorum). An acceptor
  that answers a heartbeat promises the sender ``LEASE`` seconds from its receipt during which
  it grants none of the sender's actors to another node (:class:`Sessions`). The sender counts
  a heartbeat round as good when a strict majority of members (itself included) answered it,
  and serves an actor until ``LEASE * (1 - DRIFT)`` after such a round was *sent*, counting
  only the acceptors that granted that actor (:class:`Quorum`): it stops before a majority
  may grant the actor away.
  An acceptor that grants one of a node's actors to another node (the holder's lease having
  run out there) marks the holder's session *lapsed*: that session's heartbeats are answered
  ``lapsed`` from then on, so a node never keeps actors it may have lost.
* **Generations.** Activating an actor is a Paxos prepare with a new generation; a store is an
  accept of (generation, sequence number, state, alarm) (:func:`prepare`, :func:`accept`). An
  acceptor refuses a prepare whose actor is held by a live lease of another node, and an
  accept from a generation older than the one it promised: a deposed owner cannot overwrite
  its successor's state.
"""

from __future__ import annotations

import dataclasses
import hashlib
import re
from collections.abc import Collection, Iterable
from typing import Literal

__all__ = [
    "DRIFT",
    "HEARTBEAT",
    "KEY_PATTERN",
    "LEASE",
    "Accepted",
    "Grant",
    "Quorum",
    "Record",
    "Refusal",
    "Sessions",
    "State",
    "accept",
    "best_state",
    "majority",
    "owner",
    "prepare",
    "release",
    "valid_key",
]

LEASE = 2.0
"""Seconds an acceptor holds back a node's actors after each heartbeat it answers."""
HEARTBEAT = 0.5
"""Seconds between two heartbeat rounds of a node (four per lease)."""
DRIFT = 0.1
"""The share of a lease a node gives up for clocks running at different rates: it serves
until ``LEASE * (1 - DRIFT)`` after sending, so rates may differ by up to 10%."""

KEY_PATTERN = re.compile(r"[A-Za-z0-9._:-]{1,200}")
"""What an actor key may be: 1-200 characters of ``[A-Za-z0-9._:-]``."""


def valid_key(key: str) -> bool:
    return KEY_PATTERN.fullmatch(key) is not None


def owner(app: str, key: str, candidates: Iterable[str]) -> str | None:
    """The rendezvous owner of actor (``app``, ``key``) among node ids ``candidates``: the one
    with the highest hash of (node, app, key). None when there are no candidates."""
    best: tuple[bytes, str] | None = None
    for node in candidates:
        digest = hashlib.blake2b(
            b"\0".join((node.encode(), app.encode(), key.encode())), digest_size=8
        ).digest()
        if best is None or (digest, node) > best:
            best = (digest, node)
    return None if best is None else best[1]


def majority(members: int) -> int:
    """The fewest nodes that are a strict majority of ``members``."""
    return members // 2 + 1


# -- leases -------------------------------------------------------------------------------


@dataclasses.dataclass
class _Session:
    session: int
    heard: float
    lapsed: bool = False


class Sessions:
    """An acceptor's leases: which session of each node it last heard, and when.

    Args:
        me: this node's id (its own actors are never held back from itself by a lease).
        started: when this acceptor started. For one ``LEASE`` after, it grants no actor
            that another node held: it may have answered that node's heartbeats before a
            restart, and no longer knows when.
        lease: seconds of a lease.
    """

    def __init__(self, me: str, started: float, lease: float = LEASE) -> None:
        self.me = me
        self.started = started
        self.lease = lease
        self._nodes: dict[str, _Session] = {}

    def heartbeat(self, node: str, session: int, now: float) -> bool:
        """A heartbeat (or any message) of ``node`` in ``session`` arrived at ``now``: whether
        its lease goes on (True), or the session lapsed here (False: the node must start a
        new session, since one of its actors was granted to another node).

        A lease that ran out is renewed, not lapsed: only :meth:`lapse` (an actor of the
        session granted away) ends a session. So an acceptor that was paused, or cut off
        for a while, does not end the sessions of every node it hears again."""
        known = self._nodes.get(node)
        if known is None or session > known.session:
            self._nodes[node] = _Session(session, now)
            return True
        if session < known.session or known.lapsed:
            return False
        known.heard = now
        return True

    def lapse(self, node: str, session: int) -> None:
        """One of ``session``'s actors was granted to another node here (its lease had run
        out): the session is never answered ``ok`` again."""
        known = self._nodes.get(node)
        if known is None or session > known.session:
            self._nodes[node] = _Session(session, float("-inf"), lapsed=True)
        elif session == known.session:
            known.lapsed = True

    def live(self, node: str, session: int, now: float) -> bool:
        """Whether ``node``'s ``session`` holds a lease here at ``now``."""
        known = self._nodes.get(node)
        return (
            known is not None
            and known.session == session
            and not known.lapsed
            and now - known.heard <= self.lease
        )

    def session_of(self, node: str) -> int | None:
        known = self._nodes.get(node)
        return None if known is None else known.session

    def starting(self, now: float) -> bool:
        """Whether this acceptor is in its first lease after starting, when it grants no actor
        that another node held."""
        return now < self.started + self.lease


class Quorum:
    """A node's own side of its leases: its session, and whether it may serve an actor.

    A heartbeat round sent at ``sent_at`` and answered (lease going on) by the set ``ok`` of
    members lets the node serve, until ``sent_at + LEASE * (1 - DRIFT)``:

    * any actor at all (:meth:`valid`, the quorum guard) when ``ok`` is a strict majority;
    * one actor (:meth:`valid_for`) when the members of ``ok`` that granted the actor's
      generation are a strict majority. Those acceptors each still hold the grant (a grant
      is only given away when the holder's lease lapses there, and a lapsed session is never
      answered ``ok`` again), and any majority that grants another node the actor includes
      one of them: none of them grants it while the lease they answered runs.

    Args:
        session: the first session (the caller picks a number above any earlier session of
            this node: the service uses the time in nanoseconds).
        guard: the quorum guard (``--actor-quorum``); without it the node always may serve.
    """

    def __init__(self, session: int, *, guard: bool = True, lease: float = LEASE) -> None:
        self.session = session
        self.guard = guard
        self._lease = lease
        self._rounds: dict[float, set[str]] = {}
        """The members that answered each recent round (by the time it was sent)."""
        self.valid_until = float("-inf")
        """Until when (the node's clock) a majority's answers let it serve actors."""

    def answered(self, sent_at: float, member: str, members: int) -> None:
        """``member`` answered the round sent at ``sent_at`` with its lease going on, out of
        ``members`` in the cluster (this node answers its own rounds too)."""
        for old in [t for t in self._rounds if t < sent_at - self._lease]:
            del self._rounds[old]
        ok = self._rounds.setdefault(sent_at, set())
        ok.add(member)
        if len(ok) >= majority(members):
            self.valid_until = max(self.valid_until, sent_at + self._lease * (1 - DRIFT))

    def valid(self, now: float) -> bool:
        """Whether a majority answered a round recent enough to serve actors at ``now``."""
        return not self.guard or now < self.valid_until

    def valid_for(self, granted: Collection[str], members: int, now: float) -> bool:
        """Whether the node may serve an actor whose generation the acceptors ``granted``
        gave it, at ``now``."""
        if not self.guard:
            return True
        needed = majority(members)
        end = self._lease * (1 - DRIFT)
        return any(
            now < sent_at + end and len(ok.intersection(granted)) >= needed
            for sent_at, ok in self._rounds.items()
        )

    def lapse(self, new_session: int) -> None:
        """An acceptor said this session lapsed: every actor of it is lost; a new session."""
        self.session = max(new_session, self.session + 1)
        self.valid_until = float("-inf")
        self._rounds.clear()


# -- acceptors ----------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Record:
    """What an acceptor holds of one actor, its state bytes aside."""

    promised: int = 0
    """The highest generation promised."""
    holder: str = ""
    """The node that was granted ``promised`` ("" for none)."""
    holder_session: int = 0
    released: bool = False
    """The holder let the actor go (passivated it): another node may take it at once."""
    state_gen: int = 0
    """The generation that wrote the state held (0: no state ever written)."""
    state_seq: int = 0
    """Its sequence number within that generation."""
    alarm_at: int | None = None
    """When the actor's alarm is due, in milliseconds since the epoch; None for no alarm."""


@dataclasses.dataclass(frozen=True)
class State:
    """An actor's replicated value: its state, alarm, and the version that wrote them."""

    gen: int
    seq: int
    data: bytes
    alarm_at: int | None


@dataclasses.dataclass(frozen=True)
class Grant:
    record: Record


@dataclasses.dataclass(frozen=True)
class Refusal:
    reason: Literal["generation", "held", "lapsed", "starting"]
    promised: int
    holder: str = ""


@dataclasses.dataclass(frozen=True)
class Accepted:
    record: Record
    changed: bool
    """Whether the acceptor must write the state (False: it holds this version or a newer)."""


def prepare(
    record: Record, sessions: Sessions, node: str, session: int, gen: int, now: float
) -> Grant | Refusal:
    """``node`` (in ``session``) asks for generation ``gen`` of an actor this acceptor holds
    as ``record``. The rules, in order:

    1. A session that lapsed here is refused (``lapsed``): the node must start a new one.
    2. An actor held by another node (or another session), not released, is refused while
       the holder's lease is live here (``held``, naming the holder), and during the first
       lease after this acceptor started, when it cannot know (``starting``).
    3. A generation below the one promised, or equal to it and asked by another node or
       session, is refused (``generation``). Asked again by its holder, a generation is
       granted again (a holder adds acceptors to those that granted it).
    """
    if not sessions.heartbeat(node, session, now):
        return Refusal("lapsed", record.promised)
    held_by_other = bool(record.holder) and (
        record.holder != node or record.holder_session != session
    )
    if held_by_other and not record.released:
        if sessions.live(record.holder, record.holder_session, now):
            return Refusal("held", record.promised, record.holder)
        if sessions.starting(now):
            return Refusal("starting", record.promised, record.holder)
        if gen > record.promised:
            sessions.lapse(record.holder, record.holder_session)
    if gen < record.promised or (gen == record.promised and held_by_other):
        return Refusal("generation", record.promised)
    return Grant(
        dataclasses.replace(
            record, promised=gen, holder=node, holder_session=session, released=False
        )
    )


def accept(record: Record, state: State) -> Accepted | Refusal:
    """The owner of generation ``state.gen`` writes ``state``. Refused when a newer generation
    was promised; a version not newer than the one held is acknowledged without a write."""
    if state.gen < record.promised:
        return Refusal("generation", record.promised)
    if (state.gen, state.seq) <= (record.state_gen, record.state_seq):
        return Accepted(record, changed=False)
    return Accepted(
        dataclasses.replace(
            record,
            promised=state.gen,
            state_gen=state.gen,
            state_seq=state.seq,
            alarm_at=state.alarm_at,
        ),
        changed=True,
    )


def release(record: Record, node: str, up_to: int) -> Record | None:
    """``node`` let go of every generation of the actor up to ``up_to``. The new record, or
    None when ``node`` does not hold such a generation here (nothing changes).

    Bounded so that a release that arrives late cannot let go of a newer activation of the
    same node: a node activates again only with a generation above any it released.
    """
    if record.holder != node or record.released or record.promised > up_to:
        return None
    return dataclasses.replace(record, released=True)


def best_state(states: Iterable[State | None]) -> State | None:
    """The newest of the states answered by a majority: the one with the highest (generation,
    sequence number). Every acknowledged state is on a majority, so it is among them or
    older than one that is."""
    best: State | None = None
    for s in states:
        if s is not None and (best is None or (s.gen, s.seq) > (best.gen, best.seq)):
            best = s
    return best
