"""Start-up on a data dir that is damaged, another node's, or missing its log; a damaged blob.

Real daemons (``assemblexd run`` subprocesses logging JSON) on real data dirs damaged as an
attacker or a failing disk would: a byte flipped in the middle of ``replica.log``, another
node's log, module bytes changed under their hash.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import struct
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from cluster import START_TIMEOUT, Daemon
from helpers import REPO_ROOT, daemon_env

pytestmark = pytest.mark.e2e


@pytest.fixture
def start_daemon(tmp_path: Path) -> Iterator[Callable[..., Daemon]]:
    """``start_daemon(data_dir, *flags)``: ``assemblexd run`` on a free port (not waited
    for); killed at the end if still running."""
    started: list[Daemon] = []

    def start(data_dir: Path, *extra: str) -> Daemon:
        daemon = Daemon(f"n{len(started)}", data_dir, tmp_path / f"n{len(started)}.log", args=extra)
        started.append(daemon)
        daemon.start()
        return daemon

    yield start
    for daemon in started:
        daemon.kill()


def _records(path: Path) -> list[tuple[int, int]]:
    """(offset, end) of every record in a crdt log file (format: crdt/_log.py)."""
    data = path.read_bytes()
    (n,) = struct.unpack_from(">H", data, 8)
    pos, out = 10 + n + 4, []
    while pos + 8 <= len(data):
        length, _ = struct.unpack_from(">II", data, pos)
        if not length:
            break
        out.append((pos, pos + 8 + length))
        pos += 8 + length
    return out


def _refused(daemon: Daemon) -> str:
    """Wait for ``daemon`` to exit; it must exit 2 with one log line, which is returned."""
    assert daemon.proc is not None
    assert daemon.proc.wait(timeout=START_TIMEOUT) == 2
    daemon.kill()  # joins the log reader
    assert len(daemon.lines) == 1, "\n".join(daemon.lines)
    record = json.loads(daemon.lines[0])
    assert record["level"] == "ERROR"
    return str(record["msg"])


def _flip_a_byte(log: Path, at: int) -> bytearray:
    """Flip one bit of the byte at ``at`` of ``log`` (bit rot); the file's new bytes."""
    raw = bytearray(log.read_bytes())
    raw[at] ^= 0x01
    log.write_bytes(bytes(raw))
    return raw


def _log_of_six_versions(
    data: Path, wat: Callable[[str], bytes], start_daemon: Callable[..., Daemon]
) -> Path:
    """A node on ``data`` deploys six versions of one app and stops: its ``replica.log``."""
    daemon = start_daemon(data)
    _deploy_versions(daemon, wat, 6)
    assert daemon.stop() == 0
    return data / "replica.log"


def _deploy_versions(daemon: Daemon, wat: Callable[[str], bytes], n: int) -> None:
    daemon.wait_listening()
    for i in range(n):
        # Custom sections make each version's module different bytes.
        wasm = wat("echo") + b"\x00\x05\x01v" + bytes([i]) + b"ab"
        assert daemon.deploy("app", wasm)["version"] == i + 1


