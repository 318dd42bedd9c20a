"""The node's configuration: one frozen value built by the CLI (or by tests) and read everywhere.

Each field an operator sets carries its flag in its metadata (``Flag``: name, help, parse
function, group, environment variable, repeatable or a switch). The ``run`` parser, the config
file's keys and the checks of ``Config.__post_init__`` are all made from it, so a setting is
declared once, and a ``Config`` built in code is checked like one built from flags.
"""

from __future__ import annotations

import contextlib
import dataclasses
import ipaddress
import re
import socket
import tomllib
import urllib.parse
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

from .logs import FORMATS

__all__ = [
    "GROUP_DESCRIPTIONS",
    "MIB",
    "WILDCARD_HOSTS",
    "Config",
    "ConfigError",
    "Flag",
    "config_values",
    "flags",
    "is_loopback",
    "parse_port",
    "primary_address",
    "read_config_file",
]

MIB = 1024 * 1024

WILDCARD_HOSTS = ("0.0.0.0", "", "::")
"""Listen addresses that mean every interface."""

_BINDING_RE = re.compile(r"[A-Za-z0-9_.-]+")


class ConfigError(ValueError):
    """A setting, or a combination of settings, a node cannot run with. The message names the
    flags involved, as an operator typed them."""


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


def is_loopback(host: str) -> bool:
    """``host`` is reached from this machine only (``localhost`` or a loopback address)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


# -- parse functions: text (a flag's argument, a config file's value) to a value -------------
# Each raises ValueError with a message that reads after the flag's name.


def _int_at_least(low: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise ValueError(f"not an integer: {text!r}") from None
        if value < low:
            raise ValueError(f"must be at least {low}: {value}")
        return value

    return parse


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"not a number: {text!r}") from None
    if not value > 0 or value == float("inf"):
        raise ValueError(f"must be a positive number of seconds: {text}")
    return value


def _seconds(text: str) -> float:
    """A number of seconds, 0 included."""
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"not a number: {text!r}") from None
    if not 0 <= value < float("inf"):
        raise ValueError(f"must be 0 or a positive number of seconds: {text}")
    return value


def parse_port(text: str) -> int:
    """A TCP port, 0 (any free one) included."""
    try:
        value = int(text)
    except ValueError:
        raise ValueError(f"not a port number: {text!r}") from None
    if not 0 <= value <= 65535:
        raise ValueError(f"port out of range 0-65535: {value}")
    return value


def _redis_url(text: str) -> tuple[str, str]:
    """``URL`` (the default connection, binding "") or ``NAME=URL`` (a named one)."""
    binding, sep, url = text.partition("=")
    if not sep or "://" in binding or not _BINDING_RE.fullmatch(binding):
        binding, url = "", text
    if "://" not in url:
        raise ValueError(f"expected URL or NAME=URL with a redis:// URL, got {text!r}")
    return binding, url


def _redis_text(value: tuple[str, str]) -> str:
    binding, url = value
    return f"{binding}={url}" if binding else url


def _choice(*choices: str) -> Callable[[str], str]:
    def parse(text: str) -> str:
        if text not in choices:
            raise ValueError(f"invalid choice: {text!r} (choose from {', '.join(choices)})")
        return text

    return parse


# -- flags -----------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Flag:
    """How an operator sets one ``Config`` field: the metadata the ``run`` parser, the config
    file and ``Config``'s checks are made from."""

    name: str
    """The flag, ``--max-kv``; its config-file key is the name without the dashes."""
    help: str
    """Help text; ``%(default)s`` stands for the field's default."""
    value_type: type = str
    """Type of one value (str, int, float, Path, bool, or tuple for ``--redis-url``'s
    (binding, url)); a config file's number is accepted where it is int or float."""
    parse: Callable[[str], Any] | None = None
    """Text to value (None: ``value_type``); raises ValueError with a readable message."""
    metavar: str | None = None
    group: str | None = None
    """Help section of the flag (``network``, ``cluster``, ``TLS``, ``guests``, ``actors``),
    None: none."""
    env: str | None = None
    """Environment variable that gives the value when the flag is not given."""
    repeatable: bool = False
    """The flag may be given many times; the field is the tuple of its values."""
    switch: bool = False
    """The flag takes no value: giving it sets the field to the opposite of its default."""
    default_switch: str | None = None
    """A switch's other form, which sets the field to its default (``--actor-quorum`` beside
    ``--no-actor-quorum``): for scripts that say what they want either way."""
    choices: tuple[str, ...] | None = None
    unparse: Callable[[Any], str] = str
    """Value back to its text, so that ``parse`` checks a value given in code too."""

    @property
    def key(self) -> str:
        """The flag's key in a config file."""
        return self.name.removeprefix("--")

    def text(self, value: Any) -> str:
        """The text ``convert`` makes ``value`` of."""
        return self.unparse(value)

    def convert(self, text: str) -> Any:
        """One value of the flag from its text. Raises ValueError."""
        if self.parse is not None:
            return self.parse(text)
        return self.value_type(text)


