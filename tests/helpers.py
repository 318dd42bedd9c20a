"""Plain helpers shared by the test suite (the root conftest wraps them as fixtures).

`tests/` is not a package: pytest puts it on `sys.path` for the root conftest, so test modules
anywhere below it, e2e ones included, can write `from helpers import free_port, load_wat`.
"""

from __future__ import annotations

import contextlib
import functools
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path

import pytest
import redis
import wasmtime
from aiohttp import web
from aiohttp.test_utils import TestClient

from assemblexd.peers import NoPeers
from assemblexd.records import AppRecord

Wat = Callable[[str], bytes]
"""The ``wat`` fixture: a test guest of guests/wat/ by name, compiled."""
Client = TestClient[web.Request, web.Application]
"""A test client of a node's HTTP API (pytest-aiohttp)."""
MakeClient = Callable[..., Awaitable[Client]]
"""The ``aiohttp_client`` fixture."""

REPO_ROOT = Path(__file__).resolve().parent.parent
WAT_DIR = REPO_ROOT / "guests" / "wat"

REDIS_START_TIMEOUT = 5.0


GUEST_BUILD_DIR = REPO_ROOT / "guests" / "build"
"""Where scripts/build-guests writes ``<lang>-<example>.wasm``."""


def guest_wasm(lang: str, example: str) -> bytes:
    """The built module, or a test failure that says how to build it."""
    path = GUEST_BUILD_DIR / f"{lang}-{example}.wasm"
    try:
        return path.read_bytes()
    except FileNotFoundError:
        pytest.fail(
            f"{path.relative_to(REPO_ROOT)} is missing: run scripts/build-guests {lang} "
            "(scripts/test builds every guest before running pytest)",
            pytrace=False,
        )


def daemon_env() -> dict[str, str]:
    """The environment of a child ``python -m assemblexd``: this checkout importable, and
    nothing from the shell that changes its defaults (``PORT``, ``ASSEMBLEX_*``)."""
    env = {k: v for k, v in os.environ.items() if k != "PORT" and not k.startswith("ASSEMBLEX_")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
    return env


def run_cli(
    *argv: str, env: dict[str, str] | None = None, timeout: float = 30.0
) -> subprocess.CompletedProcess[str]:
    """``python -m assemblexd ARGV`` to its end, in ``daemon_env()`` plus ``env``, with no
    standard input; its output as text (the CLI, or a ``run`` that refuses to start)."""
    return subprocess.run(
        [sys.executable, "-m", "assemblexd", *argv],
        cwd=REPO_ROOT,
        env={**daemon_env(), **(env or {})},
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago (bind to port 0, then close)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@functools.cache
def load_wat(name: str) -> bytes:
    """The wasm bytes of `guests/wat/<name>.wat`, compiled once per test process."""
    return bytes(wasmtime.wat2wasm((WAT_DIR / f"{name}.wat").read_text()))


class RedisServerError(RuntimeError):
    """redis-server is missing or did not come up."""


@contextlib.contextmanager
def run_redis_server(data_dir: Path) -> Iterator[str]:
    """Run a throwaway `redis-server` on a free 127.0.0.1 port and yield its URL.

    Nothing is persisted (`--save "" --appendonly no`); `data_dir` holds its working files
    and its log. The server is terminated on exit.

    Raises:
        RedisServerError: redis-server is not installed, or did not answer PING in time.
    """
    exe = shutil.which("redis-server")
    if exe is None:
        raise RedisServerError(
            "redis-server is not installed (scripts/test installs it: apt-get install redis-server)"
        )
    data_dir.mkdir(parents=True, exist_ok=True)
    proc, url = _start_redis(exe, data_dir)
    try:
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _start_redis(exe: str, data_dir: Path) -> tuple[subprocess.Popen[bytes], str]:
    # free_port() can race with another process taking the port: retry on a new one.
    for attempt in range(3):
        port = free_port()
        url = f"redis://127.0.0.1:{port}/0"
        log_path = data_dir / f"redis-{port}.log"
        with log_path.open("wb") as log:
            proc = subprocess.Popen(
                [
                    exe,
                    "--port",
                    str(port),
                    "--bind",
                    "127.0.0.1",
                    "--save",
                    "",
                    "--appendonly",
                    "no",
                    "--dir",
                    str(data_dir),
                ],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        try:
            _wait_for_ping(proc, url, log_path)
        except _RedisExited:
            if attempt == 2:
                raise
            continue
        except BaseException:
            proc.kill()
            proc.wait()
            raise
        return proc, url
    raise AssertionError("unreachable")


class _RedisExited(RedisServerError):
    pass


def _wait_for_ping(proc: subprocess.Popen[bytes], url: str, log_path: Path) -> None:
    client = redis.Redis.from_url(url, socket_connect_timeout=0.5, socket_timeout=0.5)
    deadline = time.monotonic() + REDIS_START_TIMEOUT
    try:
        while True:
            if proc.poll() is not None:
                raise _RedisExited(
                    f"redis-server exited with code {proc.returncode}: "
                    f"{log_path.read_text(errors='replace')[-2000:]}"
                )
            try:
                if client.ping():
                    return
            except redis.ConnectionError:
                pass
            if time.monotonic() > deadline:
                raise RedisServerError(
                    f"redis-server at {url} did not answer PING within {REDIS_START_TIMEOUT} s: "
                    f"{log_path.read_text(errors='replace')[-2000:]}"
                )
            time.sleep(0.05)
    finally:
        client.close()


class FakePeers(NoPeers):
    """The peers of a node in an in-process test (``Node(config, peers=FakePeers())``).

    ``fetch``, once set, gives the modules the node asks its peers for (until then there are
    none, as for a node alone); ``on_apps_changed`` is called whenever the node tells its peers
    it runs other versions.
    """

    def __init__(self) -> None:
        self.fetch: Callable[[AppRecord], Awaitable[bytes]] | None = None
        self.on_apps_changed: list[Callable[[], None]] = []

    async def fetch_module(self, record: AppRecord) -> bytes:
        if self.fetch is None:
            return await super().fetch_module(record)
        return await self.fetch(record)

    def apps_changed(self) -> None:
        for callback in list(self.on_apps_changed):
            callback()
