"""A deterministic discrete-event simulator that runs the real `Overlay` core at paper scale.

Theory of operation
-------------------
Every simulated node is an unmodified `Overlay`. The simulator is its I/O adapter: it delivers
each message after a link latency (the sum of both nodes' access latencies, so a link's
latency is fixed and it stays FIFO like a TCP connection), fires each node's timers at its
`next_deadline()`, and models a crashed node as a connection failure, HyParView's failure
detector: a message sent to it comes back to the sender, one round trip later, as
`on_unreachable` (a refused connection); and with ``detect="reset"`` (the default: a crashed
process) its neighbours hear their connections reset one latency after the crash.

One random generator seeded with ``--seed`` chooses join contacts, victims and broadcast
origins, and seeds every node's own generator; time is simulated and every iterated container
is ordered, so a seed replays a run byte for byte.

The experiment follows the HyParView paper (time unit: one membership cycle = one shuffle
period = 1 simulated second):

1. nodes join one after another, each through a random node already in, over ``join_cycles``;
2. the overlay runs ``stabilise_cycles`` (50) cycles; graph metrics are taken;
3. ``warmup`` broadcasts build the Plumtree and measure its cost on a stable overlay;
4. a fraction of the nodes crashes at once;
5. ``broadcasts`` (100) messages are sent from random live nodes one after another, each run
   to quiescence with membership timers frozen ("no membership cycle in between"): only what
   a send reveals is repaired;
6. on a copy of the overlay taken right after the crash: a probe broadcast, then one
   membership cycle, then a probe, ... until a probe reaches every live node. During a cycle
   each node's keepalive notices its dead neighbours at a random moment (the real adapter's
   keepalive timeout is shorter than a cycle), and shuffles and repairs run as in production.
"""

from __future__ import annotations

import heapq
import pickle
import random
from dataclasses import dataclass, field
from typing import Any

from ._config import HyParViewConfig, PlumtreeConfig
from ._messages import BroadcastReceived, CoreMessage, Gossip, Graft, IHave, Peer, Prune
from ._overlay import Overlay

__all__ = ["SimConfig", "Simulation", "run_experiment"]

_DELIVER, _UNREACHABLE, _TIMER, _JOIN = 0, 1, 2, 3
_INF = float("inf")
_BROADCAST_TYPES = frozenset({Gossip, IHave, Graft, Prune})


@dataclass(frozen=True, slots=True)
class SimConfig:
    """One simulated experiment."""

    nodes: int
    """Number of nodes."""
    fail: float
    """Fraction of nodes that crash at once after stabilisation."""
    seed: int
    """Seed of the whole run."""
    broadcasts: int = 100
    """Broadcasts after the failure, one after another, no membership cycle in between."""
    warmup: int = 10
    """Broadcasts on the stable overlay before the failure (the first one builds the tree)."""
    join_cycles: int = 10
    """Cycles over which the joins are spread."""
    stabilise_cycles: int = 50
    """Cycles run after the last join before anything is measured."""
    max_heal_cycles: int = 30
    """Give up measuring healing after this many cycles (reported as null)."""
    latency: tuple[float, float] = (0.005, 0.045)
    """One-way link latency range, in seconds (a cycle is 1 s)."""
    detect: str = "reset"
    """How a crash is noticed between cycles: ``reset`` (the crashed process's connections
    are reset, so its neighbours notice one latency later, as TCP reports a killed process)
    or ``send`` (only a node that sends to the dead one notices: a silent host crash)."""
    path_sources: int = 200
    """BFS sources sampled for the average shortest path (all nodes when fewer)."""
    hyparview: HyParViewConfig = field(
        default_factory=lambda: HyParViewConfig(shuffle_interval=1.0, repair_backoff_max=8.0)
    )
    """Membership parameters (the paper's sizes; a shuffle per 1 s cycle)."""
    plumtree: PlumtreeConfig = field(
        default_factory=lambda: PlumtreeConfig(graft_timeout=0.2, graft_retry=0.1)
    )
    """Broadcast parameters (graft timers a few link latencies long)."""


