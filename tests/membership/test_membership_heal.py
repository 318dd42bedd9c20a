"""Partitions heal once the network does.

Two ways a part of the overlay could forget the other for good, each fixed and tested here,
on pure cores with a seeded message pump and no I/O:

* In a small cluster HyParView drops failed neighbours from both views and the passive view
  runs dry: neither side asks the other again. Remembered contacts (the join seeds) are now
  asked when the passive view runs dry, whether or not neighbours remain.
* In a larger one every node of both parts ends the partition with a full active view of its
  own part, and a node with a full view asks nobody. Failed peers are now remembered and
  probed now and then with a high-priority NEIGHBOR, which a full view makes room for.
"""

from __future__ import annotations

import random

import pytest

from membership import HyParView, HyParViewConfig, Peer


class Net:
    """Cores exchanging messages at once, except across a cut (sends there fail)."""

    def __init__(self, n: int, seed: int, config: HyParViewConfig | None = None) -> None:
        self.peers = [Peer(f"n{i}", f"ws://n{i}") for i in range(n)]
        self.cores = {
            p: HyParView(p, config or HyParViewConfig(), random.Random(seed * 1000 + i))
            for i, p in enumerate(self.peers)
        }
        self.cut: set[frozenset[Peer]] = set()
        self.now = 0.0

    def run(self, rounds: int) -> None:
        """``rounds`` seconds, each delivering messages until none move."""
        for _ in range(rounds):
            self.now += 1
            self.pump()

    def pump(self) -> None:
        now = self.now
        for _ in range(200):
            moved = False
            for src, core in self.cores.items():
                core.tick(now)
                for dst, msg in core.take_outbox():
                    moved = True
                    if frozenset((src, dst)) in self.cut:
                        core.on_unreachable(dst, now)
                    else:
                        self.cores[dst].on_message(src, msg, now)
                core.take_events()
            if not moved:
                return

    def split(self, left: list[Peer]) -> None:
        """Cut every link between ``left`` and the rest; open links fail at both ends."""
        right = [p for p in self.peers if p not in left]
        self.cut = {frozenset((a, b)) for a in left for b in right}
        for a in left:
            for b in right:
                if b in self.cores[a].active:
                    self.cores[a].on_unreachable(b, self.now)
                if a in self.cores[b].active:
                    self.cores[b].on_unreachable(a, self.now)

    def bridged(self, left: list[Peer]) -> bool:
        """Some node of ``left`` has a neighbour outside it."""
        return any(set(self.cores[a].active) - set(left) for a in left)

    def connected(self) -> bool:
        seen, todo = {self.peers[0]}, [self.peers[0]]
        while todo:
            for other in self.cores[todo.pop()].active:
                if other not in seen:
                    seen.add(other)
                    todo.append(other)
        return len(seen) == len(self.peers)

    def symmetric(self) -> bool:
        return all(p in self.cores[q].active for p, c in self.cores.items() for q in c.active)


def test_a_two_three_partition_heals() -> None:
    net = Net(5, seed=0)
    for p in net.peers[1:]:
        net.cores[p].join(net.peers[0], net.now)
    net.run(30)
    left = net.peers[:2]
    net.split(left)
    net.run(120)
    assert not net.bridged(left)
    net.cut = set()
    for _ in range(600):
        net.run(1)
        if net.bridged(left):
            break
    else:
        raise AssertionError("the partition never healed")


def _split_halves(n: int, seed: int, config: HyParViewConfig | None = None) -> Net:
    """A cluster of ``n`` cut in two halves for 120 s, then reconnected."""
    net = Net(n, seed, config)
    for p in net.peers[1:]:
        net.cores[p].join(net.peers[0], net.now)
    net.run(60)
    assert net.connected()
    assert net.symmetric()
    net.split(net.peers[: n // 2])
    net.run(120)
    assert not net.bridged(net.peers[: n // 2])
    net.cut = set()
    return net


@pytest.mark.parametrize(("n", "seed"), [(12, 0), (12, 1), (20, 0), (20, 1), (40, 2)])
def test_halves_with_full_views_find_each_other_again(n: int, seed: int) -> None:
    net = _split_halves(n, seed)
    probe = HyParViewConfig().probe_interval
    for _ in range(int(4 * probe)):
        net.run(1)
        if net.bridged(net.peers[: n // 2]):
            break
    else:
        raise AssertionError(f"the halves never found each other in {4 * probe:g} s")
    net.run(60)  # shuffles and repairs mix the two halves into one overlay
    assert net.connected()
    assert net.symmetric()


def test_without_probes_full_halves_stay_apart() -> None:
    """The control: the same run with no failed peer remembered never heals (every active
    view full, nobody asks anyone), which is what the probes are for."""
    net = _split_halves(12, 0, HyParViewConfig(lost_size=0))
    assert all(len(c.active) == HyParViewConfig().active_size for c in net.cores.values())
    net.run(600)
    assert not net.bridged(net.peers[:6])
