"""The node's configuration: one frozen value built by the CLI (or by tests) and read everywhere."""

from __future__ import annotations

import contextlib
import dataclasses
import socket
from pathlib import Path

__all__ = ["MIB", "WILDCARD_HOSTS", "Config", "primary_address"]

MIB = 1024 * 1024

WILDCARD_HOSTS = ("0.0.0.0", "", "::")
"""Listen addresses that mean every interface."""


def primary_address() -> str | None:
    """This machine's primary IPv4 address: the source address of its route to a public
    destination, or None without such a route. Nothing is sent (a UDP socket's ``connect``
    only picks a route); the destination is TEST-NET-1, never a real host."""
    with contextlib.suppress(OSError), socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.connect(("192.0.2.1", 9))
        address = str(s.getsockname()[0])
        if not address.startswith("127."):
            return address
    return None


@dataclasses.dataclass(frozen=True)
class Config:
    """Everything a node is told at start. Defaults are the documented CLI defaults."""

    host: str = "127.0.0.1"
    """Address the HTTP API listens on."""
    port: int = 4000
    """Port of the HTTP API (and, later, of the peer protocol)."""
    name: str | None = None
    """Human name of this node; defaults to ``<hostname>:<port>``."""
    data_dir: Path = Path("data")
    """Where modules, app records, the compiled-module cache and the local store live."""
    advertise: str | None = None
    """URL peers and clients are told to reach this node at; None: made of ``host`` and
    ``port`` (see ``url``)."""
    join: tuple[str, ...] = ()
    """Seed URLs of other nodes to join (cluster issue)."""
    mdns: bool = True
    """Discover peers with zeroconf (cluster issue)."""
    cluster_key: str | None = None
    """Shared secret peers prove to each other (security issue)."""
    accepted_cluster_keys: tuple[str, ...] = ()
    """Other keys peers may prove, while the cluster changes keys (``--accept-cluster-key``)."""
    insecure: bool = False
    """Allow listening beyond loopback without a cluster key (security issue)."""
    tls_cert: Path | None = None
    """PEM certificate (chain) the port is served with over TLS; given with ``tls_key``."""
    tls_key: Path | None = None
    """PEM private key of ``tls_cert``, unencrypted."""
    tls_ca: Path | None = None
    """PEM bundle of the CAs whose certificates this node trusts when it dials peers; None
    trusts the system's store."""
    token: str | None = None
    """Bearer token required for deploy, undeploy and rollback; None leaves them open."""
    call_token: str | None = None
    """Bearer token required for calls; None leaves them open."""
    read_token: str | None = None
    """Bearer token required to read ``/status``, ``/apps`` and ``/metrics`` (the deploy token
    is accepted too); None leaves them open, without peers' ids and addresses."""
    header_timeout: float = 10.0
    """Seconds from the first byte of a request to the end of its headers; 0: no limit."""
    body_timeout: float = 60.0
    """Seconds from a request's headers to the end of its body (a deploy or call); 0: none."""
    max_client_conns: int = 128
    """Open connections per client IP address; past it a new one gets 503. 0: no cap."""
    redis_urls: tuple[tuple[str, str], ...] = ()
    """Redis connections of the ``redis`` namespace as (binding, url); binding "" is the default."""
    pool_size: int = 16
    """Idle warm instances kept per app; more are created on demand and dropped when idle."""
    max_instances: int = 1024
    """Live instances (idle and busy, all apps) on this node. At it, a call that needs a new
    instance frees the least recently used idle one of the node; with none idle it gets 503."""
    idle_timeout: float = 60.0
    """Seconds an instance may stay idle before it is freed; 0 keeps idle instances."""
    call_timeout: float = 10.0
    """Guest execution time per call, in seconds, not counting time waiting on the host (504)."""
    call_wall_timeout: float = 60.0
    """Wall-clock limit per call, host waits included (504)."""
    max_memory_mib: int = 64
    """Linear memory per instance (one memory), in MiB; its tables may hold 1/8 of it more."""
    max_upload_mib: int = 64
    """Largest module accepted by POST /deploy, in MiB (413)."""
    max_payload_mib: int = 16
    """Largest call payload, in MiB (413)."""
    max_apps: int = 1000
    """Apps a deploy may create (cluster-wide, as this node knows them); past it: 400."""
    max_host_calls: int = 100_000
    """Host calls one guest call may make; past it the call fails (a guest flooding the host)."""
    max_call_depth: int = 32
    """How deep guests may call guests through the ``call`` namespace."""
    epoch_tick_ms: float = 2.0
    """Preemption tick: a running guest yields to the scheduler at every tick."""
    cpu_workers: int = 0
    """Threads that run CPU-bound guest slices; 0 means one per core."""
    gc_interval: float = 600.0
    """Seconds between collections of unreferenced module blobs; 0 turns the collector off."""
    gc_grace: float = 3600.0
    """Seconds an unreferenced blob is kept after it was last stored or loaded (a deploy or
    fetch may be writing the record that names it)."""
    max_kv_mib: int = 16
    """Bytes (keys and values) one app may keep in the ``kv`` store, in MiB (host error past it)."""
    max_kv_keys: int = 10_000
    """Keys one app may keep in the ``kv`` store (values and counters; host error past it)."""
    guest_log_rate: int = 100
    """Console lines per second one app may write to the node's log (bursts of 10 times as
    many); the rest are dropped and counted."""
    guest_log_line_bytes: int = 4096
    """Longest guest console line written to the log, in bytes; longer ones are cut."""
    log_format: str = "text"
    """``text`` or ``json`` (one object per line) on stderr."""

    @property
    def node_name(self) -> str:
        if self.name:
            return self.name
        return f"{socket.gethostname()}:{self.port}"

    @property
    def tls(self) -> bool:
        """The node serves TLS (and so dials its peers over TLS only)."""
        return self.tls_cert is not None

    @property
    def url(self) -> str:
        """The URL peers and clients reach this node at: ``advertise``, else made of ``host``;
        a wildcard ``host`` (every interface) stands for this machine's primary address."""
        if self.advertise:
            return self.advertise.rstrip("/")
        host = self.host
        if host in WILDCARD_HOSTS:
            host = primary_address() or "127.0.0.1"
        if ":" in host:
            host = f"[{host}]"
        return f"{'https' if self.tls else 'http'}://{host}:{self.port}"