class Simulation:
    """The event loop, the network model and the bookkeeping of one run."""

    def __init__(self, config: SimConfig) -> None:
        self.config = config
        self.rng = random.Random(config.seed)
        n = config.nodes
        self.peers = [Peer(f"n{i}", f"sim://{i}") for i in range(n)]
        self.index = {peer: i for i, peer in enumerate(self.peers)}
        self.cores: list[Overlay | None] = [None] * n
        self.alive = [True] * n
        self.now = 0.0
        self.frozen = False
        self.sent: dict[type, int] = {}
        self.copies = 0  # Gossip payloads received (duplicates included)
        self.delivered = 0  # first deliveries (BroadcastReceived events)
        self._heap: list[tuple[float, int, int, int, int, CoreMessage | None]] = []
        self._seq = 0
        self._timer_at = [_INF] * n
        lo, hi = config.latency
        self._access = [self.rng.uniform(lo / 2, hi / 2) for _ in range(n)]

    # --- network model -------------------------------------------------------------------

    def latency(self, src: int, dst: int) -> float:
        """One-way latency of the link src -> dst: both nodes' access latencies, so a link's
        latency is fixed (FIFO, like a TCP connection) and spans `SimConfig.latency`."""
        return self._access[src] + self._access[dst]

    def _push(self, at: float, kind: int, a: int, b: int, msg: CoreMessage | None) -> None:
        self._seq += 1
        heapq.heappush(self._heap, (at, self._seq, kind, a, b, msg))

    def _flush(self, i: int, core: Overlay) -> None:
        """Send core i's outbox, count its deliveries and re-arm its timer."""
        now, alive, index, sent, access = self.now, self.alive, self.index, self.sent, self._access
        heap, push = self._heap, heapq.heappush
        mine = access[i]
        outbox = core._outbox  # the simulator is an in-package driver: skip the copy
        for dst, msg in outbox:
            j = index[dst]
            kind = type(msg)
            sent[kind] = sent.get(kind, 0) + 1
            self._seq += 1
            if alive[j]:
                push(heap, (now + mine + access[j], self._seq, _DELIVER, j, i, msg))
            else:  # a refused or reset connection comes back after a round trip
                push(heap, (now + 2 * (mine + access[j]), self._seq, _UNREACHABLE, i, j, None))
        outbox.clear()
        events = core._events
        if events:
            for event in events:
                if type(event) is BroadcastReceived:
                    self.delivered += 1
            events.clear()
        deadline = core.next_deadline(membership=not self.frozen)
        if deadline is not None:
            deadline = max(deadline, now)
            if deadline < self._timer_at[i]:
                self._timer_at[i] = deadline
                self._push(deadline, _TIMER, i, 0, None)

    def _start(self, i: int, contact: int) -> None:
        cfg = self.config
        rng = random.Random(self.rng.getrandbits(64))
        core = Overlay(self.peers[i], rng, self.now, hyparview=cfg.hyparview, plumtree=cfg.plumtree)
        self.cores[i] = core
        if contact >= 0:
            core.join(self.peers[contact], self.now)
        self._flush(i, core)

    def run(self, until: float = _INF) -> None:
        """Process events up to time `until` (to quiescence by default)."""
        heap, cores, alive, peers = self._heap, self.cores, self.alive, self.peers
        timer_at = self._timer_at
        membership = not self.frozen
        while heap and heap[0][0] <= until:
            at, _, kind, a, b, msg = heapq.heappop(heap)
            if at > self.now:
                self.now = at
            if not alive[a]:
                continue
            if kind == _DELIVER:
                core = cores[a]
                assert core is not None
                assert msg is not None
                if isinstance(msg, Gossip):
                    self.copies += 1
                core.on_message(peers[b], msg, self.now)
            elif kind == _UNREACHABLE:
                core = cores[a]
                assert core is not None
                core.on_unreachable(peers[b], self.now)
            elif kind == _TIMER:
                if at != timer_at[a]:
                    continue
                timer_at[a] = _INF
                core = cores[a]
                assert core is not None
                core.tick(self.now, membership=membership)
            else:
                self._start(a, b)
                continue
            self._flush(a, core)
        if until != _INF:
            self.now = max(self.now, until)

    def freeze(self) -> None:
        """Stop membership timers (their pending firings are dropped) and drain the network."""
        self.frozen = True
        self._heap = [e for e in self._heap if e[2] != _TIMER]
        heapq.heapify(self._heap)
        self._timer_at = [_INF] * self.config.nodes
        for i, core in enumerate(self.cores):
            if core is not None and self.alive[i]:
                self._flush(i, core)
        self.run()

    def thaw(self) -> None:
        """Restart membership timers."""
        self.frozen = False
        for i, core in enumerate(self.cores):
            if core is not None and self.alive[i]:
                self._flush(i, core)

    # --- experiment steps ----------------------------------------------------------------

    def build(self) -> None:
        """Joins spread over `join_cycles`, then `stabilise_cycles` cycles."""
        cfg = self.config
        cycle = cfg.hyparview.shuffle_interval
        spacing = cfg.join_cycles * cycle / cfg.nodes
        for i in range(cfg.nodes):
            contact = self.rng.randrange(i) if i else -1
            self._push(i * spacing, _JOIN, i, contact, None)
        self.run(until=(cfg.join_cycles + cfg.stabilise_cycles) * cycle)
        self.freeze()

    def live(self) -> list[int]:
        """Indices of the live nodes, in order."""
        return [i for i, ok in enumerate(self.alive) if ok]

    def fail(self, fraction: float) -> None:
        """Crash `fraction` of the nodes, chosen at random, at once."""
        count = round(fraction * self.config.nodes)
        for i in self.rng.sample(range(self.config.nodes), count):
            self.alive[i] = False
        if self.config.detect == "reset":
            for i in self.live():
                core = self.cores[i]
                assert core is not None
                for peer in core.active_view():
                    j = self.index[peer]
                    if not self.alive[j]:
                        self._push(self.now + self.latency(j, i), _UNREACHABLE, i, j, None)
            self.run()

    def broadcast(self, origin: int) -> dict[str, float]:
        """One broadcast from `origin`, run to quiescence with membership frozen."""
        assert self.frozen
        before = dict(self.sent)
        self.copies = self.delivered = 0
        core = self.cores[origin]
        assert core is not None
        core.broadcast(b"sim", self.now)
        self._flush(origin, core)
        self.run()
        sent = {t: v - before.get(t, 0) for t, v in self.sent.items()}
        broadcast = sum(v for t, v in sent.items() if t in _BROADCAST_TYPES)
        return {
            "reliability": (self.delivered + 1) / sum(self.alive),
            "messages": float(broadcast),
            "membership_messages": float(sum(sent.values()) - broadcast),
            "redundancy": (self.copies - self.delivered) / max(1, self.delivered),
        }

    def cycle(self) -> None:
        """One membership cycle, keepalives included (see the module doc)."""
        self.thaw()
        cycle = self.config.hyparview.shuffle_interval
        for i in self.live():
            core = self.cores[i]
            assert core is not None
            for peer in core.active_view():
                j = self.index[peer]
                if not self.alive[j]:
                    self._push(self.now + self.rng.random() * cycle, _UNREACHABLE, i, j, None)
        self.run(until=self.now + cycle)
        self.freeze()

    def heal(self) -> tuple[int | None, list[float]]:
        """Cycles until a probe broadcast reaches every live node (None: not within the cap)."""
        probes: list[float] = []
        for rounds in range(self.config.max_heal_cycles + 1):
            if rounds:
                self.cycle()
            reach = self.broadcast(self.rng.choice(self.live()))["reliability"]
            probes.append(reach)
            if reach >= 1.0:
                return rounds, probes
        return None, probes


