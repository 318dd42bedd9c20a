"""The node's Prometheus metrics, in a registry of its own (tests run several nodes per process)."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, Metric
from prometheus_client.registry import Collector

from .runtime.hostfuncs import NAMESPACES

__all__ = ["Metrics"]

MAX_OPS_PER_APP = 32
"""Operation names of one app that get a series of their own in ``assemblex_calls``."""
MAX_OP_LABEL = 64
"""Longest operation name (in characters) used as a label value."""
OTHER_OP = "_other"
"""The ``op`` label of successful calls past those bounds."""
FAILED_OP = "-"
"""The ``op`` label of calls that did not succeed."""


class _Counts(Collector):
    """A counter family read from counts kept elsewhere, built when scraped.

    ``counts()`` gives label value -> total, or None while there is nothing to show. Used for
    host calls (the hottest thing the node counts, many per guest call, on the loop thread
    only: a dict update, where a prometheus-client ``Counter.inc`` takes a lock each time) and
    for totals another layer keeps (membership's read waits).
    """

    def __init__(
        self,
        name: str,
        documentation: str,
        label: str,
        counts: Callable[[], Mapping[str, int] | None],
    ) -> None:
        self._name, self._documentation, self._label = name, documentation, label
        self._counts = counts

    def collect(self) -> Iterator[Metric]:
        counts = self._counts()
        if counts is None:
            return
        family = CounterMetricFamily(self._name, self._documentation, labels=[self._label])
        for value, count in counts.items():
            family.add_metric([value], count)
        yield family


class Metrics:
    def __init__(self) -> None:
        self._children: dict[tuple[str, str, str], tuple[Any, Any]] = {}
        self._ops: dict[str, set[str]] = {}
        """Per app, the operation names that have a series of their own."""
        self.registry = CollectorRegistry()
        r = self.registry
        self.calls = Counter(
            "assemblex_calls",
            'Calls by app, operation ("-" unless it succeeded) and outcome',
            ["app", "op", "outcome"],
            registry=r,
        )
        self.call_seconds = Histogram(
            "assemblex_call_seconds",
            "Call latency, instance acquisition included",
            ["app"],
            buckets=(0.0001, 0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 10, 60),
            registry=r,
        )
        self._host_calls = dict.fromkeys((*NAMESPACES, "other"), 0)
        r.register(
            _Counts(
                "assemblex_host_calls",
                "Host calls made by guests, by namespace",
                "namespace",
                lambda: self._host_calls,
            )
        )
        self.peer_read_waits: Callable[[], Mapping[str, int] | None] = lambda: None
        """Set by the node: membership's totals of ``paced`` and ``held`` link reads."""
        r.register(
            _Counts(
                "assemblex_peer_read_waits",
                "Times a peer's link was read slower: paced (over its rate) or held (sync behind)",
                "reason",
                lambda: self.peer_read_waits(),
            )
        )
        self.instances_freed: Callable[[], Mapping[str, int] | None] = lambda: None
        """Set by the node: idle instances freed, ``evicted`` (to make room for another app's
        at --max-instances) and ``expired`` (idle past --idle-timeout)."""
        r.register(
            _Counts(
                "assemblex_instances_freed",
                "Idle instances freed: evicted (room for another app at the cap) or expired",
                "reason",
                lambda: self.instances_freed(),
            )
        )
        self.actor_activations = Counter(
            "assemblex_actor_activations", "Actors this node activated (took)", registry=r
        )
        self.actor_failovers = Counter(
            "assemblex_actor_failovers",
            "Activations that took an actor from another node that had not let it go",
            registry=r,
        )
        self.actor_forwarded = Counter(
            "assemblex_actor_forwarded", "Actor calls this node forwarded to another", registry=r
        )
        self.actor_alarms = Counter(
            "assemblex_actor_alarms", "Actor alarms this node fired", registry=r
        )
        self.actor_call_seconds = Histogram(
            "assemblex_actor_call_seconds",
            "Actor call latency at the node that has the client: run here (local) or forwarded",
            ["where"],
            buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 10, 60),
            registry=r,
        )
        self.actors_active = Gauge(
            "assemblex_actors_active", "Actors live on this node", registry=r
        )
        self.deploys = Counter("assemblex_deploys", "Deploys accepted by this node", registry=r)
        self.blob_fetches = Counter(
            "assemblex_blob_fetches", "Modules fetched from peers", registry=r
        )
        self.compile_cache = Counter(
            "assemblex_compile_cache", "Compiled-module cache lookups", ["result"], registry=r
        )
        self.gc_removed = Counter(
            "assemblex_gc_removed",
            "Files removed by the garbage collector, by kind (blob, compiled)",
            ["kind"],
            registry=r,
        )
        self.gc_removed_bytes = Counter(
            "assemblex_gc_removed_bytes",
            "Bytes of the files removed by the garbage collector, by kind (blob, compiled)",
            ["kind"],
            registry=r,
        )
        self.stored_bytes = Gauge(
            "assemblex_stored_bytes",
            "Bytes of modules on disk at the last garbage collection, by kind (blob, compiled)",
            ["kind"],
            registry=r,
        )
        self.reloads = Counter(
            "assemblex_reloads", "App versions this node started running", ["app"], registry=r
        )
        self.view_size = Gauge(
            "assemblex_membership_view", "Peers in the membership views", ["view"], registry=r
        )
        self.sync_bytes = Counter(
            "assemblex_sync_bytes", "Bytes of store sync messages", ["direction"], registry=r
        )
        self.instances_live = Gauge(
            "assemblex_instances_live", "Live wasm instances on this node", registry=r
        )
        self.pool_idle = Gauge(
            "assemblex_pool_idle", "Idle warm instances per app", ["app"], registry=r
        )
        self.guest_log_dropped = Counter(
            "assemblex_guest_log_dropped",
            "Guest console lines not logged: over the app's --guest-log-rate",
            ["app"],
            registry=r,
        )
        self.guest_log_cut = Counter(
            "assemblex_guest_log_cut",
            "Guest console lines logged cut short (over the longest line logged)",
            ["app"],
            registry=r,
        )
        self.kv_keys = Gauge(
            "assemblex_kv_keys",
            "Keys each app holds in the kv store (values and counters; against --max-kv-keys)",
            ["app"],
            registry=r,
        )
        self.kv_bytes = Gauge(
            "assemblex_kv_bytes",
            "Bytes each app holds in the kv store (keys and values; against --max-kv)",
            ["app"],
            registry=r,
        )
        self.per_app: tuple[Any, ...] = (
            self.guest_log_dropped,
            self.guest_log_cut,
            self.kv_keys,
            self.kv_bytes,
        )
        """Metrics labelled by app alone that :meth:`forget_app` also drops."""

    def observe_call(self, app: str, op: str, outcome: str, seconds: float) -> None:
        """Count a call of a running app (the node never observes calls to unknown apps, so
        ``app`` is bounded by the apps it runs, and :meth:`forget_app` drops undeployed ones).

        Operation names come from clients and guests do not declare theirs: a name becomes a
        label value only once it succeeded, is at most MAX_OP_LABEL characters, and is among
        the first MAX_OPS_PER_APP such names of the app; the rest share ``_other``.
        """
        if outcome != "ok":
            op = FAILED_OP
        # labels() costs a lock and a dict lookup per call: keep the children.
        key = (app, op, outcome)
        children = self._children.get(key)
        if children is None:
            if op != FAILED_OP:
                ops = self._ops.setdefault(app, set())
                if op not in ops:
                    if len(op) > MAX_OP_LABEL or len(ops) >= MAX_OPS_PER_APP:
                        op = OTHER_OP
                    else:
                        ops.add(op)
                    key = (app, op, outcome)
            children = self._children.get(key)
            if children is None:
                children = (self.calls.labels(app, op, outcome), self.call_seconds.labels(app))
                self._children[key] = children
        children[0].inc()
        children[1].observe(seconds)

    def forget_app(self, app: str) -> None:
        """Drop every series of ``app`` (undeployed, or no longer run here): app names come
        and go, the series must not pile up."""
        self._ops.pop(app, None)
        for key in [k for k in self._children if k[0] == app]:
            del self._children[key]
            self.calls.remove(*key)
        for metric in (self.call_seconds, self.reloads, self.pool_idle, *self.per_app):
            with contextlib.suppress(KeyError):
                metric.remove(app)

    def host_call(self, namespace: str) -> None:
        """Count a host call (on the loop thread). Namespace names come from guests: unknown
        ones share one label value."""
        counts = self._host_calls
        if namespace in counts:
            counts[namespace] += 1
        else:
            counts["other"] += 1

    def render(self) -> bytes:
        return bytes(generate_latest(self.registry))
