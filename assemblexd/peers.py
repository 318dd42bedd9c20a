"""What a node needs from its peers: one small interface, passed to the node's constructor.

A :class:`~assemblexd.node.Node` is given a :class:`Peers` (``Node(config, peers=...)``), as
membership's node is given its delegates through its config: the node asks it for modules it
lacks and for the views ``/status`` shows, and tells it when it runs other versions. The cluster
layer (``cluster.Cluster``) is the real one; :class:`NoPeers` is a node alone. The other way, the
cluster tells the node a peer came up by calling its public ``Node.peer_up``.
"""

from __future__ import annotations

import ssl
from typing import Any, Protocol

from .records import AppRecord

__all__ = ["FetchError", "NoPeers", "Peers", "Views"]

Views = tuple[list[Any], list[Any], list[dict[str, Any]]]
"""(active view, passive view, members with their active views and running apps)."""


class FetchError(Exception):
    """A module could not be had from this node or its peers."""


class Peers(Protocol):
    """What a node needs from its peers."""

    client_ssl: ssl.SSLContext | None
    """The client context peers are reached with (a TLS cluster); None for a plain one."""

    async def fetch_module(self, record: AppRecord) -> bytes:
        """The module of ``record`` from a peer (unchecked: the node checks its sha256).

        Raises FetchError.
        """
        ...

    def views(self) -> Views | None:
        """The views and members ``/status`` shows; None while the node runs alone."""
        ...

    def peer_read_waits(self) -> dict[str, int]:
        """Times peers' links were read slower, so far: ``paced`` (a peer over its rate) and
        ``held`` (the sync thread behind on a peer's messages); empty when there are none."""
        ...

    def apps_changed(self) -> None:
        """The node started running another version of an app, or stopped one."""
        ...


class NoPeers:
    """The peers of a node alone: none."""

    client_ssl: ssl.SSLContext | None = None

    async def fetch_module(self, record: AppRecord) -> bytes:
        raise FetchError(f"module {record.sha256[:12]} is not on this node (no peers)")

    def views(self) -> Views | None:
        return None

    def peer_read_waits(self) -> dict[str, int]:
        return {}

    def apps_changed(self) -> None:
        pass
