"""What a node shows of itself: the ``/status`` document and the ``/metrics`` exposition."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from .apps import Supervisors
from .metrics import Metrics
from .peers import Peers
from .registry import Registry
from .runtime import Instance, InstanceCap, KVQuota

__all__ = ["Status"]


class Status:
    """Reads a node's parts into ``/status`` and ``/metrics``.

    Args:
        registry: the apps deployed (cluster-wide, as this node's store knows them).
        supervisors: what this node runs of them.
        cap: the node's instance cap.
        peers: the views and members this node knows.
        metrics: the node's metrics.
        kv_quota: each app's key-value usage.
        started_at: when the node started (``time.time()``).
        actors: how many actors are live on this node now (a member record of a node with
            peers carries its own count; a node alone has only this).
    """

    def __init__(
        self,
        registry: Registry,
        supervisors: Supervisors,
        cap: InstanceCap[Instance],
        peers: Peers,
        metrics: Metrics,
        kv_quota: KVQuota,
        started_at: float,
        actors: Callable[[], int] = lambda: 0,
    ) -> None:
        self._registry = registry
        self._supervisors = supervisors
        self._cap = cap
        self._peers = peers
        self._metrics = metrics
        self._kv_quota = kv_quota
        self._started_at = started_at
        self._actors = actors

    def status(self, me: dict[str, Any]) -> dict[str, Any]:
        """JSON-ready: this node (``me``: its id, name and URL), its views, the members it
        knows (the graph, each with its live actors), the apps."""
        views = self._peers.views()
        if views is not None:
            active, passive, members = views
        else:
            active, passive = [], []
            members = [
                {
                    **me,
                    "active": [],
                    "apps": self._supervisors.running(),
                    "actors": self._actors(),
                }
            ]
        loaded_apps = self._supervisors.loaded
        apps = []
        for record in self._registry.records():
            loaded = loaded_apps.get(record.name)
            apps.append(
                {
                    **record.to_json(history=False),
                    "history": [h.version for h in record.history],
                    "running": loaded.record.version if loaded else None,
                    "versions": {
                        m["name"]: m["apps"][record.name]
                        for m in members
                        if record.name in m.get("apps", {})
                    },
                    "pool": {
                        "idle": loaded.pool.idle if loaded else 0,
                        "busy": loaded.pool.busy if loaded else 0,
                    },
                }
            )
        return {
            "node": me,
            "active": active,
            "passive": passive,
            "members": members,
            "apps": apps,
            "instances": {"live": self._cap.live, "limit": self._cap.limit},
            "uptime": time.time() - self._started_at,
        }

    def metrics_text(self) -> bytes:
        """Prometheus text exposition."""
        metrics = self._metrics
        metrics.instances_live.set(self._cap.live)
        views = self._peers.views()
        if views is not None:
            active, passive, _ = views
            metrics.view_size.labels("active").set(len(active))
            metrics.view_size.labels("passive").set(len(passive))
        for name, app in self._supervisors.loaded.items():
            metrics.pool_idle.labels(name).set(app.pool.idle)
            keys, size = self._kv_quota.usage(name)
            metrics.kv_keys.labels(name).set(keys)
            metrics.kv_bytes.labels(name).set(size)
        return metrics.render()
