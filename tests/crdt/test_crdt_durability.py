"""Durability: reopen, SIGKILL mid-writes, torn and corrupt tails, compaction, group commit."""

from __future__ import annotations

import os
import signal
import struct
import subprocess
import sys
import threading
import zlib
from pathlib import Path

import pytest

import crdt._log
import crdt._replica
from crdt import ClosedError, DamagedLogError, Replica, StorageError
from crdt.testing import FakeClock, canonical, exchange

REPO = Path(__file__).resolve().parents[2]


def test_reopen_restores_everything(tmp_path: Path) -> None:
    path = tmp_path / "a.log"
    peer = Replica("p")
    peer.set("from-peer", b"x")
    peer.incr("c", 7)
    with Replica("a", path) as r:
        r.set("k", b"v")
        r.set("gone", b"v")
        r.delete("gone")
        r.incr("c", 2)
        exchange(r, peer)
        state, digest, version = canonical(r), r.digest(), r.local_version()
    with Replica("a", path) as r:
        assert canonical(r) == state
        assert r.digest() == digest
        assert r.local_version() == version
        assert r.get("gone") is None
        assert r.value("c") == 9
        assert r.delta_chunk(peer.digest()).delta is None  # knows what it holds


def test_clock_never_goes_backwards(tmp_path: Path) -> None:
    path = tmp_path / "a.log"
    clock = FakeClock()
    with Replica("a", path, clock=clock) as r:
        r.set("k", b"before")
        before = r.local_version()
    clock.now -= 3600  # the wall clock was set back an hour across the restart
    other = Replica("z", clock=clock)
    other.set("k", b"z's write, same wall time")
    with Replica("a", path, clock=clock) as r:
        r.set("k", b"after")
        assert r.local_version() > before
        exchange(r, other)
        assert r.get("k") == other.get("k") == b"after"


def test_log_belongs_to_one_node(tmp_path: Path) -> None:
    path = tmp_path / "a.log"
    Replica("a", path).close()
    with pytest.raises(StorageError, match="belongs to node"):
        Replica("b", path)
    data = bytearray(path.read_bytes())
    data[9] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(StorageError, match="header"):
        Replica("a", path)
    path.write_bytes(b"hello, not a log")
    with pytest.raises(StorageError, match="not a crdt log"):
        Replica("a", path)
    with pytest.raises(StorageError, match="cannot open"):
        Replica("a", tmp_path / "no such dir" / "a.log")


def _records(path: Path) -> list[tuple[int, int]]:
    """(offset, end) of every record in a log file."""
    data = path.read_bytes()
    (n,) = struct.unpack_from(">H", data, 8)
    pos = 10 + n + 4
    out = []
    while True:
        length, _ = struct.unpack_from(">II", data, pos)
        if not length:
            return out
        out.append((pos, pos + 8 + length))
        pos += 8 + length


def _write_some(path: Path, n: int) -> None:
    with Replica("a", path) as r:
        for i in range(n):
            r.set(f"k{i}", f"v{i}".encode())


