"""A real daemon in a subprocess: HTTP deploy and call, the CLI, restart on the same data dir.

The daemon logs JSON (``--log-format json``); the tests wait for its "listening" line, an event,
rather than polling the port.
"""

from __future__ import annotations

import json
import select
import socket
import struct
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from cluster import START_TIMEOUT, Daemon, http
from helpers import REPO_ROOT, daemon_env

pytestmark = pytest.mark.e2e

CLI_TIMEOUT = 30.0


@pytest.fixture
def start_daemon(tmp_path: Path) -> Iterator[Callable[..., Daemon]]:
    """``start_daemon(data_dir, *flags)``: ``assemblexd run`` as ``e2e-node`` on a free port,
    started (``wait_listening`` waits for it); killed at the end if still running."""
    started: list[Daemon] = []

    def start(data_dir: Path, *extra: str) -> Daemon:
        log = tmp_path / f"e2e-node-{len(started)}.log"
        daemon = Daemon("e2e-node", data_dir, log, args=extra)
        started.append(daemon)
        daemon.start()
        return daemon

    yield start
    for daemon in started:
        daemon.kill()


def multipart(fields: dict[str, tuple[str | None, bytes]]) -> tuple[bytes, str]:
    """A multipart/form-data body from name -> (file name or None, bytes), as curl -F builds it."""
    boundary = uuid.uuid4().hex
    parts = []
    for name, (filename, data) in fields.items():
        disposition = f'form-data; name="{name}"'
        if filename is not None:
            disposition += f'; filename="{filename}"'
        head = f"--{boundary}\r\nContent-Disposition: {disposition}\r\n"
        if filename is not None:
            head += "Content-Type: application/octet-stream\r\n"
        parts.append(head.encode() + b"\r\n" + data + b"\r\n")
    body = b"".join(parts) + f"--{boundary}--\r\n".encode()
    return body, f"multipart/form-data; boundary={boundary}"


def cli(*argv: str) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [sys.executable, "-m", "assemblexd", *argv],
        cwd=REPO_ROOT,
        env=daemon_env(),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        timeout=CLI_TIMEOUT,
        check=False,
    )


def test_deploy_call_cli_and_restart(
    tmp_path: Path, wat: Callable[[str], bytes], start_daemon: Callable[..., Daemon]
) -> None:
    data_dir = tmp_path / "data"
    wasm = wat("echo")
    daemon = start_daemon(data_dir)
    announced = daemon.wait_listening()
    assert announced["url"] == daemon.url
    url = daemon.url

    assert http("GET", f"{url}/healthz") == (200, b'{"ok": true}')

    # Deploy over HTTP as `curl -F wasm=@echo.wasm` would.
    body, content_type = multipart({"wasm": ("echo.wasm", wasm)})
    status, answer = http("POST", f"{url}/deploy", body, {"Content-Type": content_type})
    assert status == 201, answer
    deployed = json.loads(answer)
    assert deployed["name"] == "echo"
    assert deployed["version"] == 1

    assert http("POST", f"{url}/call/echo/echo", b"hello") == (200, b"hello")

    # The CLI, as subprocesses.
    wasm_file = tmp_path / "cli-echo.wasm"
    wasm_file.write_bytes(wasm)
    done = cli("deploy", str(wasm_file), "--url", url)
    assert done.returncode == 0, done.stderr
    assert b"deployed cli-echo version 1" in done.stdout

    done = cli("call", "echo", "echo", "--data", "from the cli", "--url", url)
    assert done.returncode == 0, done.stderr
    assert done.stdout == b"from the cli"

    payload_file = tmp_path / "payload.bin"
    payload_file.write_bytes(bytes(range(256)))
    done = cli("call", "cli-echo", "--data-file", str(payload_file), "--url", url)
    assert done.returncode == 0, done.stderr
    assert done.stdout == bytes(range(256))

    done = cli("call", "echo", "nope", "--url", url)
    assert done.returncode != 0
    assert b"unknown operation: nope" in done.stderr

    done = cli("call", "missing", "--url", url)
    assert done.returncode != 0
    assert b"no app named 'missing'" in done.stderr

    done = cli("apps", "--url", url)
    assert done.returncode == 0, done.stderr
    names = [line.split()[0] for line in done.stdout.decode().splitlines()[1:]]
    assert sorted(names) == ["cli-echo", "echo"]

    done = cli("status", "--url", url)
    assert done.returncode == 0, done.stderr
    assert b"e2e-node" in done.stdout
    assert b"echo" in done.stdout

    assert daemon.stop() == 0
    # Every log line is one JSON object.
    for line in daemon.lines:
        assert isinstance(json.loads(line), dict), line

    # Restart on the same data: the apps come back with the same versions.
    again = start_daemon(data_dir)
    again.wait_listening()
    status, answer = http("GET", f"{again.url}/apps/echo")
    assert status == 200, answer
    record = json.loads(answer)
    assert record["version"] == deployed["version"]
    assert record["sha256"] == deployed["sha256"]
    assert http("POST", f"{again.url}/call/echo/echo", b"after restart") == (200, b"after restart")
    assert again.stop() == 0


