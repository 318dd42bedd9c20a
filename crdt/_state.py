"""The state rules of a replica: what it holds, how writes are stamped, how deltas are made.

Theory of operation
-------------------
A replica holds LWW registers (``key -> LWWRegister``) and grow-only counters (``key -> node
-> (count, ts)``); the two are separate namespaces. Every local write is stamped by the hybrid
logical clock (``ts = max(clock + 1, wall_ms << 16)``, one 63-bit integer: milliseconds above,
a logical counter in the low 16 bits), so a node's stamps strictly increase, and a write
stamped after a merge is later than everything the merge brought. ``(node, ts)`` names a write:
its *dot*.

Anti-entropy uses a version vector ``vv``: ``vv[X] = t`` means this replica holds, for every
write that node X stamped at or before ``t``, that write or something that beats it. A digest
is that vector. Given a peer's digest ``D``, ``delta_for`` sends every live entry whose dot is
not covered by ``D`` and, per origin X, the *claim* ``(X, D[X], vv[X])``: "with this delta you
cover X up to ``vv[X]``". A receiver applies a claim ``(X, lo, hi)`` only when its own
``vv[X] >= lo``, so version vectors only ever cover what was received. Pushes of fresh local
writes use the same shape: ``(self, last pushed, now)``.

Why a claim is honest even when some of X's writes were overwritten by another node's: the
last write to a key (the one every replica must end with) is never overwritten anywhere, so
wherever a claim covers its dot, the entry itself went along or was already there. Entries
stamped later than their origin's claim (from a push whose claim did not apply) are kept and
sent like any other. Deltas are cut at ``Limits.chunk_bytes``; a cut delta claims only up to
the first entry it left out, so the next exchange resumes there: a delta costs what changed,
not the size of the store.

To find "X's live entries after ``lo``" without scanning the store, each origin keeps its dots
in a sorted list; an overwritten entry leaves a stale item that is skipped when met and swept
when stale items outnumber live ones.

This module does no I/O and reads no clock: ``now`` is passed in. The replica (``_replica.py``)
adds locking, durability and waiting on top.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterator, Mapping

from ._errors import LocalError
from ._types import MAX_INT, CtrEntry, Delta, GCounter, Limits, LWWRegister, Slot

__all__ = ["State"]

_REG = 0
_CTR = 1
_Item = tuple[int, int, str]  # (ts, kind, key)
_ENTRY_OVERHEAD = 24  # bytes of framing per entry in a delta, rounded up
_SWEEP_MIN = 1024


class _Dots:
    """One origin's entries in timestamp order; items go stale when their entry is replaced."""

    __slots__ = ("items", "stale")

    def __init__(self) -> None:
        self.items: list[_Item] = []
        self.stale = 0

    def add(self, item: _Item) -> None:
        items = self.items
        if not items or item > items[-1]:
            items.append(item)  # the common case: stamps arrive in order
        else:
            bisect.insort(items, item)

    def after(self, lo: int) -> int:
        """Index of the first item stamped after ``lo``."""
        return bisect.bisect_left(self.items, (lo + 1,))


