"""A history of client operations on actors and ``kv``, and the checks run on it.

Used by tests/e2e/test_actors_netns.py and scripts/actor-faults. Every operation is recorded
with the client's monotonic times before sending (``start``) and after the answer (``end``),
the node it went through, the answer's status, and for an actor call the stored and memory
counts of the counter guest (``"<stored> <memory>"``) and the ``Assemblex-Actor-Owner`` /
``Assemblex-Actor-Generation`` headers. An operation is *acknowledged* when it was answered
200; one that got no answer, or a 5xx that may come after the work was done (a failed store,
a timeout), is *in doubt*: it may or may not have happened.

The checks (each returns a list of violations, empty when the history is fine):

* :func:`check_actors` (with the quorum guard): per actor, the acknowledged stored counts are
  distinct; an increment acknowledged before another was sent has the smaller count; counts
  and generations go the same way (a larger count never comes from an older generation); one
  generation is one owner; an answer of an older generation never comes from a call sent
  after an answer of a newer one was acknowledged (the newer generation had begun before the
  older one's call left the client); within one generation the instance is one (stored minus
  memory is constant; optional, see :func:`new_instances`); the final count is at least the
  highest acknowledged one and at most what all the increments sent could make it.
* :func:`check_kv`: every key's final value is the same on every node; a counter ends at least
  at the number of acknowledged ``incr`` and at most at the number sent; a register ends on
  the value of some ``set`` that no acknowledged ``set`` followed (a ``set`` sent after the
  one that wrote the final value was acknowledged would carry a later hybrid logical clock
  timestamp and win: the daemons run on one machine and share its clock).
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import statistics
import threading
from collections import defaultdict
from collections.abc import Iterable
from pathlib import Path
from typing import Any

__all__ = [
    "History",
    "Op",
    "check_actors",
    "check_kv",
    "failovers",
    "new_instances",
    "parse_counter",
]


@dataclasses.dataclass
class Op:
    kind: str
    """``actor`` (an increment), ``kv_incr`` or ``kv_set``."""
    key: str
    node: str
    start: float
    end: float
    status: int | None
    """The HTTP status; None when no answer came (refused, reset, timed out)."""
    code: str = ""
    """The error code of a non-200 JSON answer (``no_quorum``, ``actor_unavailable``...);
    ``refused`` when the connection was refused (nothing was sent), ``no answer`` else."""
    stored: int | None = None
    memory: int | None = None
    owner: str = ""
    gen: int | None = None
    value: str = ""
    """A ``kv_set``'s value, or a ``kv_incr``'s answer."""

    @property
    def ok(self) -> bool:
        return self.status == 200

    @property
    def in_doubt(self) -> bool:
        """It may have happened: no answer, or an error that may come after the work."""
        if self.status is None:
            return self.code != "refused"
        return self.status >= 500 and self.code not in ("no_quorum", "retry")


def parse_counter(body: bytes) -> tuple[int, int]:
    """``b"<stored> <memory>"`` -> (stored, memory)."""
    stored, memory = body.decode().split()
    return int(stored), int(memory)


class History:
    """Operations recorded from many threads; written as JSONL when ``path`` is given."""

    def __init__(self, path: Path | None = None) -> None:
        self.ops: list[Op] = []
        self._lock = threading.Lock()
        self._file = path.open("w", encoding="utf-8") if path is not None else None

    def add(self, op: Op) -> None:
        with self._lock:
            self.ops.append(op)
            if self._file is not None:
                self._file.write(json.dumps(dataclasses.asdict(op)) + "\n")
                self._file.flush()

    def close(self) -> None:
        if self._file is not None:
            self._file.close()

    def of(self, kind: str) -> dict[str, list[Op]]:
        """Key -> its operations of ``kind``, in start order."""
        with self._lock:
            out: dict[str, list[Op]] = defaultdict(list)
            for op in sorted(self.ops, key=lambda o: o.start):
                if op.kind == kind:
                    out[op.key].append(op)
            return out


def check_actors(
    by_key: dict[str, list[Op]], final: dict[str, int], *, instances: bool = True
) -> list[str]:
    """The single-owner checks of one history under the quorum guard (see the module doc).
    ``instances=False`` leaves out "one instance per generation" (see :func:`new_instances`)."""
    problems: list[str] = []
    for key, ops in sorted(by_key.items()):
        acked = [o for o in ops if o.ok]
        counts = [o.stored for o in acked]
        dupes = sorted({c for c in counts if counts.count(c) > 1 and c is not None})
        if dupes:
            problems.append(f"{key}: acknowledged counts seen twice: {dupes[:10]}")
        owners: dict[int | None, set[str]] = defaultdict(set)
        offsets: dict[int | None, set[int]] = defaultdict(set)
        for o in acked:
            owners[o.gen].add(o.owner)
            if o.stored is not None and o.memory is not None:
                offsets[o.gen].add(o.stored - o.memory)
        for gen, names in owners.items():
            if len(names) > 1:
                problems.append(f"{key}: generation {gen} answered by {sorted(names)}")
        for gen, offs in offsets.items():
            if len(offs) > 1 and instances:
                problems.append(
                    f"{key}: generation {gen} ran in more than one instance"
                    f" (stored - memory took the values {sorted(offs)})"
                )
        by_end = sorted(acked, key=lambda o: o.end)
        for a in by_end:
            for b in acked:
                if a is b or a.stored is None or b.stored is None:
                    continue
                if a.end < b.start and a.stored >= b.stored:
                    problems.append(
                        f"{key}: count {a.stored} (gen {a.gen}, {a.owner}) acknowledged at"
                        f" {a.end:.3f}, then a call sent at {b.start:.3f} answered {b.stored}"
                        f" (gen {b.gen}, {b.owner})"
                    )
                if (a.gen or 0) > (b.gen or 0) and a.end < b.start:
                    problems.append(
                        f"{key}: generation {a.gen} ({a.owner}) acknowledged at {a.end:.3f},"
                        f" then a call sent at {b.start:.3f} ran in the older generation"
                        f" {b.gen} ({b.owner})"
                    )
                if a.stored < b.stored and (a.gen or 0) > (b.gen or 0):
                    problems.append(
                        f"{key}: count {b.stored} from generation {b.gen}, after count"
                        f" {a.stored} from the newer generation {a.gen}"
                    )
        if key in final:
            top = max((c for c in counts if c is not None), default=0)
            sent = sum(1 for o in ops if o.ok or o.in_doubt)
            if final[key] < top:
                problems.append(f"{key}: final count {final[key]} < acknowledged {top} (lost)")
            if final[key] > sent:
                problems.append(
                    f"{key}: final count {final[key]} > {sent} increments that may have run"
                )
    return problems


def check_kv(
    incrs: dict[str, list[Op]],
    sets: dict[str, list[Op]],
    finals: dict[str, list[str | None]],
) -> list[str]:
    """``finals``: key -> the value each node answers (None: no value)."""
    problems: list[str] = []
    for key, values in sorted(finals.items()):
        if len(set(values)) != 1:
            problems.append(f"kv {key}: the nodes answer different values {values}")
    for key, ops in sorted(incrs.items()):
        value = finals.get(key, [None])[0]
        final = int(value) if value else 0
        acked = sum(1 for o in ops if o.ok)
        sent = sum(1 for o in ops if o.ok or o.in_doubt)
        if final < acked:
            problems.append(f"kv {key}: final count {final} < {acked} acknowledged incr (lost)")
        if final > sent:
            problems.append(f"kv {key}: final count {final} > {sent} incr that may have run")
    for key, ops in sorted(sets.items()):
        value = finals.get(key, [None])[0]
        acked = [o for o in ops if o.ok]
        if not acked and value is None:
            continue
        writer = next((o for o in ops if o.value == value and (o.ok or o.in_doubt)), None)
        if writer is None:
            problems.append(f"kv {key}: final value {value!r} was written by no set")
            continue
        if writer.ok:
            later = [o for o in acked if o.start > writer.end]
            if later:
                problems.append(
                    f"kv {key}: final value {value!r} (acknowledged at {writer.end:.3f}) but"
                    f" the set of {later[-1].value!r} sent at {later[-1].start:.3f} was"
                    " acknowledged too (lost)"
                )
    return problems


def new_instances(by_key: dict[str, list[Op]]) -> list[str]:
    """The generations that ran in more than one instance (a new instance mid-generation loses
    the memory count: a call that trapped, timed out or was cancelled, e.g. because the client
    or the node that forwarded it went away, leaves its instance poisoned)."""
    found = []
    for key, ops in sorted(by_key.items()):
        offsets: dict[int | None, set[int]] = defaultdict(set)
        for o in ops:
            if o.ok and o.stored is not None and o.memory is not None:
                offsets[o.gen].add(o.stored - o.memory)
        found += [f"{key} gen {g}: {len(v)} instances" for g, v in offsets.items() if len(v) > 1]
    return found


def failovers(by_key: dict[str, list[Op]]) -> list[float]:
    """Seconds from the last acknowledged answer of a generation to the first acknowledged
    answer of the next one, over every actor: how long an actor was out when it moved."""
    gaps: list[float] = []
    for ops in by_key.values():
        acked = sorted((o for o in ops if o.ok), key=lambda o: o.end)
        for a, b in itertools.pairwise(acked):
            if a.gen != b.gen:
                gaps.append(max(0.0, b.end - a.end))
    return gaps


def summary(values: Iterable[float]) -> dict[str, Any]:
    data = sorted(values)
    if not data:
        return {"n": 0}
    return {
        "n": len(data),
        "median": round(statistics.median(data), 3),
        "p90": round(data[int(0.9 * (len(data) - 1))], 3),
        "max": round(data[-1], 3),
    }