def test_byte_flipped_mid_log_stops_start_and_keeps_the_file(
    tmp_path: Path, wat: Callable[[str], bytes], start_daemon: Callable[..., Daemon]
) -> None:
    data = tmp_path / "data"
    log = _log_of_six_versions(data, wat, start_daemon)
    records = _records(log)
    start, end = records[len(records) // 2]
    raw = _flip_a_byte(log, (start + end) // 2)

    msg = _refused(start_daemon(data))
    assert f"damaged record at byte {start}" in msg
    assert "replica.log" in msg
    assert log.read_bytes() == bytes(raw)  # not a byte zeroed

    raw[(start + end) // 2] ^= 0x01  # the operator restores the file: every version is back
    log.write_bytes(bytes(raw))
    daemon = start_daemon(data)
    daemon.wait_listening()
    assert daemon.get_json("/apps/app")["version"] == 6
    assert daemon.stop() == 0


def test_salvage_log_recovers_the_intact_records(
    tmp_path: Path, wat: Callable[[str], bytes], start_daemon: Callable[..., Daemon]
) -> None:
    data = tmp_path / "data"
    log = _log_of_six_versions(data, wat, start_daemon)
    start, end = _records(log)[1]  # early: the later versions' records follow it
    raw = _flip_a_byte(log, (start + end) // 2)
    assert "salvage-log" in _refused(start_daemon(data))

    done = subprocess.run(
        [sys.executable, "-m", "assemblexd", "salvage-log", "--data-dir", str(data)],
        cwd=REPO_ROOT,
        env=daemon_env(),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert f"skipped damaged bytes {start}-{end - 1}" in done.stdout
    assert (data / "replica.log.damaged").read_bytes() == bytes(raw)
    daemon = start_daemon(data)
    daemon.wait_listening()
    assert daemon.get_json("/apps/app")["version"] == 6
    assert daemon.stop() == 0


def test_another_nodes_log_stops_start(tmp_path: Path, start_daemon: Callable[..., Daemon]) -> None:
    first = start_daemon(tmp_path / "a")
    first.wait_listening()
    assert first.stop() == 0
    second = start_daemon(tmp_path / "b")
    second.wait_listening()
    assert second.stop() == 0
    shutil.copy(tmp_path / "a" / "replica.log", tmp_path / "b" / "replica.log")
    msg = _refused(start_daemon(tmp_path / "b"))
    assert "belongs to node" in msg


def test_a_file_as_data_dir_stops_start(
    tmp_path: Path, start_daemon: Callable[..., Daemon]
) -> None:
    (tmp_path / "data").write_text("not a directory")
    assert "data dir" in _refused(start_daemon(tmp_path / "data"))


def test_blobs_without_a_log_warn_that_the_store_starts_empty(
    tmp_path: Path, wat: Callable[[str], bytes], start_daemon: Callable[..., Daemon]
) -> None:
    data = tmp_path / "data"
    daemon = start_daemon(data)
    _deploy_versions(daemon, wat, 1)
    assert daemon.stop() == 0
    (data / "replica.log").unlink()
    daemon = start_daemon(data)
    record = daemon.wait_log(lambda r: "no replica.log" in str(r.get("msg")), since=0)
    assert record["level"] == "WARNING"
    assert "starting with an empty store" in record["msg"]
    daemon.wait_listening()
    assert daemon.stop() == 0


def test_a_blob_changed_under_its_hash_is_dropped_and_fetched_again(
    tmp_path: Path, wat: Callable[[str], bytes], start_daemon: Callable[..., Daemon]
) -> None:
    """Module bytes on disk that no longer match their sha256 are not run: the node deletes
    the blob and fetches the module again from a peer that has it."""
    a = start_daemon(tmp_path / "a")
    a.wait_listening()
    b = start_daemon(tmp_path / "b", "--join", a.url)
    b.wait_listening()
    wasm = wat("echo")
    sha = hashlib.sha256(wasm).hexdigest()
    since = b.mark()
    a.deploy("app", wasm)
    b.wait_running("app", sha, since)
    assert b.stop() == 0
    blob = tmp_path / "b" / "blobs" / sha
    shutil.rmtree(tmp_path / "b" / "compiled")  # else the compiled cache serves it
    blob.write_bytes(wat("host_sleep"))  # a valid module, but not the one the record names
    b.start()
    b.wait_listening()
    record = b.wait_log(lambda r: "does not match its sha256" in str(r.get("msg")), since=0)
    assert record["level"] == "WARNING"
    b.wait_running("app", sha, 0)
    assert b.call("app", "echo", b"hi") == (200, b"hi")
    assert hashlib.sha256(blob.read_bytes()).hexdigest() == sha
    assert b.stop() == 0
    assert a.stop() == 0