class State:
    """A replica's data, version vector and clock, with the merge and delta rules.

    Args:
        node_id: this replica's node id (the writer of its local writes).
        limits: sizes of deltas it produces and values it accepts.
    """

    def __init__(self, node_id: str, limits: Limits) -> None:
        self.node_id = node_id
        self.limits = limits
        self.clock = 0
        self.regs: dict[str, LWWRegister] = {}
        self.ctrs: dict[str, dict[str, Slot]] = {}
        self.vv: dict[str, int] = {}
        self._dots: dict[str, _Dots] = {}

    # -- reads ---------------------------------------------------------------------------

    def get(self, key: str) -> bytes | None:
        reg = self.regs.get(key)
        return None if reg is None else reg.value

    def value(self, key: str) -> int:
        slots = self.ctrs.get(key)
        return 0 if slots is None else sum(count for count, _ in slots.values())

    def counter(self, key: str) -> GCounter:
        return GCounter(dict(self.ctrs.get(key, {})))

    def keys(self, prefix: str = "") -> list[str]:
        """Registers that hold a value (not a tombstone), sorted."""
        return sorted(
            k for k, r in self.regs.items() if r.value is not None and k.startswith(prefix)
        )

    def counter_keys(self, prefix: str = "") -> list[str]:
        """Counters (any value, 0 included once written) whose key starts with ``prefix``."""
        return sorted(k for k in self.ctrs if k.startswith(prefix))

    def local_version(self) -> int:
        """The stamp of this node's latest write (0 if none)."""
        return self.vv.get(self.node_id, 0)

    def canonical(self) -> tuple[list[tuple[str, LWWRegister]], list[tuple[str, str, Slot]]]:
        """The data alone, in a fixed order: equal iff two replicas have converged."""
        regs = sorted(self.regs.items())
        ctrs = sorted((k, n, s) for k, slots in self.ctrs.items() for n, s in slots.items())
        return regs, ctrs

    # -- local writes ----------------------------------------------------------------------

    def stamp(self, now: float) -> int:
        """A fresh timestamp for a local write at wall time ``now`` (seconds)."""
        wall = min(max(int(now * 1000), 0), MAX_INT >> 16) << 16
        ts = max(self.clock + 1, wall)
        if ts > MAX_INT:
            raise LocalError("the hybrid clock is exhausted (a peer sent a far-future stamp)")
        self.clock = ts
        return ts

    def write(self, key: str, value: bytes | None, now: float) -> Delta:
        """Set (or, with ``None``, delete) a register; returns the record to log."""
        ts = self.stamp(now)
        me = self.node_id
        delta = Delta(ts, ((me, 0, ts),), ((key, LWWRegister(ts, me, value)),))
        self.apply(delta)
        return delta

    def incr(self, key: str, n: int, now: float) -> Delta:
        """Add ``n`` > 0 to this node's slot of a counter; returns the record to log."""
        me = self.node_id
        slots = self.ctrs.get(key)
        count = (slots[me][0] if slots and me in slots else 0) + n
        if count > MAX_INT:
            raise LocalError("counter overflow")
        ts = self.stamp(now)
        delta = Delta(ts, ((me, 0, ts),), (), (CtrEntry(key, me, count, ts),))
        self.apply(delta)
        return delta

    # -- merge -----------------------------------------------------------------------------

    def apply(self, delta: Delta) -> tuple[Delta | None, set[str]]:
        """Merge a (validated) delta.

        Returns:
            The part of it that changed something, with its claims made absolute, as the
            record to log (``None`` if nothing changed), and the keys whose data changed.
        """
        changed: set[str] = set()
        top = delta.clock
        regs: list[tuple[str, LWWRegister]] = []
        for key, reg in delta.regs:
            top = max(top, reg.ts)
            cur = self.regs.get(key)
            if cur is None or reg.wins_over(cur):
                if cur is not None:
                    self._went_stale(cur.node)
                self.regs[key] = reg
                self._dots_of(reg.node).add((reg.ts, _REG, key))
                regs.append((key, reg))
                changed.add(key)
        ctrs: list[CtrEntry] = []
        for entry in delta.ctrs:
            top = max(top, entry.ts)
            slots = self.ctrs.get(entry.key)
            if slots is None:
                slots = self.ctrs[entry.key] = {}
            cur_slot = slots.get(entry.node)
            new: Slot = (entry.total, entry.ts)
            if cur_slot is None or new > cur_slot:
                if cur_slot is not None:
                    self._went_stale(entry.node)
                slots[entry.node] = new
                self._dots_of(entry.node).add((entry.ts, _CTR, entry.key))
                ctrs.append(entry)
                changed.add(entry.key)
        claims: list[tuple[str, int, int]] = []
        for node, lo, hi in delta.claims:
            have = self.vv.get(node, 0)
            if have >= lo and hi > have:
                self.vv[node] = hi
                claims.append((node, 0, hi))
        self.clock = max(self.clock, top, self.vv.get(self.node_id, 0))
        if not (regs or ctrs or claims):
            return None, changed
        return Delta(self.clock, tuple(claims), tuple(regs), tuple(ctrs)), changed

    def _dots_of(self, node: str) -> _Dots:
        dots = self._dots.get(node)
        if dots is None:
            dots = self._dots[node] = _Dots()
        return dots

    def _went_stale(self, node: str) -> None:
        dots = self._dots[node]
        dots.stale += 1
        if dots.stale > _SWEEP_MIN and dots.stale * 2 > len(dots.items):
            dots.items = [item for item in dots.items if self._live(node, item)]
            dots.stale = 0

    def _live(self, node: str, item: _Item) -> bool:
        ts, kind, key = item
        if kind == _REG:
            reg = self.regs.get(key)
            return reg is not None and reg.ts == ts and reg.node == node
        slot = self.ctrs.get(key, {}).get(node)
        return slot is not None and slot[1] == ts

    # -- deltas ----------------------------------------------------------------------------

    def lacks(self, peer_vv: Mapping[str, int]) -> bool:
        """Whether a peer with this version vector holds writes this replica does not."""
        vv = self.vv
        return any(ts > vv.get(node, 0) for node, ts in peer_vv.items())

    def delta_for(self, peer_vv: Mapping[str, int]) -> tuple[Delta | None, bool]:
        """What a peer with version vector ``peer_vv`` lacks, cut at ``chunk_bytes``.

        Returns:
            The delta (``None`` if there is nothing to send) and whether it was cut short
            (another exchange would bring more).
        """
        budget = self.limits.chunk_bytes
        out = _Builder(self, budget)
        claims: list[tuple[str, int, int]] = []
        for node in sorted(self._dots.keys() | self.vv.keys()):
            lo = peer_vv.get(node, 0)
            have = self.vv.get(node, 0)
            cut = out.add_origin(node, lo)
            hi = have if cut is None else min(have, cut - 1)
            if hi > lo:
                claims.append((node, lo, hi))
            if cut is not None:
                return out.delta(self.clock, claims), True
        delta = out.delta(self.clock, claims)
        return (None if delta.is_empty() else delta), False

    def local_since(self, since: int) -> tuple[Delta | None, int]:
        """This node's own writes stamped after ``since``, for an eager push.

        Returns:
            The delta (``None`` if there is none) and the stamp it covers up to.
        """
        me = self.node_id
        have = self.vv.get(me, 0)
        if have <= since:
            return None, since
        out = _Builder(self, self.limits.chunk_bytes)
        cut = out.add_origin(me, since, upto=have)
        upto = have if cut is None else min(have, cut - 1)
        claims = [(me, since, upto)] if upto > since else []
        delta = out.delta(self.clock, claims)
        return (None if delta.is_empty() else delta), upto

    def snapshot(self) -> Iterator[Delta]:
        """The whole state as deltas of about ``chunk_bytes`` each, claims in the last one."""
        budget = self.limits.chunk_bytes
        regs: list[tuple[str, LWWRegister]] = []
        ctrs: list[CtrEntry] = []
        size = 0
        for key, reg in self.regs.items():
            regs.append((key, reg))
            size += _size(key, reg.value)
            if size >= budget:
                yield Delta(self.clock, (), tuple(regs))
                regs, size = [], 0
        for key, slots in self.ctrs.items():
            for node, (count, ts) in slots.items():
                ctrs.append(CtrEntry(key, node, count, ts))
                size += _size(key, None)
                if size >= budget:
                    yield Delta(self.clock, (), tuple(regs), tuple(ctrs))
                    regs, ctrs, size = [], [], 0
        claims = tuple((node, 0, ts) for node, ts in sorted(self.vv.items()))
        yield Delta(self.clock, claims, tuple(regs), tuple(ctrs))