def test_cli_versions_rollback_undeploy_with_tokens(
    tmp_path: Path, wat: Callable[[str], bytes], start_daemon: Callable[..., Daemon]
) -> None:
    """An app's life from the CLI on a node that wants both tokens: deploy twice, list the
    versions, roll back, call, undeploy; without the tokens nothing changes."""
    daemon = start_daemon(tmp_path / "data", "--token", "deploy-t", "--call-token", "call-t")
    daemon.wait_listening()
    url = daemon.url
    files = []
    for guest in ("echo", "host_echo"):
        f = tmp_path / guest / "app.wasm"
        f.parent.mkdir()
        f.write_bytes(wat(guest))
        files.append(f)
    done = cli("deploy", str(files[0]), "--url", url)
    assert done.returncode == 1
    assert b"401" in done.stderr or b"token" in done.stderr
    for f in files:
        done = cli("deploy", str(f), "--url", url, "--token", "deploy-t")
        assert done.returncode == 0, done.stderr
    done = cli("apps", "app", "--url", url)
    assert done.returncode == 0, done.stderr
    rows = done.stdout.decode().splitlines()[1:]
    assert len(rows) == 2
    assert rows[0].split()[:2] == ["*", "2"]  # current first, marked
    assert rows[1].split()[0] == "1"

    assert cli("rollback", "app", "--url", url).returncode == 1  # no token: refused
    assert json.loads(http("GET", f"{url}/apps/app")[1])["version"] == 2
    done = cli("rollback", "app", "--url", url, "--token", "deploy-t")
    assert done.returncode == 0, done.stderr
    assert b"rolled app back: version 3" in done.stdout

    done = cli("call", "app", "echo", "--data", "hi", "--url", url)
    assert done.returncode == 1  # the call token is missing
    done = cli("call", "app", "echo", "--data", "hi", "--url", url, "--token", "call-t")
    assert (done.returncode, done.stdout) == (0, b"hi")  # echo.wat again: it has op echo

    assert cli("undeploy", "app", "--url", url).returncode == 1
    done = cli("undeploy", "app", "--url", url, "--token", "deploy-t")
    assert (done.returncode, done.stdout) == (0, b"undeployed app\n")
    done = cli("apps", "--url", url)
    assert done.stdout == b"no apps deployed\n"
    assert daemon.stop() == 0


def test_port_in_use_exits_nonzero(tmp_path: Path, start_daemon: Callable[..., Daemon]) -> None:
    first = start_daemon(tmp_path / "a")
    first.wait_listening()
    second = start_daemon(tmp_path / "b", "--port", str(first.port))  # later --port wins
    assert second.proc is not None
    assert second.proc.wait(timeout=START_TIMEOUT) != 0
    assert first.stop() == 0