def _damage(path: Path, how: str) -> None:
    start, end = _records(path)[-1]
    with open(path, "r+b") as f:
        if how == "torn":  # the last record's second half never reached the disk
            f.seek((start + end) // 2)
            f.write(bytes(end - (start + end) // 2))
        elif how == "flipped":
            f.seek(end - 1)
            byte = f.read(1)[0]
            f.seek(end - 1)
            f.write(bytes([byte ^ 0x01]))
        elif how == "garbage":  # junk after the last record, where zeros should be
            f.seek(end)
            f.write(b"\x00\x00\x00\x05junk!and more junk")
        elif how == "huge-length":
            f.seek(start)
            f.write(struct.pack(">I", 0xFFFFFFF0))
        elif how == "short-file":
            f.truncate(end - 3)
        elif how == "bad-payload":  # a valid checksum over bytes that are not a delta
            payload = b"not a delta at all"
            f.seek(start)
            f.write(struct.pack(">II", len(payload), zlib.crc32(payload)) + payload)
            f.write(bytes(end - start - 8 - len(payload)))


@pytest.mark.parametrize(
    "how", ["torn", "flipped", "garbage", "huge-length", "short-file", "bad-payload"]
)
def test_corrupt_tail_is_skipped(tmp_path: Path, how: str) -> None:
    path = tmp_path / "a.log"
    _write_some(path, 20)
    _damage(path, how)
    with Replica("a", path) as r:
        lost = 0 if how == "garbage" else 1
        assert r.get("k18") == b"v18"
        assert (r.get("k19") is None) == bool(lost)
        r.set("new", b"after the repair")
    with Replica("a", path) as r:  # what was written after the repair is read back
        assert r.get("new") == b"after the repair"
        assert r.get("k0") == b"v0"
        assert len(r.keys()) == 20 - lost + 1


@pytest.mark.parametrize("where", ["payload", "length", "checksum", "bad-payload"])
def test_damage_before_intact_records_is_refused_and_kept(tmp_path: Path, where: str) -> None:
    """One byte flipped in the middle of the log: the records after it were acknowledged, so
    opening fails and the file is left byte for byte as it was (before: zeroed from there)."""
    path = tmp_path / "a.log"
    _write_some(path, 20)
    start, end = _records(path)[9]
    with open(path, "r+b") as f:
        if where == "bad-payload":  # a valid checksum over bytes that are not a delta
            payload = b"x" * (end - start - 8)
            f.seek(start)
            f.write(struct.pack(">II", len(payload), zlib.crc32(payload)) + payload)
        else:
            at = {"length": start + 3, "checksum": start + 5, "payload": (start + end) // 2}[where]
            f.seek(at)
            byte = f.read(1)[0]
            f.seek(at)
            f.write(bytes([byte ^ 0x10]))
    damaged = path.read_bytes()
    with pytest.raises(DamagedLogError, match=f"byte {start}") as info:
        Replica("a", path)
    assert isinstance(info.value, StorageError)
    assert "unchanged" in str(info.value)
    assert path.read_bytes() == damaged
    with pytest.raises(DamagedLogError):  # and again: nothing was "repaired" meanwhile
        Replica("a", path)


@pytest.mark.parametrize("where", ["payload", "length", "bad-payload"])
def test_salvage_keeps_every_intact_record_and_the_damaged_file(tmp_path: Path, where: str) -> None:
    path = tmp_path / "a.log"
    _write_some(path, 20)
    records = _records(path)
    start, end = records[9]
    with open(path, "r+b") as f:
        if where == "bad-payload":
            payload = b"x" * (end - start - 8)
            f.seek(start)
            f.write(struct.pack(">II", len(payload), zlib.crc32(payload)) + payload)
        else:
            at = start + 2 if where == "length" else (start + end) // 2
            f.seek(at)
            byte = f.read(1)[0]
            f.seek(at)
            f.write(bytes([byte ^ 0x40]))
    damaged = path.read_bytes()
    with Replica("a", path, salvage=True) as r:
        assert r.salvaged == [(start, end)]
        assert r.damaged_copy == f"{path}.damaged"
        assert sorted(r.keys()) == sorted(f"k{i}" for i in range(20) if i != 9)
        r.set("new", b"after the salvage")
    assert Path(f"{path}.damaged").read_bytes() == damaged  # the original, for the operator
    with Replica("a", path) as r:  # a clean log now: opens without salvage
        assert r.get("k19") == b"v19"
        assert r.get("new") == b"after the salvage"
        assert r.salvaged == []
    with Replica("a", path, salvage=True) as r:  # nothing to salvage: nothing done
        assert (r.salvaged, r.damaged_copy) == ([], None)


def test_damage_in_a_long_record_before_the_last_is_refused(tmp_path: Path) -> None:
    """A record longer than the search checksums at every offset, damaged in its length."""
    path = tmp_path / "a.log"
    with Replica("a", path) as r:
        r.set("big", bytes(range(256)) * 1024)
        r.set("after", b"acknowledged")
    start, _ = _records(path)[0]
    with open(path, "r+b") as f:
        f.seek(start + 1)
        f.write(b"\xff")
    with pytest.raises(DamagedLogError):
        Replica("a", path)


WRITER = """
import sys
from crdt import Replica
r = Replica("w", sys.argv[1])
i = int(sys.argv[2])
while True:
    r.set(f"k{i}", b"v%d" % i)
    n = r.incr("count")
    print(i, n, flush=True)
    i += 1
"""


def test_sigkill_mid_writes_loses_no_acknowledged_write(tmp_path: Path) -> None:
    path = tmp_path / "w.log"
    acked = 0
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    for round_ in range(3):
        proc = subprocess.Popen(
            [sys.executable, "-c", WRITER, str(path), str(acked)],
            stdout=subprocess.PIPE,
            env=env,
            text=True,
        )
        assert proc.stdout is not None
        target = acked + 50 + 37 * round_
        for line in proc.stdout:
            i, n = map(int, line.split())
            assert n == i + 1  # the counter kept every earlier increment
            acked = i + 1
            if acked >= target:
                break
        proc.send_signal(signal.SIGKILL)  # mid-write: it keeps writing until the signal lands
        proc.wait()
        proc.stdout.close()
        with Replica("w", path) as r:
            for i in range(acked):
                assert r.get(f"k{i}") == b"v%d" % i, (round_, i)
            assert r.value("count") >= acked
            acked = r.value("count")  # writes done but not yet acknowledged count too
            assert all(r.get(f"k{i}") is not None for i in range(acked))


def test_compaction_keeps_state_and_bounds_the_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(crdt._replica, "_COMPACT_MIN", 2 << 10)
    path = tmp_path / "a.log"
    with Replica("a", path) as r:
        assert r._log is not None
        for i in range(300):
            r.set(f"k{i % 10}", b"x" * 50)
            r.incr("c")
            assert r._log.size < 8 << 10
        state = canonical(r)
    assert not Path(str(path) + ".compact").exists()
    with Replica("a", path) as r:
        assert canonical(r) == state
        assert r.value("c") == 300


def test_a_long_log_is_compacted_at_open(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(crdt._replica, "_REPLAY_SLACK", 100)
    path = tmp_path / "a.log"
    with Replica("a", path) as r:
        for _ in range(200):
            r.incr("c")
        assert r._log is not None
        size = r._log.size
    with Replica("a", path) as r:
        assert r.value("c") == 200
        assert r._log is not None
        assert r._log.size < size / 10


def test_interrupted_compaction_leaves_the_log(tmp_path: Path) -> None:
    path = tmp_path / "a.log"
    _write_some(path, 5)
    Path(str(path) + ".compact").write_bytes(b"half a snapshot")
    with Replica("a", path) as r:
        assert len(r.keys()) == 5
    assert not Path(str(path) + ".compact").exists()


def test_group_commit_from_threads(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    batches = 0
    real = crdt._log.Log._write

    def counting(self: crdt._log.Log, data: bytes) -> None:
        nonlocal batches
        batches += 1
        real(self, data)

    monkeypatch.setattr(crdt._log.Log, "_write", counting)
    path = tmp_path / "a.log"
    with Replica("a", path) as r:

        def work(t: int) -> None:
            for i in range(20):
                r.set(f"t{t}/k{i}", b"v")
                r.incr("c")

        threads = [threading.Thread(target=work, args=(t,)) for t in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert batches < 8 * 20 * 2  # several writes shared an fsync
    with Replica("a", path) as r:
        assert len(r.keys()) == 8 * 20
        assert r.value("c") == 8 * 20


def test_a_failed_fsync_fails_the_replica(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "a.log"
    with Replica("a", path) as r:
        r.set("ok", b"1")

        def broken(fd: int) -> None:
            raise OSError(5, "Input/output error")

        monkeypatch.setattr(os, "fdatasync", broken)
        with pytest.raises(StorageError, match="write failed"):
            r.set("k", b"2")
        monkeypatch.undo()
        with pytest.raises(StorageError):
            r.set("k", b"3")
        with pytest.raises(StorageError):
            r.delta(r.digest())
    with Replica("a", path) as r:
        assert r.get("ok") == b"1"
        r.set("k", b"4")
        assert r.get("k") == b"4"
    r.close()
    with pytest.raises(ClosedError):
        r.incr("c")
