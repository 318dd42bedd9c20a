"""The errors the runtime raises.

``AssemblexError`` is the root of every error a client of the daemon can see (with the HTTP
``status`` and machine-readable ``code`` the API answers with); it lives here, at the bottom of
the layering, because the runtime raises some of them itself (a guest's failure, a timeout, a
full node). ``assemblexd.errors`` re-exports these classes and adds the daemon's own.
"""

from __future__ import annotations

__all__ = [
    "AssemblexError",
    "CallTimeout",
    "GuestError",
    "HostError",
    "ModuleError",
    "Overloaded",
    "WasmTrap",
]


class AssemblexError(Exception):
    """Root of every error the daemon reports to a client."""

    status = 500
    code = "internal"

    @property
    def message(self) -> str:
        return str(self.args[0]) if self.args else self.code


class GuestError(AssemblexError):
    """The guest reported an error, trapped, or broke the waPC contract."""

    status = 500
    code = "guest_error"


class Overloaded(AssemblexError):
    """The node will not take more work now; the client should retry later."""

    status = 503
    code = "overloaded"
    retry_after = 1


class CallTimeout(AssemblexError):
    """A call ran over its guest time or wall-clock limit."""

    status = 504
    code = "timeout"


class HostError(Exception):
    """A host function failed; the guest sees the text through ``__host_error``.

    Not an ``AssemblexError``: it never reaches a client directly, only the guest.
    """


class ModuleError(Exception):
    """A module does not compile, or does not fit the waPC host."""


class WasmTrap(Exception):
    """A guest trapped (or wasmtime reported an error) while running.

    ``exit_code`` is set when the trap is a WASI ``proc_exit``. ``guest_error`` is the text the
    guest sent through ``__guest_error`` during that run before it trapped, if any: the SDKs
    that turn a panic into a trap send the panic's message first.
    """

    def __init__(
        self, message: str, exit_code: int | None = None, guest_error: str | None = None
    ) -> None:
        super().__init__(message)
        self.exit_code = exit_code
        self.guest_error = guest_error

    def describe(self, what: str) -> str:
        """``what: <trap>``, after the guest's error text if it sent one."""
        if self.guest_error:
            return f"{self.guest_error}; {what}: {self}"
        return f"{what}: {self}"
