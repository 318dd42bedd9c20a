"""Parameters of the protocol cores and of the I/O adapter, as frozen dataclasses.

Defaults are the HyParView paper's for 10,000 nodes (active 5 = log10(n) + 1, passive 30,
ARWL 6, PRWL 3, shuffle ka 3 / kp 4) and a shuffle period of 10 s, Partisan's. Each config
checks its own invariants on construction, so a core never runs with a view size of 0.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ._codec import DEFAULT_MAX_FRAME
from ._errors import LocalProtocolError

__all__ = ["HyParViewConfig", "NodeConfig", "PlumtreeConfig"]


def _require(ok: bool, what: str) -> None:
    if not ok:
        raise LocalProtocolError(f"bad configuration: {what}")


@dataclass(frozen=True, slots=True)
class HyParViewConfig:
    """Membership parameters (Leitão, Pereira, Rodrigues, DSN 2007)."""

    active_size: int = 5
    """Active view size: symmetric, connected neighbours; the broadcast runs over them."""
    passive_size: int = 30
    """Passive view size: a random sample of other nodes, candidates to replace a neighbour."""
    arwl: int = 6
    """Active random walk length: hops of a FORWARDJOIN and of a SHUFFLE."""
    prwl: int = 3
    """Passive random walk length: the FORWARDJOIN hop that adds the joiner to a passive view."""
    shuffle_active: int = 3
    """ka: how many active-view entries a SHUFFLE carries."""
    shuffle_passive: int = 4
    """kp: how many passive-view entries a SHUFFLE carries."""
    shuffle_interval: float = 10.0
    """Seconds between two shuffles of one node (the paper's membership cycle)."""
    neighbor_timeout: float = 5.0
    """A NEIGHBOR request unanswered this long counts as a failed peer."""
    repair_rejections: int = 3
    """Low-priority rejections a repair round takes before it backs off (full neighbours
    are a healthy overlay, so there is no hurry); unreachable candidates do not count."""
    max_contacts: int = 64
    """Join contacts remembered (seeds and discovered peers), oldest forgotten first."""
    repair_backoff: float = 1.0
    """First wait before retrying to fill the active view (or to rejoin) after all failed."""
    repair_backoff_max: float = 30.0
    """Cap of that wait, which doubles at each fruitless round."""
    lost_size: int = 30
    """Peers that failed, remembered to be probed again (oldest forgotten first); 0: none."""
    probe_interval: float = 30.0
    """Seconds between two probes of a failed peer (each node at a phase of its own). A probe
    that gets through makes a neighbour of it, even in a full view: this is how two parts of a
    cluster that forgot each other during a partition find each other again once it heals."""

    def __post_init__(self) -> None:
        _require(self.active_size >= 1, "active_size >= 1")
        _require(self.passive_size >= 1, "passive_size >= 1")
        _require(0 <= self.prwl <= self.arwl <= 255, "0 <= prwl <= arwl <= 255")
        _require(self.shuffle_active >= 0 and self.shuffle_passive >= 0, "shuffle sizes >= 0")
        _require(self.shuffle_interval > 0, "shuffle_interval > 0")
        _require(self.neighbor_timeout > 0, "neighbor_timeout > 0")
        _require(self.repair_rejections >= 1 and self.max_contacts >= 1, "repair limits >= 1")
        _require(0 < self.repair_backoff <= self.repair_backoff_max, "0 < backoff <= max")
        _require(self.lost_size >= 0 and self.probe_interval > 0, "lost_size >= 0, probe > 0")


@dataclass(frozen=True, slots=True)
class PlumtreeConfig:
    """Broadcast parameters (Leitão, Pereira, Rodrigues, SRDS 2007)."""

    graft_timeout: float = 0.5
    """How long an IHAVE may wait for the eager copy before the node GRAFTs its announcer."""
    graft_retry: float = 0.25
    """Wait before grafting the next announcer when the first one did not deliver."""
    seen_size: int = 10_000
    """Message ids remembered for duplicate suppression (oldest forgotten first)."""
    cache_size: int = 1_000
    """Payloads kept to answer GRAFTs (oldest dropped first)."""
    cache_ttl: float = 60.0
    """Seconds a payload stays in that cache."""
    missing_size: int = 1_000
    """Announced-but-missing message ids tracked at once."""

    def __post_init__(self) -> None:
        _require(self.graft_timeout > 0 and self.graft_retry > 0, "graft timeouts > 0")
        _require(self.seen_size >= 1 and self.cache_size >= 1, "seen/cache sizes >= 1")
        _require(self.cache_ttl > 0, "cache_ttl > 0")
        _require(self.missing_size >= 1, "missing_size >= 1")


@dataclass(frozen=True, slots=True)
class NodeConfig:
    """Everything a `Node` (the asyncio adapter) needs besides its transport."""

    node_id: str
    """This node's name, unique in the cluster."""
    listen: str | None = None
    """Address to accept peers on (``tcp://127.0.0.1:0`` picks a port); None: dial only."""
    advertise: str | None = None
    """Address peers should dial; defaults to the bound listen address."""
    join: tuple[str, ...] = ()
    """Seed addresses to join through, retried with backoff until one answers."""
    cluster_key: bytes | None = None
    """Shared secret for the HMAC challenge; None on every node means an open cluster."""
    accepted_keys: tuple[bytes, ...] = ()
    """Other keys a peer may prove, during a key rotation (needs ``cluster_key``)."""
    mdns: bool = False
    """Advertise and browse ``_assemblex._tcp.local.`` with zeroconf."""
    hyparview: HyParViewConfig = field(default_factory=HyParViewConfig)
    """Membership parameters."""
    plumtree: PlumtreeConfig = field(default_factory=PlumtreeConfig)
    """Broadcast parameters."""
    max_frame: int = DEFAULT_MAX_FRAME
    """Largest frame accepted or sent, in bytes."""
    keepalive_interval: float = 1.0
    """A link that sent nothing for this long sends a PING."""
    keepalive_timeout: float = 5.0
    """A link that received nothing for this long is dead (its peer counts as failed)."""
    idle_timeout: float = 10.0
    """A link to a peer outside the active view is closed after this long without traffic."""
    connect_timeout: float = 5.0
    """Limit on dialling plus the handshake."""
    send_queue: int = 1_024
    """Frames queued for one link; a peer that lets more pile up is dropped as too slow."""
    peer_rate: float = 5_000.0
    """Frames per second read from one link, on average; faster senders are paced (the link
    is not read until the rate allows, so TCP pushes back on the sender). 0: no limit."""
    peer_burst: int = 1_000
    """Frames one link may send at once above `peer_rate` before pacing starts."""
    max_pending_direct: int = 256
    """Direct messages from one peer a subscriber may leave unread; past it the peer's link
    is not read until the subscriber catches up."""
    seed_backoff: float = 0.5
    """First wait before re-dialling a seed that did not answer (doubles, capped)."""
    seed_backoff_max: float = 30.0
    """Cap of the seed re-dial wait."""

    def __post_init__(self) -> None:
        _require(bool(self.node_id), "node_id is not empty")
        _require(self.max_frame >= 1024, "max_frame >= 1024")
        _require(0 < self.keepalive_interval < self.keepalive_timeout, "0 < keepalive < timeout")
        _require(self.idle_timeout > 0 and self.connect_timeout > 0, "timeouts > 0")
        _require(self.send_queue >= 1, "send_queue >= 1")
        _require(not self.accepted_keys or self.cluster_key is not None, "accepted_keys need a key")
        _require(self.peer_rate >= 0 and self.peer_burst >= 1, "peer_rate >= 0, peer_burst >= 1")
        _require(self.max_pending_direct >= 1, "max_pending_direct >= 1")
        _require(0 < self.seed_backoff <= self.seed_backoff_max, "0 < seed backoff <= max")
