"""A local cluster of real daemons for the e2e tests: processes on 127.0.0.1, joined by --join.

``LocalCluster(base_dir).start(5)`` starts five ``python -m assemblexd run`` processes (named
node0..node4, each with its own data dir and port, ``--no-mdns``), the others joining through
node0, and waits until every node lists all five members alive in ``/status``. A node can be
stopped (SIGTERM), killed (SIGKILL) and started again on the same port and data dir.

Waiting: a daemon logs JSON lines on stderr, read by a thread per process; tests wait on those
lines (``wait_log``: the node says it runs a version) rather than on the clock. What only a
remote daemon's state can tell (its member list, which record won) goes through ``poll``, the
one polling loop here: a bounded deadline and a short interval. Every line a daemon wrote is
kept in ``<base_dir>/<name>.log`` across restarts; ``log_tails`` is for failure reports.

Crashes and ERROR lines: ``whole_cluster`` (the body of a test module's autouse fixture) fails
a test during which a node exited by itself (a test stops or kills one only through
``Daemon.stop``/``kill``) or logged an ERROR line the test did not declare with
``@pytest.mark.expect_log_errors(pattern, ...)``.

TLS: a ``Daemon`` (or every node of a ``LocalCluster``) given ``tls``, the client context that
trusts its certificate, is reached at ``https://``; its certificate and the other ``run`` flags
it needs go in ``args``.

``tagged_guest(tag)`` builds a waPC module that answers ``tag`` to every call (after sleeping
``payload`` ms through the host when the payload is not empty): every tag is another module,
with its own sha256, and a call tells which version a node serves.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import re
import signal
import ssl
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, TypeVar

import pytest
import wasmtime
from helpers import REPO_ROOT, daemon_env, free_port

__all__ = [
    "CONVERGE_TIMEOUT",
    "Daemon",
    "LocalCluster",
    "NodeError",
    "crashed",
    "http",
    "log_errors",
    "poll",
    "tagged_guest",
]

START_TIMEOUT = 30.0
"""Seconds for a daemon to log that it listens (imports and wasmtime take a while on 2 cores)."""
STOP_TIMEOUT = 20.0
CONVERGE_TIMEOUT = 30.0
"""Seconds for the cluster to agree on something (members, a version): generous, the machine
is shared; the propagation itself takes well under a second."""
POLL_INTERVAL = 0.05
HTTP_TIMEOUT = 30.0
READ_TOKEN = "e2e-read-token"
"""A ``--read-token`` for clusters whose tests read peers' URLs (the anonymous view has none)."""

T = TypeVar("T")


class NodeError(AssertionError):
    """A daemon did not do what a test waited for (carries the reason and the log tails)."""


# -- HTTP ----------------------------------------------------------------------------------------


def http(
    method: str,
    url: str,
    body: bytes | None = None,
    headers: dict[str, str] | None = None,
    timeout: float = HTTP_TIMEOUT,
    context: ssl.SSLContext | None = None,
) -> tuple[int, bytes]:
    """Status and body of one request; HTTP errors are answers, not exceptions.

    ``context`` verifies an ``https://`` server (None: the system's trust store).
    """
    req = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=timeout, context=context) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def poll(
    check: Callable[[], T | None],
    what: str,
    timeout: float = CONVERGE_TIMEOUT,
    describe: Callable[[], str] | None = None,
) -> T:
    """``check()`` every POLL_INTERVAL until it returns something other than None or False.

    Connection errors and `NodeError` (an answer that is not the awaited one yet) count as
    "not yet". On timeout, raises NodeError saying ``what`` was awaited, the last error and
    ``describe()`` (the state that did not converge).
    """
    deadline = time.monotonic() + timeout
    last_error: BaseException | None = None
    while True:
        try:
            result = check()
        except (OSError, ValueError, NodeError) as exc:
            # Refused, reset, bad JSON from a dying node, or an answer that is not the one
            # awaited yet (a 404 from a node the record has not reached): all "not yet".
            result, last_error = None, exc
        if result is not None and result is not False:
            return result
        if time.monotonic() > deadline:
            detail = f"\nlast error: {last_error!r}" if last_error else ""
            if describe is not None:
                with contextlib.suppress(Exception):
                    detail += "\n" + describe()
            raise NodeError(f"timed out after {timeout:.0f}s waiting for {what}{detail}")
        time.sleep(POLL_INTERVAL)


# -- guests --------------------------------------------------------------------------------------

_TAG_RE = re.compile(r"[A-Za-z0-9_.-]{1,200}")

