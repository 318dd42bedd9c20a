"""Terminal rendering of a node's answers: the status summary and the apps tables.

The JSON of ``/status`` and ``/apps`` is parsed once into the typed models below (``Status``,
``AppRow``), tolerant of fields a node leaves out (an anonymous ``/status`` has no peer
addresses, an older node fewer fields); the text is rendered from the models only.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

__all__ = [
    "ActorInfo",
    "AppRow",
    "AppStatus",
    "Member",
    "Peer",
    "Status",
    "format_actor",
    "format_apps",
    "format_status",
]


def _str(data: Mapping[str, Any], key: str) -> str | None:
    value = data.get(key)
    return None if value is None or value == "" else str(value)


def _number(data: Mapping[str, Any], key: str) -> float | None:
    value = data.get(key)
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def _mappings(value: Any) -> list[Mapping[str, Any]]:
    return [x for x in value if isinstance(x, Mapping)] if isinstance(value, list) else []


@dataclasses.dataclass(frozen=True)
class Peer:
    """A node as ``/status`` names it: this node, or a peer of its views."""

    id: str | None = None
    name: str | None = None
    url: str | None = None

    @classmethod
    def from_json(cls, data: Any) -> Peer:
        """A peer from an object, or from a bare id."""
        if isinstance(data, Mapping):
            return cls(_str(data, "id"), _str(data, "name"), _str(data, "url"))
        return cls(id=str(data))

    @property
    def label(self) -> str:
        return self.name or self.id or self.url or "?"


@dataclasses.dataclass(frozen=True)
class Member(Peer):
    """A member of the cluster with its active-view neighbours (ids), whether it is alive and
    how many actors are live on it."""

    active: tuple[str, ...] | None = None
    alive: bool | None = None
    actors: int | None = None

    @classmethod
    def from_json(cls, data: Any) -> Member:
        peer = Peer.from_json(data)
        active = data.get("active") if isinstance(data, Mapping) else None
        alive = data.get("alive") if isinstance(data, Mapping) else None
        actors = _number(data, "actors") if isinstance(data, Mapping) else None
        return cls(
            peer.id,
            peer.name,
            peer.url,
            tuple(str(p) for p in active) if isinstance(active, list) else None,
            alive if isinstance(alive, bool) else None,
            None if actors is None else int(actors),
        )


@dataclasses.dataclass(frozen=True)
class AppStatus:
    """An app in ``/status``: its current version, the version each node runs, its pool."""

    name: str
    version: str
    versions: dict[str, str] | None = None
    """Node name to the version it runs; None when the node did not say."""
    pool: tuple[str, str] | None = None
    """(idle, busy) instances here."""

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> AppStatus:
        versions = data.get("versions")
        pool = data.get("pool")
        return cls(
            name=_str(data, "name") or "?",
            version=str(data.get("version", "?")),
            versions={str(n): str(v) for n, v in versions.items()}
            if isinstance(versions, Mapping)
            else None,
            pool=(str(pool.get("idle", "?")), str(pool.get("busy", "?")))
            if isinstance(pool, Mapping)
            else None,
        )


@dataclasses.dataclass(frozen=True)
class Status:
    """A node's ``/status``, typed."""

    node: Peer = Peer()
    uptime: float | None = None
    instances: tuple[str, str] | None = None
    """(live, limit)."""
    active: tuple[Peer, ...] = ()
    passive: tuple[Peer, ...] = ()
    members: tuple[Member, ...] = ()
    apps: tuple[AppStatus, ...] = ()

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Status:
        instances = data.get("instances")
        views = {
            key: tuple(Peer.from_json(x) for x in data.get(key) or [] if x is not None)
            for key in ("active", "passive")
        }
        return cls(
            node=Peer.from_json(data.get("node") or {}),
            uptime=_number(data, "uptime"),
            instances=(str(instances.get("live", "?")), str(instances.get("limit", "?")))
            if isinstance(instances, Mapping)
            else None,
            active=views["active"],
            passive=views["passive"],
            members=tuple(Member.from_json(m) for m in _mappings(data.get("members"))),
            apps=tuple(AppStatus.from_json(a) for a in _mappings(data.get("apps"))),
        )


@dataclasses.dataclass(frozen=True)
class AppRow:
    """One app record of ``/apps`` (or of ``/apps/NAME`` and its history)."""

    name: str = ""
    version: str = ""
    size: str = ""
    sha256: str = ""
    capabilities: tuple[str, ...] = ()
    deployed_at: float | None = None
    origin: str = ""

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> AppRow:
        caps = data.get("capabilities")
        return cls(
            name=str(data.get("name", "")),
            version=str(data.get("version", "")),
            size=str(data.get("size", "")),
            sha256=str(data.get("sha256", "")),
            capabilities=tuple(str(c) for c in caps) if isinstance(caps, list) else (),
            deployed_at=_number(data, "deployed_at"),
            origin=str(data.get("origin", "")),
        )


def _table(rows: Sequence[Sequence[str]]) -> list[str]:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows]


def format_apps(apps: Sequence[AppRow], *, current: bool = False) -> str:
    """A table of app records; with ``current``, records of one app, the first one current
    (marked ``*``), with where and when each was deployed."""
    if not apps:
        return "no apps deployed"
    rows: list[tuple[str, ...]]
    if current:
        rows = [("", "VERSION", "SHA256", "DEPLOYED", "ON", "CAPABILITIES")]
        for i, a in enumerate(apps):
            when = a.deployed_at
            rows.append(
                (
                    "*" if i == 0 else "",
                    a.version,
                    a.sha256[:12],
                    time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(when))
                    if when is not None
                    else "?",
                    a.origin,
                    ",".join(a.capabilities),
                )
            )
    else:
        rows = [("NAME", "VERSION", "SIZE", "SHA256", "CAPABILITIES")]
        rows += [(a.name, a.version, a.size, a.sha256[:12], ",".join(a.capabilities)) for a in apps]
    return "\n".join(_table(rows))


