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

    def __init__(
        self, n: int, seed: int, config: HyParViewConfig | None = None, detect: float = 0.0
    ) -> None:
        self.peers = [Peer(f"n{i}", f"ws://n{i}") for i in range(n)]
        self.cores = {
            p: HyParView(p, config or HyParViewConfig(), random.Random(seed * 1000 + i))
            for i, p in enumerate(self.peers)
        }
        self.cut: set[frozenset[Peer]] = set()
        self.now = 0.0
        self.detect = detect
        """Seconds before a failure across the cut is noticed: 0 for at once, or the time a
        real node takes (a dial's or a keepalive's timeout), during which it waits."""
        self._failing: dict[tuple[Peer, Peer], float] = {}

    def run(self, rounds: int) -> None:
        """``rounds`` seconds, each delivering messages until none move."""
        for _ in range(rounds):
            self.now += 1
            self.pump()

    def pump(self) -> None:
        now = self.now
        for (src, dst), at in list(self._failing.items()):
            if at <= now:
                del self._failing[src, dst]
                self.cores[src].on_unreachable(dst, now)
        for _ in range(200):
            moved = False
            for src, core in self.cores.items():
                core.tick(now)
                for dst, msg in core.take_outbox():
                    moved = True
                    if frozenset((src, dst)) not in self.cut:
                        self.cores[dst].on_message(src, msg, now)
                    elif self.detect:
                        self._failing.setdefault((src, dst), now + self.detect)
                    else:
                        core.on_unreachable(dst, now)
                core.take_events()
            if not moved:
                return

    def split(self, left: list[Peer]) -> None:
        """Cut every link between ``left`` and the rest; open links fail at both ends."""
        right = [p for p in self.peers if p not in left]
        self.cut = {frozenset((a, b)) for a in left for b in right}
        for a, b in [
            *((a, b) for a in left for b in right),
            *((b, a) for a in left for b in right),
        ]:
            if b in self.cores[a].active:
                if self.detect:
                    self._failing.setdefault((a, b), self.now + self.detect)
                else:
                    self.cores[a].on_unreachable(b, self.now)

    def bridged(self, left: list[Peer]) -> bool:
        """Some node of ``left`` has a neighbour outside it."""
        return any(set(self.cores[a].active) - set(left) for a in left)

    def connected(self, nodes: list[Peer] | None = None) -> bool:
        """The active views of ``nodes`` (default: all), among themselves, are one graph."""
        nodes = self.peers if nodes is None else nodes
        seen, todo = {nodes[0]}, [nodes[0]]
        while todo:
            for other in self.cores[todo.pop()].active:
                if other in nodes and other not in seen:
                    seen.add(other)
                    todo.append(other)
        return len(seen) == len(nodes)

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


SHAPES = 300


def test_each_side_of_an_early_partition_stays_one_overlay() -> None:
    """Five nodes joining one by one through n0, split {2}|{3} seconds after the last join,
    failures noticed after a real node's 5 s timeouts: every shape keeps each side connected.

    The shapes that failed: a node whose neighbours were all across the cut, and that no node
    of its own side had heard of yet (no shuffle had run; a passive view is filled by walks and
    shuffles only), was left alone, rejoining through its seed across the cut for good. A
    JOIN is now answered with a sample of the contact's views, so whichever of two nodes
    joined later knows the other from its first second (before: 6 of 300 shapes split)."""
    broken = []
    for seed in range(SHAPES):
        net = Net(5, seed, detect=5.0)
        pause = random.Random(seed)
        for p in net.peers[1:]:
            net.cores[p].join(net.peers[0], net.now)
            net.run(pause.randint(0, 3))
        net.run(3)
        left, right = net.peers[:2], net.peers[2:]
        net.split(left)
        net.run(60)
        if not (net.connected(left) and net.connected(right)):
            broken.append(seed)
    assert broken == []


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