_TAGGED_WAT = """
;; tagged guest: answers its tag; a non-empty payload is first slept on (host.sleep, in ms).
(module
  (import "wapc" "__guest_request" (func $guest_request (param i32 i32)))
  (import "wapc" "__guest_response" (func $guest_response (param i32 i32)))
  (import "wapc" "__guest_error" (func $guest_error (param i32 i32)))
  (import "wapc" "__host_call"
    (func $host_call (param i32 i32 i32 i32 i32 i32 i32 i32) (result i32)))
  (import "wapc" "__host_error_len" (func $host_error_len (result i32)))
  (import "wapc" "__host_error" (func $host_error (param i32)))
  (memory (export "memory") 2)
  (data (i32.const 0) "host")
  (data (i32.const 16) "sleep")
  (data (i32.const 32) "payload or operation too long") ;; 29 bytes
  (data (i32.const 256) "@TAG@")
  (func (export "__guest_call") (param $op_len i32) (param $msg_len i32) (result i32)
    ;; the operation goes at 1024 (at most 1024 bytes), the payload at 65536 (at most 1024),
    ;; a host error at 69632 (at most 60000 bytes, within the two pages)
    (if (i32.or (i32.gt_u (local.get $op_len) (i32.const 1024))
                (i32.gt_u (local.get $msg_len) (i32.const 1024)))
      (then
        (call $guest_error (i32.const 32) (i32.const 29))
        (return (i32.const 0))))
    (call $guest_request (i32.const 1024) (i32.const 65536))
    (if (local.get $msg_len)
      (then
        (if (i32.eqz
              (call $host_call
                (i32.const 0) (i32.const 0) (i32.const 0) (i32.const 4)
                (i32.const 16) (i32.const 5) (i32.const 65536) (local.get $msg_len)))
          (then
            (call $host_error (i32.const 69632))
            (call $guest_error (i32.const 69632)
              (select (call $host_error_len) (i32.const 60000)
                      (i32.lt_u (call $host_error_len) (i32.const 60000))))
            (return (i32.const 0))))))
    (call $guest_response (i32.const 256) (i32.const @LEN@))
    (i32.const 1)))
"""


def tagged_guest(tag: str) -> bytes:
    """A module that answers ``tag`` (letters, digits, ``_.-``) to every call."""
    if not _TAG_RE.fullmatch(tag):
        raise ValueError(f"bad tag {tag!r}")
    text = _TAGGED_WAT.replace("@TAG@", tag).replace("@LEN@", str(len(tag)))
    return bytes(wasmtime.wat2wasm(text))


# -- one daemon ----------------------------------------------------------------------------------