def format_status(status: Status) -> str:
    """The status in the terminal: this node, then the membership graph (each member, whether
    it is alive and its active-view neighbours by name), then each app with the version every
    node runs."""
    node = status.node
    lines = [f"node       {node.label}"]
    for key, value in (("id", node.id), ("url", node.url)):
        if value:
            lines.append(f"{key:<10} {value}")
    if status.uptime is not None:
        lines.append(f"uptime     {_duration(status.uptime)}")
    if status.instances is not None:
        live, limit = status.instances
        lines.append(f"instances  {live} live of {limit}")
    names = {m.id: m.label for m in status.members if m.id}

    def peer_name(peer: Peer) -> str:
        if peer.id is not None and peer.id in names:
            return names[peer.id]
        return peer.label[:12]  # a peer with no member record yet: its id, shortened

    for key, view in (("active", status.active), ("passive", status.passive)):
        items = [peer_name(p) for p in view]
        lines.append(f"{key:<10} {len(items)}" + (f": {', '.join(items)}" if items else ""))
    items = [m.label for m in status.members]
    lines.append(f"members    {len(items)}" + (f": {', '.join(items)}" if items else ""))
    lines.extend(_format_members(status.members, node.id, peer_name))
    lines.append(f"apps       {len(status.apps)}")
    for a in status.apps:
        lines.append("  " + _format_app_status(a))
        versions = _format_versions(a, [m.label for m in status.members])
        if versions:
            lines.append(f"    {versions}")
    return "\n".join(lines)


def _format_members(
    members: Sequence[Member], me: str | None, peer_name: Callable[[Peer], str]
) -> list[str]:
    """One line per member: ``* name  url  alive  N actors  -> neighbour, ...`` (``*``: this
    node; the count left out for a member that did not say it)."""
    if not members:
        return []
    rows = []
    for m in members:
        neighbours = sorted(peer_name(Peer(id=p)) for p in m.active or ())
        rows.append(
            (
                m.label,
                m.url or "-",
                "alive" if m.alive is True else "gone" if m.alive is False else "?",
                "" if m.actors is None else f"{m.actors} actor{'' if m.actors == 1 else 's'}",
                "-> " + (", ".join(neighbours) if neighbours else "(no neighbours)"),
            )
        )
    return [
        ("  * " if me is not None and m.id == me else "    ") + line
        for m, line in zip(members, _table(rows), strict=True)
    ]


def _format_versions(a: AppStatus, members: Sequence[str]) -> str:
    """``on nodes: n1 v2, n2 v1, n3 -``: the version each member runs (``-``: none)."""
    if a.versions is None:
        return ""
    versions = a.versions
    order = [*members, *(n for n in versions if n not in members)]
    if not order:
        return ""
    shown = [f"{n} v{versions[n]}" if n in versions else f"{n} -" for n in order]
    return "on nodes: " + ", ".join(shown)


def _format_app_status(a: AppStatus) -> str:
    text = f"{a.name} v{a.version}"
    if a.versions is not None:
        stale = [f"{n} v{v}" for n, v in a.versions.items() if v != a.version]
        if stale:
            text += f" (behind: {', '.join(stale)})"
    if a.pool is not None:
        text += f", pool {a.pool[0]} idle / {a.pool[1]} busy"
    return text


def _duration(seconds: float) -> str:
    s = int(seconds)
    d, h, m = s // 86400, s % 86400 // 3600, s % 3600 // 60
    parts = [f"{d}d"] * bool(d) + [f"{h}h"] * bool(d or h) + [f"{m}m"] * bool(d or h or m)
    return " ".join([*parts, f"{s % 60}s"])


@dataclasses.dataclass(frozen=True)
class ActorInfo:
    """``GET /actors/{app}/{key}``: where an actor lives."""

    owner: str | None = None
    generation: int | None = None
    active: bool | None = None
    alarm_at: float | None = None
    """When its alarm is due, in milliseconds since the epoch; None for no alarm."""

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ActorInfo:
        generation = _number(data, "generation")
        active = data.get("active")
        return cls(
            owner=_str(data, "owner"),
            generation=None if generation is None else int(generation),
            active=active if isinstance(active, bool) else None,
            alarm_at=_number(data, "alarm_at"),
        )


def format_actor(app: str, key: str, info: ActorInfo, now: float | None = None) -> str:
    """An actor in the terminal: its owner, generation, whether it is active, its alarm."""
    now = time.time() if now is None else now
    if info.alarm_at is None:
        alarm = "none"
    else:
        at = info.alarm_at / 1000
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(at))
        left = at - now
        alarm = f"{when} (in {_duration(left)})" if left >= 0 else f"{when} (due)"
    active = {True: "yes", False: "no (passivated, or never called)", None: "?"}[info.active]
    lines = [
        f"actor       {app}/{key}",
        f"owner       {info.owner or '(none: no node runs the app)'}",
        f"generation  {'?' if info.generation is None else info.generation}",
        f"active      {active}",
        f"alarm       {alarm}",
    ]
    return "\n".join(lines)