def _rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def test_max_memory_bounds_what_a_guest_allocates(
    tmp_path: Path, wat: Callable[[str], bytes], start_daemon: Callable[..., Daemon]
) -> None:
    """A node run with --max-memory 16, as an outside test attacked it: extra memories are
    refused at deploy, and a table grown by 16M then 48M elements stays within the budget."""
    daemon = start_daemon(tmp_path / "data", "--max-memory", "16")
    daemon.wait_listening()
    assert daemon.proc is not None
    status, body = http(
        "POST",
        f"{daemon.url}/deploy?name=mems",
        wat("many_memories"),
        {"Content-Type": "application/wasm"},
    )
    assert status == 400, body
    assert "module has 21 memories" in json.loads(body)["message"]
    daemon.deploy("tables", wat("table_grow"))
    before = _rss_kib(daemon.proc.pid)
    status, body = daemon.call("tables")
    assert (status, struct.unpack("<ii", body)) == (200, (-1, -1))
    grown = _rss_kib(daemon.proc.pid) - before
    assert grown < 64 * 1024, f"resident memory grew by {grown} KiB"  # unbounded: 512 MiB
    assert daemon.stop() == 0


def test_a_client_that_goes_away_cancels_its_call(
    tmp_path: Path, wat: Callable[[str], bytes], start_daemon: Callable[..., Daemon]
) -> None:
    daemon = _daemon_with_sleep(tmp_path, wat, start_daemon)
    req = urllib.request.Request(f"{daemon.url}/call/sleep/main", data=b"20000", method="POST")
    with pytest.raises((TimeoutError, urllib.error.URLError)):
        urllib.request.urlopen(req, timeout=0.5)
    # The daemon notices the closed connection and cancels the call: its instance is freed
    # long before the 20 s sleep would have ended.
    deadline = time.monotonic() + 10
    live = None
    while time.monotonic() < deadline:
        live = json.loads(http("GET", f"{daemon.url}/status")[1])["instances"]["live"]
        if live == 0:
            break
        time.sleep(0.05)
    assert live == 0
    assert daemon.stop() == 0


def test_pipelined_requests_on_one_connection_are_bounded(
    tmp_path: Path, wat: Callable[[str], bytes], start_daemon: Callable[..., Daemon]
) -> None:
    """A client that pipelines requests faster than they are served gets back-pressure.

    The first request sleeps 3 s in the host; behind it the client keeps writing padded
    requests. The daemon parses a bounded number (aiohttp's per-connection queue, 32) and then
    stops reading the socket, so the client's writes block after a few hundred KB of kernel
    buffers instead of the daemon buffering everything it is sent. Every complete request is
    then answered, in order.
    """
    daemon = _daemon_with_sleep(tmp_path, wat, start_daemon)
    pad = "x" * 4000
    sleep = b"POST /call/sleep/main HTTP/1.1\r\nHost: t\r\nContent-Length: 4\r\n\r\n3000"
    echo = (
        f"POST /call/sleep/main HTTP/1.1\r\nHost: t\r\nX-Pad: {pad}\r\nContent-Length: 1\r\n\r\n1"
    ).encode()
    limit = 8 * 1024 * 1024  # far above the buffers of a paused reader, far below no bound
    with socket.create_connection(("127.0.0.1", daemon.port)) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 64 * 1024)
        sock.sendall(sleep)
        sock.setblocking(False)
        sent = 0
        stalled = False
        deadline = time.monotonic() + 2.5  # inside the 3 s sleep: nothing has been answered
        while sent < limit and time.monotonic() < deadline:
            try:
                # A short send leaves the rest of a request for the next one: the stream
                # stays whole requests back to back.
                sent += sock.send(echo[sent % len(echo) :])
            except BlockingIOError:
                _, writable, _ = select.select([], [sock], [], 1.0)
                if not writable:
                    stalled = True
                    break
        assert stalled, f"the daemon kept reading: {sent} bytes of requests went in"
        assert sent < limit
        sock.setblocking(True)
        sock.settimeout(CLI_TIMEOUT)
        # Finish a request cut short by the last send, then read every answer.
        rest = -sent % len(echo)
        if rest:
            sock.sendall(echo[-rest:])
        expected = 1 + (sent + rest) // len(echo)
        data = b""
        while data.count(b"HTTP/1.1 ") < expected or not data.endswith(b"1"):
            chunk = sock.recv(1 << 16)
            assert chunk, f"connection closed after {data.count(b'HTTP/1.1 ')} answers"
            data += chunk
    answers = data.split(b"HTTP/1.1 ")[1:]
    assert len(answers) == expected
    assert all(a.startswith(b"200 ") for a in answers)
    assert answers[0].endswith(b"3000")
    assert all(a.endswith(b"\r\n1") for a in answers[1:])
    assert daemon.stop() == 0


