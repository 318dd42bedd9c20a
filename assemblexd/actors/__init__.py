"""Actors: one live instance per (app, key) in the cluster, with durable state, alarms,
failover and a quorum guard (docs/actors.md).

* ``core``: the pure rules (placement, leases, what an acceptor grants), time as an argument.
* ``store``: an acceptor's records in SQLite.
* ``wire``: messages between nodes (``POST /peer/actors``).
* ``service``: :class:`Actors`, which runs them for one node.
"""

from .core import valid_key
from .errors import ActorUnavailable, Forwarded, NoQuorum
from .service import ActorHost, Actors, Answer, Member
from .store import ActorStore
from .wire import PeerClient

__all__ = [
    "ActorHost",
    "ActorStore",
    "ActorUnavailable",
    "Actors",
    "Answer",
    "Forwarded",
    "Member",
    "NoQuorum",
    "PeerClient",
    "valid_key",
]
