"""Schemathesis against ``/openapi.json``: requests generated from the spec, valid and not.

A real node (real wasmtime, a temporary data dir) serves on a free 127.0.0.1 port from a
thread of its own (schemathesis speaks HTTP with ``requests``, synchronously); ``echo`` and
``error`` are deployed so that calls meet a guest that answers and one that fails. Every
operation of the spec gets a bounded number of generated requests; the check is the promise of
the fuzzers beside this file: no 5xx but a guest's 500 (``guest_error``), 503 ``overloaded``
and 504 ``timeout``, every error in the JSON error shape.

Skipped when schemathesis is not installed (it is in the ``dev`` extra).
"""

from __future__ import annotations

import asyncio
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from fuzz_settings import SCALE
from helpers import free_port, load_wat
from hypothesis import HealthCheck, settings

from assemblexd.api import create_app
from assemblexd.config import Config
from assemblexd.node import Node
from assemblexd.openapi import spec

schemathesis = pytest.importorskip("schemathesis")

# Modules and actor messages go as raw bytes, as application/octet-stream bodies do (random
# bytes are malformed msgpack: a 400, which the checks below accept as an error answer).
schemathesis.serializer.alias("application/wasm", "application/octet-stream")
schemathesis.serializer.alias("application/msgpack", "application/octet-stream")
# /peer is the membership websocket, served by the cluster layer (not run here).
SCHEMA = schemathesis.openapi.from_dict(spec()).exclude(path="/peer")
ALLOWED_5XX = {500: "guest_error", 503: "overloaded", 504: "timeout"}


class LiveNode:
    """A node served by aiohttp's AppRunner on its own event loop, in a thread."""

    def __init__(self, data_dir: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.config = Config(
            data_dir=data_dir,
            name="schemathesis",
            port=self.port,
            mdns=False,
            max_upload_mib=1,
            max_payload_mib=1,
            call_timeout=0.5,
        )
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._stop: asyncio.Event | None = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="schemathesis-node", daemon=True)

    def _run(self) -> None:
        try:
            self._loop.run_until_complete(self._serve())
        except BaseException as exc:  # reported by start()
            self._error = exc
            self._ready.set()
        finally:
            self._loop.close()

    async def _serve(self) -> None:
        self._stop = asyncio.Event()
        async with Node(self.config) as node:
            for name in ("echo", "error"):
                await node.deploy(name, load_wat(name))
            runner = web.AppRunner(create_app(node))
            await runner.setup()
            try:
                await web.TCPSite(runner, "127.0.0.1", self.port).start()
                self._ready.set()
                await self._stop.wait()
            finally:
                await runner.cleanup()

    def __enter__(self) -> LiveNode:
        self._thread.start()
        if not self._ready.wait(60) or self._error is not None:
            raise RuntimeError(f"the node did not start: {self._error!r}")
        return self

    def __exit__(self, *exc: object) -> None:
        if self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(timeout=30)


@pytest.fixture(scope="module")
def live() -> Iterator[LiveNode]:
    with tempfile.TemporaryDirectory() as tmp, LiveNode(Path(tmp)) as node:
        yield node


def no_server_error(ctx: Any, response: Any, case: Any) -> bool | None:
    """No 5xx except those a call may answer; every error is ``{"error", "message"}``."""
    status = response.status_code
    if status < 400 or status in (405, 417):  # aiohttp's own (Allow kept) and unknown Expect
        return None
    body = response.json()
    assert set(body) == {"error", "message"}, (status, body)
    if status >= 500:
        assert case.path.startswith("/call/"), (status, case.path, body)
        assert ALLOWED_5XX.get(status) == body["error"], (status, body)
    return None


@SCHEMA.parametrize()
@settings(
    max_examples=12 * SCALE,
    deadline=None,
    suppress_health_check=list(HealthCheck),
)
def test_api_from_spec(case: Any, live: LiveNode) -> None:
    case.call_and_validate(base_url=live.url, checks=[no_server_error], timeout=30)