def _mean(values: list[float]) -> float:
    return sum(values) / len(values) if values else 0.0


def run_experiment(config: SimConfig) -> dict[str, Any]:
    """Run the whole experiment of the module doc and return its figures."""
    from ._graph import graph_metrics

    sim = Simulation(config)
    sim.build()
    figures: dict[str, Any] = {
        "nodes": config.nodes,
        "failed_fraction": config.fail,
        "seed": config.seed,
        "broadcasts": config.broadcasts,
        "active_size": config.hyparview.active_size,
        "passive_size": config.hyparview.passive_size,
    }
    figures.update(graph_metrics(sim))
    stable = [sim.broadcast(sim.rng.randrange(config.nodes)) for _ in range(config.warmup)]
    steady = stable[1:] or stable
    figures["first_broadcast"] = {
        "messages": stable[0]["messages"],
        "payload_redundancy": stable[0]["redundancy"],
    }
    figures["messages_per_broadcast"] = _mean([s["messages"] for s in steady])
    figures["payload_redundancy"] = _mean([s["redundancy"] for s in steady])
    figures["stable_reliability"] = _mean([s["reliability"] for s in stable])

    sim.fail(config.fail)
    figures["live_nodes"] = sum(sim.alive)
    healing: Simulation = pickle.loads(pickle.dumps(sim, pickle.HIGHEST_PROTOCOL))
    after = [sim.broadcast(sim.rng.choice(sim.live())) for _ in range(config.broadcasts)]
    reliabilities = [a["reliability"] for a in after]
    figures["reliability"] = _mean(reliabilities)
    figures["reliability_first"] = reliabilities[0] if reliabilities else 0.0
    figures["reliability_last"] = reliabilities[-1] if reliabilities else 0.0
    figures["reliability_min"] = min(reliabilities, default=0.0)
    figures["messages_after_failure"] = _mean([a["messages"] for a in after])
    figures["repair_messages_after_failure"] = sum(a["membership_messages"] for a in after)
    rounds, probes = healing.heal()
    figures["healing_rounds"] = rounds
    figures["healing_probes"] = probes
    return figures
