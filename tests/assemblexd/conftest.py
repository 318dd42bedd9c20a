"""Fixtures of the daemon's in-process tests: a node on a fresh data dir.

A test module that needs other settings overrides ``config``; ``node`` is then built from it.
The root conftest adds the WAT guests (``wat``) and a real Redis (``redis_server``); the type
aliases (``Wat``, ``Client``, ``MakeClient``) are in ``tests/helpers.py``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from assemblexd.config import Config
from assemblexd.node import Node


@pytest.fixture
def config(tmp_path: Path) -> Config:
    """A node's settings: its data dir under ``tmp_path``, zeroconf off, defaults otherwise."""
    return Config(data_dir=tmp_path / "data", mdns=False)


@pytest.fixture
async def node(config: Config) -> AsyncIterator[Node]:
    """A node running on ``config``, for the test."""
    async with Node(config) as node:
        yield node