def _size(key: str, value: bytes | None) -> int:
    n = len(key) if key.isascii() else len(key.encode("utf-8"))
    return n + _ENTRY_OVERHEAD + (0 if value is None else len(value))


class _Builder:
    """Collects live entries, origin by origin in stamp order, up to a byte budget."""

    def __init__(self, state: State, budget: int) -> None:
        self.state = state
        self.budget = budget
        self.size = 0
        self.regs: list[tuple[str, LWWRegister]] = []
        self.ctrs: list[CtrEntry] = []

    def add_origin(self, node: str, lo: int, upto: int = MAX_INT) -> int | None:
        """Add ``node``'s live entries stamped in ``(lo, upto]``.

        Returns:
            ``None`` if all fit, else the stamp of the first entry left out.
        """
        state = self.state
        dots = state._dots.get(node)
        if dots is None:
            return None
        items = dots.items
        prev: _Item | None = None
        for i in range(dots.after(lo), len(items)):
            item = items[i]
            ts, kind, key = item
            if ts > upto:
                break
            if item == prev or not state._live(node, item):
                continue
            prev = item
            if kind == _REG:
                reg = state.regs[key]
                cost = _size(key, reg.value)
                if self.size + cost > self.budget and self.size:
                    return ts
                self.regs.append((key, reg))
            else:
                count, _ = state.ctrs[key][node]
                cost = _size(key, None)
                if self.size + cost > self.budget and self.size:
                    return ts
                self.ctrs.append(CtrEntry(key, node, count, ts))
            self.size += cost
        return None

    def delta(self, clock: int, claims: list[tuple[str, int, int]]) -> Delta:
        return Delta(clock, tuple(claims), tuple(self.regs), tuple(self.ctrs))
