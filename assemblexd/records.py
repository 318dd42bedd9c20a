"""The app record: what every node knows of one deployed app, as the replicated store holds it."""

from __future__ import annotations

import dataclasses
import json
from typing import Any

from .runtime.hostfuncs import NAMESPACES

__all__ = ["DEFAULT_CAPABILITIES", "NAMESPACES", "AppRecord"]

DEFAULT_CAPABILITIES = NAMESPACES
"""Granted when a deploy names no capabilities: all of them (documented in the README)."""


@dataclasses.dataclass(frozen=True)
class AppRecord:
    """One version of one app. Immutable: a redeploy makes a new record."""

    name: str
    version: int
    sha256: str
    size: int
    deployed_at: float
    """Unix time of the deploy, in seconds."""
    origin: str
    """Name of the node that took the deploy."""
    capabilities: tuple[str, ...] = DEFAULT_CAPABILITIES
    history: tuple[AppRecord, ...] = ()
    """Previous versions, newest first (without their own history), for rollback."""
    seen: tuple[tuple[str, int], ...] = ()
    """The app's version counter, slot by slot (replica node id, count), as it was right after
    this write: the writes of the app this record knew of (`knows`). Stored, not shown by the
    API; history entries have none. See ``Registry.keep``."""

    def to_json(self, *, history: bool = True) -> dict[str, Any]:
        data = {
            "name": self.name,
            "version": self.version,
            "sha256": self.sha256,
            "size": self.size,
            "deployed_at": self.deployed_at,
            "origin": self.origin,
            "capabilities": list(self.capabilities),
        }
        if history:
            data["history"] = [h.to_json(history=False) for h in self.history]
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> AppRecord:
        return cls(
            name=str(data["name"]),
            version=int(data["version"]),
            sha256=str(data["sha256"]),
            size=int(data["size"]),
            deployed_at=float(data["deployed_at"]),
            origin=str(data["origin"]),
            capabilities=tuple(str(c) for c in data.get("capabilities", DEFAULT_CAPABILITIES)),
            history=tuple(cls.from_json(h) for h in data.get("history", ())),
            seen=tuple(sorted((str(n), int(c)) for n, c in data.get("seen", {}).items())),
        )

    def knows(self, other: AppRecord) -> bool:
        """Whether this record's writer had ``other``'s write when it wrote this one."""
        mine = dict(self.seen)
        return all(mine.get(node, 0) >= count for node, count in other.seen)

    def encode(self) -> bytes:
        return json.dumps({**self.to_json(), "seen": dict(self.seen)}, sort_keys=True).encode()

    @classmethod
    def decode(cls, raw: bytes) -> AppRecord:
        return cls.from_json(json.loads(raw))