class Daemon:
    """One ``assemblexd run`` process that can be stopped, killed and started again.

    The port and the data dir stay the same across restarts, so a restarted node is the same
    member (same node id, same URL) to its peers.

    ``args`` are more ``run`` flags. ``tls``, the client context that verifies the daemon's
    certificate, makes its URL ``https://`` (the certificate itself goes in ``args``).
    """

    def __init__(
        self,
        name: str,
        data_dir: Path,
        log_path: Path,
        join: Sequence[str] = (),
        *,
        args: Sequence[str] = (),
        tls: ssl.SSLContext | None = None,
    ) -> None:
        self.name = name
        self.data_dir = data_dir
        self.log_path = log_path
        self.join = list(join)
        self.args = list(args)
        self.tls = tls
        self.port = free_port()
        self.url = f"{'https' if tls is not None else 'http'}://127.0.0.1:{self.port}"
        self.lines: list[str] = []
        """Every line of the current process; a restart starts a new list."""
        self.proc: subprocess.Popen[str] | None = None
        self.stopped_on_purpose = False
        """Whether the process is down because a test stopped or killed it (not a crash)."""
        self._cond = threading.Condition()
        self._eof = True
        self._reader: threading.Thread | None = None

    # -- process ----------------------------------------------------------------------------

    def start(self) -> None:
        """Spawn the process (``wait_listening`` waits for it to serve)."""
        assert self.proc is None or self.proc.poll() is not None, f"{self.name} is running"
        # The last process's reader first (a crashed one was not joined): its end-of-file
        # must not land on the new process's log.
        self._join_reader()
        argv = [
            sys.executable, "-m", "assemblexd", "run",
            "--port", str(self.port),
            "--name", self.name,
            "--data-dir", str(self.data_dir),
            "--no-mdns",
            "--log-format", "json",
            *(arg for url in self.join for arg in ("--join", url)),
            *self.args,
        ]  # fmt: skip
        with self._cond:
            self.lines = []
            self._eof = False
        self.stopped_on_purpose = False
        self.proc = subprocess.Popen(
            argv,
            cwd=REPO_ROOT,
            env=daemon_env(),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        self._reader = threading.Thread(
            target=self._read, args=(self.proc,), name=f"log-{self.name}", daemon=True
        )
        self._reader.start()

    def _read(self, proc: subprocess.Popen[str]) -> None:
        assert proc.stderr is not None
        with self.log_path.open("a", encoding="utf-8") as log:
            log.write(f"--- {self.name} started: pid {proc.pid}, port {self.port}\n")
            for raw in proc.stderr:
                line = raw.rstrip("\n")
                log.write(line + "\n")
                log.flush()
                with self._cond:
                    self.lines.append(line)
                    self._cond.notify_all()
            log.write(f"--- {self.name} exited: {proc.wait()}\n")
        with self._cond:
            self._eof = True
            self._cond.notify_all()

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def wait_listening(self) -> dict[str, Any]:
        """Wait for the "listening" log record, and return it (fails if the process exits
        first, or announces another URL)."""
        record = self.wait_log(lambda r: "url" in r, since=0, timeout=START_TIMEOUT)
        assert record["url"] == self.url, record
        return record

    def stop(self) -> int:
        """SIGTERM, and the exit status; kills it and fails if it does not stop in time."""
        assert self.proc is not None
        self.stopped_on_purpose = True
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            rc = self.proc.wait(timeout=STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            self.kill()
            raise NodeError(f"{self.name} did not stop on SIGTERM in {STOP_TIMEOUT}s") from None
        self._join_reader()
        return rc

    def kill(self) -> None:
        """SIGKILL: no shutdown at all, as a power cut."""
        self.stopped_on_purpose = True
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self._join_reader()

    def restart(self) -> None:
        """Start again on the same port and data dir, and wait until it listens."""
        self.start()
        self.wait_listening()

    def _join_reader(self) -> None:
        if self._reader is not None:
            self._reader.join(timeout=5)

    # -- log events -------------------------------------------------------------------------

    def mark(self) -> int:
        """A position in the log of the current process: ``wait_log(since=mark)`` looks after it."""
        with self._cond:
            return len(self.lines)

    def wait_log(
        self,
        match: Callable[[dict[str, Any]], bool],
        since: int,
        timeout: float = CONVERGE_TIMEOUT,
    ) -> dict[str, Any]:
        """The first JSON log record after line ``since`` that ``match`` accepts."""
        deadline = time.monotonic() + timeout
        seen = since
        with self._cond:
            while True:
                while seen < len(self.lines):
                    try:
                        record = json.loads(self.lines[seen])
                    except ValueError:
                        record = None
                    seen += 1
                    if isinstance(record, dict) and match(record):
                        return record
                if self._eof:
                    raise NodeError(f"{self.name} exited while a test waited on its log")
                left = deadline - time.monotonic()
                if left <= 0:
                    raise NodeError(f"{self.name} did not log the awaited event in {timeout}s")
                self._cond.wait(left)

    def wait_running(self, app: str, sha256: str, since: int) -> int:
        """Wait until the node says it runs ``app`` with module ``sha256``; the version."""
        pattern = re.compile(rf"(?:running|deployed) {re.escape(app)} v(\d+) \({sha256[:12]}[,)]")
        record = self.wait_log(lambda r: bool(pattern.match(str(r.get("msg", "")))), since)
        found = pattern.match(record["msg"])
        assert found is not None
        return int(found.group(1))

    def wait_unloaded(self, app: str, since: int) -> None:
        """Wait until the node says it stopped running ``app`` (undeployed)."""
        text = f"unloaded {app} (undeployed)"
        self.wait_log(lambda r: r.get("msg") == text, since)

    # -- HTTP -------------------------------------------------------------------------------

    @property
    def read_headers(self) -> dict[str, str]:
        """The Authorization header of the daemon's ``--read-token``, if it has one."""
        args = self.args
        if "--read-token" in args[:-1]:
            return {"Authorization": f"Bearer {args[args.index('--read-token') + 1]}"}
        return {}

    def get_json(self, path: str) -> Any:
        headers = {"Accept": "application/json", **self.read_headers}
        status, body = http("GET", self.url + path, headers=headers, context=self.tls)
        if status != 200:
            raise NodeError(f"{self.name} GET {path}: {status} {body[:300]!r}")
        return json.loads(body)

    def status(self) -> dict[str, Any]:
        data: dict[str, Any] = self.get_json("/status")
        return data

    def call(self, app: str, op: str = "main", payload: bytes = b"") -> tuple[int, bytes]:
        return http("POST", f"{self.url}/call/{app}/{op}", payload, context=self.tls)

    def deploy(self, app: str, wasm: bytes) -> dict[str, Any]:
        """``POST /deploy`` of a raw module; the 201 answer."""
        status, body = http(
            "POST",
            f"{self.url}/deploy?name={app}",
            wasm,
            {"Content-Type": "application/wasm"},
            context=self.tls,
        )
        if status != 201:
            raise NodeError(f"deploy of {app} on {self.name}: {status} {body[:300]!r}")
        answer: dict[str, Any] = json.loads(body)
        assert answer["sha256"] == hashlib.sha256(wasm).hexdigest()
        return answer

    def __repr__(self) -> str:
        return f"<Daemon {self.name} {self.url} {'up' if self.running else 'down'}>"


# -- a cluster -----------------------------------------------------------------------------------


class LocalCluster:
    """Daemons named node0, node1, ... under ``base_dir``; node0 is everyone's --join seed.

    ``args`` and ``tls`` are every node's (see ``Daemon``); ``add`` can override them.
    """

    def __init__(
        self, base_dir: Path, *, args: Sequence[str] = (), tls: ssl.SSLContext | None = None
    ) -> None:
        self.base_dir = base_dir
        self.args = list(args)
        self.tls = tls
        self.nodes: list[Daemon] = []

    def add(
        self,
        *,
        join: Daemon | None = None,
        args: Sequence[str] | None = None,
        tls: ssl.SSLContext | None = None,
    ) -> Daemon:
        """Create (not start) the next node, joining through ``join`` (default node0), with
        ``args`` and ``tls`` (default: the cluster's)."""
        name = f"node{len(self.nodes)}"
        seed = join if join is not None else (self.nodes[0] if self.nodes else None)
        daemon = Daemon(
            name,
            self.base_dir / name,
            self.base_dir / f"{name}.log",
            join=[seed.url] if seed is not None else [],
            args=self.args if args is None else args,
            tls=self.tls if tls is None else tls,
        )
        self.nodes.append(daemon)
        return daemon

    def start(self, n: int) -> list[Daemon]:
        """Start ``n`` more nodes at once, then wait until all nodes see each other."""
        new = [self.add() for _ in range(n)]
        if self.nodes[0] in new:
            new[0].start()  # the seed listens first: the others' first join attempt succeeds
            new[0].wait_listening()
        for daemon in new:
            if not daemon.running:
                daemon.start()
        for daemon in new:
            daemon.wait_listening()
        self.wait_members()
        return new

    @property
    def up(self) -> list[Daemon]:
        return [d for d in self.nodes if d.running]

    def wait_members(self, nodes: Iterable[Daemon] | None = None) -> None:
        """Wait until each of ``nodes`` (default: the running ones) lists every running node as
        an alive member and has at least one active neighbour."""
        nodes = list(self.up if nodes is None else nodes)
        want = {d.name for d in self.up}

        def settled(d: Daemon) -> bool:
            status = d.status()
            alive = {m.get("name") for m in status["members"] if m.get("alive")}
            return want <= alive and bool(status["active"])

        poll(
            lambda: all(settled(d) for d in nodes) or None,
            f"{len(want)} alive members on every node",
            describe=self.describe,
        )

    def marks(self, nodes: Iterable[Daemon] | None = None) -> dict[str, int]:
        return {d.name: d.mark() for d in (self.up if nodes is None else nodes)}

    def wait_running(
        self, app: str, sha256: str, marks: dict[str, int], nodes: Iterable[Daemon] | None = None
    ) -> dict[str, int]:
        """Wait until each node (default: those in ``marks``) logs it runs ``app`` at
        ``sha256`` after its mark; the version each one runs."""
        chosen = [d for d in self.nodes if d.name in marks] if nodes is None else list(nodes)
        return {d.name: d.wait_running(app, sha256, marks[d.name]) for d in chosen}

    def describe(self) -> str:
        """Each running node's view of the cluster, for failure messages."""
        out = []
        for d in self.nodes:
            if not d.running:
                out.append(f"{d.name}: down")
                continue
            try:
                s = d.status()
            except (OSError, ValueError, NodeError) as exc:
                out.append(f"{d.name}: /status failed: {exc!r}")
                continue
            members = ", ".join(
                f"{m.get('name')}{'' if m.get('alive') else '(gone)'}" for m in s["members"]
            )
            apps = ", ".join(
                f"{a['name']} v{a['version']} {a['sha256'][:8]} running={a.get('running')}"
                for a in s["apps"]
            )
            out.append(f"{d.name}: active={len(s['active'])} members=[{members}] apps=[{apps}]")
        return "\n".join(out)

    def log_tails(self, lines: int = 40) -> str:
        out = []
        for d in self.nodes:
            try:
                text = d.log_path.read_text("utf-8", errors="replace").splitlines()
            except OSError:
                continue
            out.append(f"==== {d.name} ({d.log_path}) ====")
            out.extend(text[-lines:])
        return "\n".join(out)

    def close(self) -> None:
        """Stop every node (SIGTERM, then SIGKILL for a node that hangs)."""
        for d in self.nodes:
            d.stopped_on_purpose = True
            if d.running:
                assert d.proc is not None
                d.proc.send_signal(signal.SIGTERM)
        for d in self.nodes:
            if d.proc is None:
                continue
            try:
                d.proc.wait(timeout=STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                d.kill()
            d._join_reader()


def crashed(cluster: LocalCluster) -> list[Daemon]:
    """The nodes whose process ended without a test stopping or killing it."""
    return [
        d
        for d in cluster.nodes
        if d.proc is not None and not d.running and not d.stopped_on_purpose
    ]


ERROR_LEVELS = frozenset({"ERROR", "CRITICAL"})


def log_errors(daemon: Daemon, since: int, allowed: Sequence[str] = ()) -> list[str]:
    """The ERROR (and CRITICAL) records ``daemon`` wrote to its log file after byte ``since``
    whose message matches none of the ``allowed`` patterns (``re.search``)."""
    try:
        with daemon.log_path.open("rb") as f:
            f.seek(since)
            text = f.read().decode("utf-8", errors="replace")
    except OSError:
        return []
    patterns = [re.compile(p) for p in allowed]
    found = []
    for line in text.splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if not isinstance(record, dict) or record.get("level") not in ERROR_LEVELS:
            continue
        text_of = f"{record.get('msg', '')}\n{record.get('exc', '')}"
        if not any(p.search(text_of) for p in patterns):
            found.append(line)
    return found


def _log_size(daemon: Daemon) -> int:
    try:
        return daemon.log_path.stat().st_size
    except OSError:
        return 0


def whole_cluster(cluster: LocalCluster, request: Any, log_lines: int = 40) -> Iterator[None]:
    """Body of a test's autouse fixture: every node up before it; no node crashed and no
    unexpected ERROR line logged during it; logs after a failure.

    Use as ``yield from whole_cluster(cluster, request)`` in a fixture of the test module.

    A node a test stopped or killed and left down is started again. A node whose process
    ended by itself is a crash: the test during which it happened fails (and the node is
    started again for the next one). Every ERROR or CRITICAL line a node logs during a test
    fails it, unless the test expects it: ``@pytest.mark.expect_log_errors(pattern, ...)``
    (regular expressions searched in the line's message and traceback).
    """
    found = crashed(cluster)
    if found:  # between tests, or before the first: nothing else to blame
        for d in found:
            d.stopped_on_purpose = True
        pytest.fail(
            f"node(s) {', '.join(d.name for d in found)} exited by themselves before"
            f" {request.node.name}\n{cluster.log_tails(log_lines)}",
            pytrace=False,
        )
    down = [d for d in cluster.nodes if not d.running]
    for d in down:
        d.restart()
    if down:
        cluster.wait_members()
    sizes = {d.name: _log_size(d) for d in cluster.nodes}
    failed = request.session.testsfailed
    yield
    if request.session.testsfailed > failed:
        reporter = request.config.pluginmanager.get_plugin("terminalreporter")
        if reporter is not None:
            reporter.write_sep("-", f"cluster after {request.node.name}")
            reporter.write_line(cluster.describe())
            reporter.write_sep("-", "last log lines of every node")
            reporter.write_line(cluster.log_tails(log_lines))
    problems = []
    found = crashed(cluster)
    for d in found:
        d.stopped_on_purpose = True  # reported here once; the next test starts it again
        assert d.proc is not None
        problems.append(f"{d.name} exited by itself (status {d.proc.returncode})")
    marker = request.node.get_closest_marker("expect_log_errors")
    allowed = [str(p) for p in marker.args] if marker is not None else []
    for d in cluster.nodes:
        errors = log_errors(d, sizes.get(d.name, 0), allowed)
        if errors:
            problems.append(f"{d.name} logged unexpected ERROR lines:\n" + "\n".join(errors[:20]))
    if problems:
        pytest.fail("\n".join(problems) + f"\n{cluster.log_tails(log_lines)}", pytrace=False)
