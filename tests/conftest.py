"""Root fixtures: the WAT test guests and a real Redis server.

The plain functions live in `helpers.py` so that code outside fixtures (e2e tests, scripts)
can use them too.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from helpers import WAT_DIR, RedisServerError, free_port, load_wat, run_redis_server

__all__ = ["free_port", "load_wat"]


@pytest.fixture(scope="session")
def wat_dir() -> Path:
    """The folder of the hand-written WAT guests, `guests/wat/`."""
    return WAT_DIR


@pytest.fixture(scope="session")
def wat() -> Callable[[str], bytes]:
    """`wat("echo")` gives the wasm bytes of `guests/wat/echo.wat` (compiled once)."""
    return load_wat


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """URL (`redis://127.0.0.1:<port>/0`) of a real redis-server run for this test session.

    Fails, rather than skips, when redis-server is missing: CI installs it (scripts/test).
    """
    with contextlib.ExitStack() as stack:
        try:
            url = stack.enter_context(run_redis_server(tmp_path_factory.mktemp("redis")))
        except RedisServerError as exc:
            message = str(exc)
        else:
            yield url
            return
    pytest.fail(message, pytrace=False)