GROUP_DESCRIPTIONS = {
    "TLS": "Serve the port over HTTPS and dial peers over TLS only (wss://, https://).",
}
"""Descriptions of the ``run`` help sections that have one."""


def _flag(name: str, help: str, **kw: Any) -> dict[str, Flag]:
    """The metadata of a ``Config`` field set by flag ``name`` (see ``Flag``)."""
    return {"flag": Flag(name, help, **kw)}


def flags() -> Iterator[tuple[dataclasses.Field[Any], Flag]]:
    """The fields of ``Config`` an operator sets, with their flags, in the order of ``--help``."""
    for f in dataclasses.fields(Config):
        flag = f.metadata.get("flag")
        if flag is not None:
            yield f, flag


_NET, _CLUSTER, _TLS, _GUESTS, _ACTORS = "network", "cluster", "TLS", "guests", "actors"


@dataclasses.dataclass(frozen=True)
class Config:
    """Everything a node is told at start. Defaults are the documented CLI defaults.

    The field order is the order of ``assemblexd run --help``. Raises ConfigError when a value
    is out of its range or settings do not go together.
    """

    host: str = dataclasses.field(
        default="127.0.0.1",
        metadata=_flag("--host", "listen address (default: %(default)s)", metavar="H", group=_NET),
    )
    """Address the HTTP API listens on."""
    port: int = dataclasses.field(
        default=4000,
        metadata=_flag(
            "--port",
            "listen port (default: $PORT or %(default)s; 0 picks a free one)",
            value_type=int,
            parse=parse_port,
            metavar="P",
            group=_NET,
            env="PORT",
        ),
    )
    """Port of the HTTP API (and, later, of the peer protocol)."""
    advertise: str | None = dataclasses.field(
        default=None,
        metadata=_flag(
            "--advertise",
            "URL peers reach this node at (default: made of --host and the port; with"
            " --host 0.0.0.0, this machine's primary address)",
            metavar="URL",
            group=_NET,
        ),
    )
    """URL peers and clients are told to reach this node at; None: made of ``host`` and
    ``port`` (see ``url``)."""
    name: str | None = dataclasses.field(
        default=None,
        metadata=_flag(
            "--name", "name of this node (default: <hostname>:<port>)", metavar="N", group=_NET
        ),
    )
    """Human name of this node; defaults to ``<hostname>:<port>``."""
    data_dir: Path = dataclasses.field(
        default=Path("data"),
        metadata=_flag(
            "--data-dir",
            "modules, app records and local state (default: %(default)s)",
            value_type=Path,
            metavar="D",
            group=_NET,
        ),
    )
    """Where modules, app records, the compiled-module cache and the local store live."""
    token: str | None = dataclasses.field(
        default=None,
        metadata=_flag(
            "--token",
            "bearer token required to deploy, undeploy and roll back",
            metavar="T",
            group=_NET,
        ),
    )
    """Bearer token required for deploy, undeploy and rollback; None leaves them open."""
    call_token: str | None = dataclasses.field(
        default=None,
        metadata=_flag(
            "--call-token",
            "bearer token required to call apps (default: calls are open)",
            metavar="T",
            group=_NET,
        ),
    )
    """Bearer token required for calls; None leaves them open."""
    read_token: str | None = dataclasses.field(
        default=None,
        metadata=_flag(
            "--read-token",
            "bearer token required to read /status, /apps and /metrics (the --token is"
            " accepted too; default: open, and /status shows no peer ids or addresses)",
            metavar="T",
            group=_NET,
        ),
    )
    """Bearer token required to read ``/status``, ``/apps`` and ``/metrics`` (the deploy token
    is accepted too); None leaves them open, without peers' ids and addresses."""
    header_timeout: float = dataclasses.field(
        default=10.0,
        metadata=_flag(
            "--header-timeout",
            "seconds from a request's first byte to the end of its headers, else the"
            " connection is closed; 0: no limit (default: %(default)s)",
            value_type=float,
            parse=_seconds,
            metavar="S",
            group=_NET,
        ),
    )
    """Seconds from the first byte of a request to the end of its headers; 0: no limit."""
    body_timeout: float = dataclasses.field(
        default=60.0,
        metadata=_flag(
            "--body-timeout",
            "seconds from a request's headers to the end of its body (deploys, calls), else"
            " 408; 0: no limit (default: %(default)s)",
            value_type=float,
            parse=_seconds,
            metavar="S",
            group=_NET,
        ),
    )
    """Seconds from a request's headers to the end of its body (a deploy or call); 0: none."""
    max_client_conns: int = dataclasses.field(
        default=128,
        metadata=_flag(
            "--max-client-conns",
            "open connections per client IP address; past it a new one gets 503; 0: no"
            " cap (default: %(default)s)",
            value_type=int,
            parse=_int_at_least(0),
            metavar="N",
            group=_NET,
        ),
    )
    """Open connections per client IP address; past it a new one gets 503. 0: no cap."""
    join: tuple[str, ...] = dataclasses.field(
        default=(),
        metadata=_flag(
            "--join",
            "URL of a node to join through, https:// with --tls-cert (repeatable)",
            metavar="URL",
            group=_CLUSTER,
            repeatable=True,
        ),
    )
    """Seed URLs of other nodes to join."""
    mdns: bool = dataclasses.field(
        default=True,
        metadata=_flag(
            "--no-mdns",
            "do not discover peers with zeroconf",
            value_type=bool,
            group=_CLUSTER,
            switch=True,
        ),
    )
    """Discover peers with zeroconf."""
    cluster_key: str | None = dataclasses.field(
        default=None,
        metadata=_flag(
            "--cluster-key",
            "shared secret every peer must prove (membership links and module fetches)",
            metavar="K",
            group=_CLUSTER,
        ),
    )
    """Shared secret peers prove to each other."""
    accepted_cluster_keys: tuple[str, ...] = dataclasses.field(
        default=(),
        metadata=_flag(
            "--accept-cluster-key",
            "also accept peers that prove K, to change the cluster key one node at a time"
            " (repeatable; see docs/operations.md)",
            metavar="K",
            group=_CLUSTER,
            repeatable=True,
        ),
    )
    """Other keys peers may prove, while the cluster changes keys (``--accept-cluster-key``)."""
    insecure: bool = dataclasses.field(
        default=False,
        metadata=_flag(
            "--insecure",
            "allow listening beyond loopback without a cluster key",
            value_type=bool,
            group=_CLUSTER,
            switch=True,
        ),
    )
    """Allow listening beyond loopback without a cluster key."""
    tls_cert: Path | None = dataclasses.field(
        default=None,
        metadata=_flag(
            "--tls-cert",
            "PEM certificate (chain) of this node; it must name the host peers dial",
            value_type=Path,
            metavar="FILE",
            group=_TLS,
        ),
    )
    """PEM certificate (chain) the port is served with over TLS; given with ``tls_key``."""
    tls_key: Path | None = dataclasses.field(
        default=None,
        metadata=_flag(
            "--tls-key", "unencrypted PEM key of it", value_type=Path, metavar="FILE", group=_TLS
        ),
    )
    """PEM private key of ``tls_cert``, unencrypted."""
    tls_ca: Path | None = dataclasses.field(
        default=None,
        metadata=_flag(
            "--tls-ca",
            "PEM bundle of the CAs whose certificates peers must have (a private cluster CA;"
            " default: the system's trust store)",
            value_type=Path,
            metavar="FILE",
            group=_TLS,
        ),
    )
    """PEM bundle of the CAs whose certificates this node trusts when it dials peers; None
    trusts the system's store."""
    redis_urls: tuple[tuple[str, str], ...] = dataclasses.field(
        default=(),
        metadata=_flag(
            "--redis-url",
            "Redis for the 'redis' host namespace: URL is the default connection, NAME=URL a"
            " named one guests select with their binding (repeatable)",
            value_type=tuple,
            parse=_redis_url,
            unparse=_redis_text,
            metavar="[NAME=]URL",
            group=_GUESTS,
            repeatable=True,
        ),
    )
    """Redis connections of the ``redis`` namespace as (binding, url); binding "" is the default."""
    pool_size: int = dataclasses.field(
        default=16,
        metadata=_flag(
            "--pool-size",
            "idle warm instances kept per app (default: %(default)s)",
            value_type=int,
            parse=_int_at_least(0),
            metavar="N",
            group=_GUESTS,
        ),
    )
    """Idle warm instances kept per app; more are created on demand and dropped when idle."""
    max_instances: int = dataclasses.field(
        default=1024,
        metadata=_flag(
            "--max-instances",
            "live instances on this node; at it the least recently used idle one is freed,"
            " and with none idle calls get 503 (default: %(default)s)",
            value_type=int,
            parse=_int_at_least(1),
            metavar="N",
            group=_GUESTS,
        ),
    )
    """Live instances (idle and busy, all apps) on this node. At it, a call that needs a new
    instance frees the least recently used idle one of the node; with none idle it gets 503."""
    idle_timeout: float = dataclasses.field(
        default=60.0,
        metadata=_flag(
            "--idle-timeout",
            "seconds an instance may stay idle before it is freed; 0 keeps them"
            " (default: %(default)s)",
            value_type=float,
            parse=_seconds,
            metavar="S",
            group=_GUESTS,
        ),
    )
    """Seconds an instance may stay idle before it is freed; 0 keeps idle instances."""
    call_timeout: float = dataclasses.field(
        default=10.0,
        metadata=_flag(
            "--call-timeout",
            "guest execution seconds per call, host waits excluded (default: %(default)s)",
            value_type=float,
            parse=_positive_float,
            metavar="S",
            group=_GUESTS,
        ),
    )
    """Guest execution time per call, in seconds, not counting time waiting on the host (504)."""
    call_wall_timeout: float = dataclasses.field(
        default=60.0,
        metadata=_flag(
            "--call-wall-timeout",
            "wall-clock seconds per call, host waits included (default: %(default)s)",
            value_type=float,
            parse=_positive_float,
            metavar="S",
            group=_GUESTS,
        ),
    )
    """Wall-clock limit per call, host waits included (504)."""
    max_memory_mib: int = dataclasses.field(
        default=64,
        metadata=_flag(
            "--max-memory",
            "linear memory per instance, MiB; its tables get 1/8 more (default: %(default)s)",
            value_type=int,
            parse=_int_at_least(1),
            metavar="MIB",
            group=_GUESTS,
        ),
    )
    """Linear memory per instance (one memory), in MiB; its tables may hold 1/8 of it more."""
    max_upload_mib: int = dataclasses.field(
        default=64,
        metadata=_flag(
            "--max-upload",
            "largest module POST /deploy accepts, MiB (default: %(default)s)",
            value_type=int,
            parse=_int_at_least(1),
            metavar="MIB",
            group=_GUESTS,
        ),
    )
    """Largest module accepted by POST /deploy, in MiB (413)."""
    max_payload_mib: int = dataclasses.field(
        default=16,
        metadata=_flag(
            "--max-payload",
            "largest call payload, MiB (default: %(default)s)",
            value_type=int,
            parse=_int_at_least(1),
            metavar="MIB",
            group=_GUESTS,
        ),
    )
    """Largest call payload, in MiB (413)."""
    max_kv_mib: int = dataclasses.field(
        default=16,
        metadata=_flag(
            "--max-kv",
            "bytes (keys and values) one app may keep in the kv store, MiB (default: %(default)s)",
            value_type=int,
            parse=_int_at_least(1),
            metavar="MIB",
            group=_GUESTS,
        ),
    )
    """Bytes (keys and values) one app may keep in the ``kv`` store, in MiB (host error past it)."""
    max_kv_keys: int = dataclasses.field(
        default=10_000,
        metadata=_flag(
            "--max-kv-keys",
            "keys one app may keep in the kv store (default: %(default)s)",
            value_type=int,
            parse=_int_at_least(1),
            metavar="N",
            group=_GUESTS,
        ),
    )
    """Keys one app may keep in the ``kv`` store (values and counters; host error past it)."""
    actor_idle: float = dataclasses.field(
        default=300.0,
        metadata=_flag(
            "--actor-idle",
            "seconds without calls after which an actor's instance is passivated"
            " (default: %(default)s)",
            value_type=float,
            parse=_positive_float,
            metavar="S",
            group=_ACTORS,
        ),
    )
    """Seconds without calls after which an actor's live instance is freed (its state stays)."""
    actor_wait: float = dataclasses.field(
        default=10.0,
        metadata=_flag(
            "--actor-wait",
            "seconds an actor call waits for an owner that can take it, then 503"
            " (default: %(default)s)",
            value_type=float,
            parse=_positive_float,
            metavar="S",
            group=_ACTORS,
        ),
    )
    """Seconds an actor call waits for an owner (failover, a moving actor) before its 503."""
    actor_state_max: int = dataclasses.field(
        default=1024 * 1024,
        metadata=_flag(
            "--actor-state-max",
            "bytes of state one actor may store (default: %(default)s)",
            value_type=int,
            parse=_int_at_least(0),
            metavar="BYTES",
            group=_ACTORS,
        ),
    )
    """Bytes of state one actor may store (``actor.store`` fails past it)."""
    actor_quorum: bool = dataclasses.field(
        default=True,
        metadata=_flag(
            "--no-actor-quorum",
            "serve actors without seeing a majority of the cluster: availability over"
            " a single owner (docs/actors.md)",
            value_type=bool,
            group=_ACTORS,
            switch=True,
            default_switch="--actor-quorum",
        ),
    )
    """The quorum guard: actors run only on a node that sees a strict majority of members."""
    guest_log_rate: int = dataclasses.field(
        default=100,
        metadata=_flag(
            "--guest-log-rate",
            "console lines per second one app may log, bursts of 10 times as many; the rest"
            " are dropped and counted (default: %(default)s)",
            value_type=int,
            parse=_int_at_least(1),
            metavar="N",
            group=_GUESTS,
        ),
    )
    """Console lines per second one app may write to the node's log (bursts of 10 times as
    many); the rest are dropped and counted."""
    max_apps: int = dataclasses.field(
        default=1000,
        metadata=_flag(
            "--max-apps",
            "apps a deploy may create in the cluster (default: %(default)s)",
            value_type=int,
            parse=_int_at_least(1),
            metavar="N",
        ),
    )
    """Apps a deploy may create (cluster-wide, as this node knows them); past it: 400."""
    gc_interval: float = dataclasses.field(
        default=600.0,
        metadata=_flag(
            "--gc-interval",
            "seconds between collections of module blobs no app record references; 0 turns"
            " the collector off (default: %(default)s)",
            value_type=float,
            parse=_seconds,
            metavar="S",
        ),
    )
    """Seconds between collections of unreferenced module blobs; 0 turns the collector off."""
    gc_grace: float = dataclasses.field(
        default=3600.0,
        metadata=_flag(
            "--gc-grace",
            "seconds an unreferenced blob is kept after it was last stored or loaded"
            " (default: %(default)s)",
            value_type=float,
            parse=_seconds,
            metavar="S",
        ),
    )
    """Seconds an unreferenced blob is kept after it was last stored or loaded (a deploy or
    fetch may be writing the record that names it)."""
    log_format: str = dataclasses.field(
        default="text",
        metadata=_flag(
            "--log-format",
            "log lines on stderr as text or JSON objects (default: %(default)s)",
            parse=_choice(*FORMATS),
            choices=FORMATS,
        ),
    )
    """``text`` or ``json`` (one object per line) on stderr."""

    # -- set in code only (tests, benchmarks), no flag ------------------------------------------
    max_host_calls: int = 100_000
    """Host calls one guest call may make; past it the call fails (a guest flooding the host)."""
    max_call_depth: int = 32
    """How deep guests may call guests through the ``call`` namespace."""
    epoch_tick_ms: float = 2.0
    """Preemption tick: a running guest yields to the scheduler at every tick."""
    cpu_workers: int = 0
    """Threads that run CPU-bound guest slices; 0 means one per core."""
    guest_log_line_bytes: int = 4096
    """Longest guest console line written to the log, in bytes; longer ones are cut."""
    wildcard_address: str | None = None
    """The address a wildcard ``host`` stands for in ``url``: this machine's primary address,
    found at start-up by ``with_primary_address`` (None: 127.0.0.1)."""

    def __post_init__(self) -> None:
        for f, flag in flags():
            self._check_value(f, flag)
        for name, low in (
            ("max_host_calls", 1),
            ("max_call_depth", 1),
            ("cpu_workers", 0),
            ("guest_log_line_bytes", 1),
        ):
            value = getattr(self, name)
            if not _is_int(value) or value < low:
                raise ConfigError(f"{name} must be an integer of at least {low}: {value!r}")
        if not _is_number(self.epoch_tick_ms) or not 0 < self.epoch_tick_ms < float("inf"):
            raise ConfigError(f"epoch_tick_ms must be a positive number: {self.epoch_tick_ms!r}")
        self._check_combinations()

    def _check_value(self, f: dataclasses.Field[Any], flag: Flag) -> None:
        """A flag's value is of its type and passes its parse function's range checks (run
        again on the value's text, so that the checks are written once)."""
        value = getattr(self, f.name)
        if flag.switch or (flag.parse is None and value is None):
            return
        values = value if flag.repeatable else (value,)
        if flag.repeatable and not isinstance(value, tuple):
            raise ConfigError(f"{flag.name}: expected a tuple, got {value!r}")
        for one in values:
            if flag.value_type is int:
                ok = _is_int(one)
            elif flag.value_type is float:
                ok = _is_number(one)
            elif flag.value_type is tuple:
                ok = (
                    isinstance(one, tuple)
                    and len(one) == 2
                    and all(isinstance(x, str) for x in one)
                )
            else:
                ok = isinstance(one, flag.value_type)
            if not ok:
                raise ConfigError(f"{flag.name}: expected {flag.value_type.__name__}, got {one!r}")
            if flag.parse is not None:
                try:
                    flag.parse(flag.text(one))
                except ValueError as e:
                    raise ConfigError(f"{flag.name}: {e}") from None

    def _check_combinations(self) -> None:
        """The checks of settings that depend on one another, with the CLI's messages."""
        bindings = [b for b, _ in self.redis_urls]
        duplicates = sorted({b for b in bindings if bindings.count(b) > 1})
        if duplicates:
            shown = ", ".join(repr(b) if b else "the default" for b in duplicates)
            raise ConfigError(f"--redis-url given twice for {shown}")
        if not self.cluster_key and not self.insecure and not is_loopback(self.host):
            raise ConfigError(
                f"listening on {self.host} reaches beyond this machine: give --cluster-key K so"
                " that only nodes that know it can join, or --insecure to run an open cluster"
            )
        if self.accepted_cluster_keys and not self.cluster_key:
            raise ConfigError("--accept-cluster-key needs --cluster-key, the key this node proves")
        if self.tls_cert is not None and self.tls_key is None:
            raise ConfigError("--tls-cert needs --tls-key, the private key of the certificate")
        if self.tls_key is not None and self.tls_cert is None:
            raise ConfigError("--tls-key needs --tls-cert, the certificate of the key")
        if self.tls_ca is not None and not self.tls:
            raise ConfigError(
                "--tls-ca is for a node that serves TLS: give --tls-cert and --tls-key"
            )
        for url in self.join:
            if self.tls and not url.startswith(("https://", "wss://")):
                raise ConfigError(
                    f"--join {url}: a node that serves TLS joins through https:// URLs"
                )
            if not self.tls and url.startswith(("https://", "wss://")):
                raise ConfigError(
                    f"--join {url}: joining a TLS cluster needs --tls-cert and --tls-key"
                    " (a cluster is all TLS or all plain)"
                )
        if self.advertise is not None:
            self._check_advertise(self.advertise)

    def _check_advertise(self, url: str) -> None:
        scheme = "https" if self.tls else "http"
        parts = urllib.parse.urlsplit(url)
        try:
            port = parts.port
        except ValueError:
            port = None
        if (
            parts.scheme != scheme
            or not parts.hostname
            or port is None
            or parts.path not in ("", "/")
        ):
            raise ConfigError(
                f"--advertise {url}: give {scheme}://HOST:PORT, the address peers reach this"
                " node at"
            )

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
        a wildcard ``host`` (every interface) stands for ``wildcard_address`` (see
        ``with_primary_address``). No I/O."""
        if self.advertise:
            return self.advertise.rstrip("/")
        host = self.host
        if host in WILDCARD_HOSTS:
            host = self.wildcard_address or "127.0.0.1"
        if ":" in host:
            host = f"[{host}]"
        return f"{'https' if self.tls else 'http'}://{host}:{self.port}"

    def with_primary_address(self) -> Config:
        """This config with ``wildcard_address`` found, when ``url`` needs it (a wildcard
        ``host``, no ``advertise``): this machine's primary address, else 127.0.0.1. Opens a
        UDP socket (``primary_address``); called once at start-up."""
        if self.advertise or self.host not in WILDCARD_HOSTS or self.wildcard_address:
            return self
        return dataclasses.replace(self, wildcard_address=primary_address() or "127.0.0.1")


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


# -- the config file -------------------------------------------------------------------------


def read_config_file(path: Path) -> dict[str, Any]:
    """The ``Config`` field values a TOML file sets, checked like flags.

    Keys are the flag names of ``assemblexd run`` without the leading dashes
    (``cluster-key = "k"``, ``join = ["http://..."]``, ``no-mdns = true``). Raises ConfigError
    naming the file (and the key) on an unreadable file, bad TOML, unknown keys or bad values.
    """
    try:
        with path.open("rb") as fp:
            doc = tomllib.load(fp)
    except OSError as e:
        raise ConfigError(f"--config {path}: {e.strerror or e}") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"--config {path}: not valid TOML: {e}") from None
    return config_values(doc, source=f"--config {path}")


def config_values(doc: Mapping[str, Any], *, source: str) -> dict[str, Any]:
    """The field values of a parsed config file ``doc`` (see ``read_config_file``)."""
    by_key = {flag.key: (f, flag) for f, flag in flags()}
    unknown = sorted(k for k in doc if k not in by_key)
    if unknown:
        raise ConfigError(
            f"{source}: unknown keys: {', '.join(unknown)} (the keys are the flags of"
            " 'assemblexd run' without the leading --)"
        )
    values: dict[str, Any] = {}
    for key, raw in doc.items():
        f, flag = by_key[key]
        try:
            values[f.name] = _file_value(f, flag, raw)
        except ValueError as e:
            raise ConfigError(f"{source}: {key}: {e}") from None
    return values


def _file_value(f: dataclasses.Field[Any], flag: Flag, raw: object) -> Any:
    if flag.switch:
        if not isinstance(raw, bool):
            raise ValueError(f"expected true or false, got {raw!r}")
        return (not f.default) if raw else f.default
    if flag.repeatable:
        items = [raw] if isinstance(raw, str) else raw
        if not isinstance(items, list):
            raise ValueError(f"expected a list of strings, got {raw!r}")
        return tuple(_file_scalar(flag, item) for item in items)
    return _file_scalar(flag, raw)


def _file_scalar(flag: Flag, raw: object) -> Any:
    numeric = flag.value_type in (int, float) and _is_number(raw)
    if not isinstance(raw, str) and not numeric:
        expected = "a number" if flag.value_type in (int, float) else "a string"
        raise ValueError(f"expected {expected}, got {raw!r}")
    return flag.convert(str(raw))
