"""The daemon's exceptions.

Every error a client can cause or see is an ``AssemblexError`` with an HTTP ``status`` and a
short machine-readable ``code``; the HTTP layer turns them into
``{"error": code, "message": text}`` in one middleware and nowhere else. The root and the
errors the runtime raises itself live in ``runtime/errors.py`` (the runtime imports nothing of
the daemon) and are re-exported here.
"""

from __future__ import annotations

from .runtime.errors import AssemblexError, CallTimeout, GuestError, HostError, Overloaded

__all__ = [
    "AssemblexError",
    "BadRequest",
    "CallTimeout",
    "DataDirError",
    "GuestError",
    "HostError",
    "InvalidModule",
    "NotFound",
    "Overloaded",
    "PayloadTooLarge",
    "RequestTimeout",
    "Unauthorized",
    "UnknownApp",
]


class BadRequest(AssemblexError):
    """The request itself is malformed (bad multipart body, bad name, ...)."""

    status = 400
    code = "bad_request"


class InvalidModule(BadRequest):
    """A deployed module does not compile or does not speak waPC."""

    code = "invalid_module"


class Unauthorized(AssemblexError):
    """A bearer token is required and missing or wrong."""

    status = 401
    code = "unauthorized"


class NotFound(AssemblexError):
    """Something named in the request does not exist."""

    status = 404
    code = "not_found"


class UnknownApp(NotFound):
    """No app of that name is deployed."""

    code = "unknown_app"

    def __init__(self, name: str) -> None:
        super().__init__(f"no app named {name!r} is deployed")
        self.name = name


class RequestTimeout(AssemblexError):
    """A request's body did not arrive within the body timeout (a slow or stalled client)."""

    status = 408
    code = "request_timeout"


class PayloadTooLarge(AssemblexError):
    """An upload or payload is over its configured limit."""

    status = 413
    code = "too_large"


class DataDirError(Exception):
    """The data dir cannot be used as it is (a damaged log, another node's log, a file where
    a directory should be): the node does not start, and nothing in it was changed."""
