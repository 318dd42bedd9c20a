"""A partition in which every node keeps some neighbours heals once the network does.

HyParView drops failed neighbours from both views; in a small cluster the passive view is then
empty, and before the fix neither side ever asked the other again. Remembered contacts (the
join seeds) are now asked when the passive view runs dry, whether or not neighbours remain.
Pure cores, a seeded message pump, no I/O.
"""

from __future__ import annotations

import random

from membership import HyParView, HyParViewConfig, Peer


def test_a_two_three_partition_heals() -> None:
    peers = [Peer(f"n{i}", f"ws://n{i}") for i in range(5)]
    cores = {p: HyParView(p, HyParViewConfig(), random.Random(i)) for i, p in enumerate(peers)}
    cut: set[frozenset[Peer]] = set()

    def pump(now: float) -> None:
        for _ in range(200):
            moved = False
            for src, core in cores.items():
                core.tick(now)
                for dst, msg in core.take_outbox():
                    moved = True
                    if frozenset((src, dst)) in cut:
                        core.on_unreachable(dst, now)
                    else:
                        cores[dst].on_message(src, msg, now)
                core.take_events()
            if not moved:
                return

    def views() -> dict[str, set[str]]:
        return {p.id: {a.id for a in c.active} for p, c in cores.items()}

    now = 0.0
    for p in peers[1:]:
        cores[p].join(peers[0], now)
    for _ in range(30):
        now += 1
        pump(now)
    left, right = peers[:2], peers[2:]
    cut = {frozenset((a, b)) for a in left for b in right}
    for a in left:
        for b in right:
            if b in cores[a].active:
                cores[a].on_unreachable(b, now)
            if a in cores[b].active:
                cores[b].on_unreachable(a, now)
    for _ in range(120):
        now += 1
        pump(now)
    split = views()
    assert all(v <= {"n0", "n1"} for k, v in split.items() if k in ("n0", "n1"))
    assert all(not v & {"n0", "n1"} for k, v in split.items() if k not in ("n0", "n1"))

    cut = set()
    for _ in range(600):
        now += 1
        pump(now)
        healed = views()
        if any(healed[a.id] & {b.id for b in right} for a in left):
            break
    else:
        raise AssertionError(f"the partition never healed: {views()}")
