"""A node: storage, the waPC runtime, host functions and app pools, composed.

Interface used by the HTTP API and the CLI (implementation in progress).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .config import Config
from .records import AppRecord


class Node:
    """One assemblexd node. Use as ``async with Node(config) as node:``."""

    def __init__(self, config: Config) -> None:
        self.config = config

    async def __aenter__(self) -> Node:
        raise NotImplementedError

    async def __aexit__(self, *exc: object) -> None:
        raise NotImplementedError

    async def deploy(
        self, name: str, wasm: bytes, capabilities: Sequence[str] | None = None
    ) -> AppRecord:
        """Validate, store and load a module. Raises InvalidModule, BadRequest, PayloadTooLarge."""
        raise NotImplementedError

    async def call(self, app: str, op: str, payload: bytes) -> bytes:
        """Run one operation. Raises UnknownApp, GuestError, CallTimeout, Overloaded, PayloadTooLarge."""
        raise NotImplementedError

    def apps(self) -> list[AppRecord]:
        raise NotImplementedError

    def app(self, name: str) -> AppRecord:
        """Raises UnknownApp."""
        raise NotImplementedError

    async def undeploy(self, name: str) -> None:
        """Raises UnknownApp."""
        raise NotImplementedError

    def blob_path(self, sha256: str) -> Path:
        """Path of a stored module. Raises NotFound."""
        raise NotImplementedError

    def status(self) -> dict[str, Any]:
        """JSON-ready: node {id, name, url}, active [], passive [], members [self], apps."""
        raise NotImplementedError

    def metrics_text(self) -> bytes:
        """Prometheus text exposition."""
        raise NotImplementedError
