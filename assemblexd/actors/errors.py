"""The errors of actor calls (HTTP statuses in ``errors.py``'s way)."""

from __future__ import annotations

from ..errors import AssemblexError, Overloaded

__all__ = ["ActorUnavailable", "Forwarded", "NoQuorum"]


class ActorUnavailable(Overloaded):
    """No node can run the actor now (its owner is moving, or failed mid-call): 503 with
    ``Retry-After``."""

    code = "actor_unavailable"


class NoQuorum(ActorUnavailable):
    """This node does not see a strict majority of the cluster alive (the quorum guard)."""

    code = "no_quorum"


class Forwarded(AssemblexError):
    """The answer of the node a call was forwarded to: its status, code and message."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