def _daemon_with_sleep(
    tmp_path: Path, wat: Callable[[str], bytes], start_daemon: Callable[..., Daemon]
) -> Daemon:
    """A daemon running guests/wat/host_sleep.wat as ``sleep`` (``main`` sleeps its payload,
    in ms, in the host)."""
    daemon = start_daemon(tmp_path / "data")
    daemon.wait_listening()
    status, _ = http(
        "POST",
        f"{daemon.url}/deploy?name=sleep",
        wat("host_sleep"),
        {"Content-Type": "application/wasm"},
    )
    assert status == 201
    return daemon


def test_what_one_app_can_take_from_a_daemon_is_bounded(
    tmp_path: Path, wat: Callable[[str], bytes], start_daemon: Callable[..., Daemon]
) -> None:
    """The flags reach a real daemon: idle instances give way at --max-instances, console
    lines are cut and rate-limited, the kv quota holds, caller-chosen operation names do not
    grow /metrics."""
    daemon = start_daemon(
        tmp_path / "data", "--max-instances", "2", "--guest-log-rate", "2", "--max-kv-keys", "2"
    )
    daemon.wait_listening()
    url = daemon.url
    for name, guest in (("a", "echo"), ("b", "echo"), ("log", "console_log"), ("kv", "hostcall")):
        status, _ = http(
            "POST", f"{url}/deploy?name={name}", wat(guest), {"Content-Type": "application/wasm"}
        )
        assert status == 201

    assert http("POST", f"{url}/call/a/echo", b"x") == (200, b"x")
    assert http("POST", f"{url}/call/b/echo", b"x") == (200, b"x")  # the cap: 2 idle instances
    assert http("POST", f"{url}/call/log/main", b"y" * (1 << 20)) == (200, b"logged")  # was 503
    cut = daemon.wait_log(lambda r: r.get("app") == "log", since=0)
    assert cut["msg"].endswith(f" [cut: {1 << 20} bytes]")
    assert len(cut["msg"]) < 4200

    for i in range(3):
        status, body = http(
            "POST", f"{url}/call/kv/main", b"\0".join([b"k%d" % i, b"kv", b"set", b"v"])
        )
        assert status == (200 if i < 2 else 500), body
    assert b"kv: quota exceeded" in body
    assert b"--max-kv-keys" in body

    for i in range(100):  # 2 console lines a call: most are dropped
        op = f"{i:03d}".ljust(4000, "x")
        assert http("POST", f"{url}/call/log/{op}", b"")[0] == 200
    status, metrics = http("GET", f"{url}/metrics")
    assert status == 200
    assert len(metrics) < 40_000  # 100 4 KB label values alone would be 400 KB
    assert b'assemblex_calls_total{app="log",op="_other",outcome="ok"}' in metrics
    dropped = [
        line for line in metrics.splitlines()
        if line.startswith(b'assemblex_guest_log_dropped_total{app="log"}')
    ]  # fmt: skip
    assert dropped
    assert float(dropped[0].split()[-1]) >= 100  # of 202: 20 at once, then 2 a second
    assert daemon.stop() == 0
