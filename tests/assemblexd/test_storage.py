from __future__ import annotations

import hashlib
import os
import time
from pathlib import Path

import pytest

from assemblexd.errors import NotFound
from assemblexd.records import AppRecord
from assemblexd.storage import Collected, Storage


def record(name: str = "echo", version: int = 1, sha: str = "ab" * 32) -> AppRecord:
    return AppRecord(
        name=name,
        version=version,
        sha256=sha,
        size=3,
        deployed_at=1700000000.5,
        origin="node-a",
        capabilities=("host", "kv"),
    )


def test_creates_layout(tmp_path: Path) -> None:
    storage = Storage(tmp_path / "data")
    for sub in ("blobs", "compiled"):
        assert (tmp_path / "data" / sub).is_dir()
    assert storage.compiled_dir == tmp_path / "data" / "compiled"


def test_blob_round_trip(tmp_path: Path) -> None:
    storage = Storage(tmp_path)
    data = b"\0asm\x01\0\0\0 some module"
    sha = storage.put_blob(data)
    assert sha == hashlib.sha256(data).hexdigest()
    path = storage.blob_path(sha)
    assert path == tmp_path / "blobs" / sha
    assert storage.read_blob(sha) == data
    assert storage.put_blob(data) == sha  # idempotent
    assert [p.name for p in (tmp_path / "blobs").iterdir()] == [sha]


@pytest.mark.parametrize(
    "bad",
    ["", "ab", "AB" * 32, "g" * 64, "../" + "a" * 61, "a" * 63 + "/", "a" * 65, "a" * 64 + "\n"],
)
def test_blob_path_rejects_bad_hashes(tmp_path: Path, bad: str) -> None:
    storage = Storage(tmp_path)
    assert storage.blob_path(bad) is None
    with pytest.raises(NotFound):
        storage.read_blob(bad)


def test_unknown_blob(tmp_path: Path) -> None:
    storage = Storage(tmp_path)
    assert storage.blob_path("0" * 64) is None
    with pytest.raises(NotFound):
        storage.read_blob("0" * 64)


def test_leftover_temp_files_are_removed(tmp_path: Path) -> None:
    Storage(tmp_path)
    (tmp_path / "blobs" / ".tmp-def").write_bytes(b"half a blob")
    Storage(tmp_path)
    assert list((tmp_path / "blobs").iterdir()) == []


def test_reopen_keeps_blobs(tmp_path: Path) -> None:
    sha = Storage(tmp_path).put_blob(b"module")
    assert Storage(tmp_path).read_blob(sha) == b"module"


def test_record_round_trip_with_history() -> None:
    old = record("echo", 1)
    new = AppRecord(
        name="echo",
        version=2,
        sha256="cd" * 32,
        size=5,
        deployed_at=1.25,
        origin="b",
        capabilities=("kv",),
        history=(old,),
    )
    assert AppRecord.decode(new.encode()) == new
    assert "history" not in new.to_json(history=False)


HOUR = 3600.0


def _age(path: Path, seconds: float = 2 * HOUR) -> None:
    then = time.time() - seconds
    os.utime(path, (then, then))


def test_put_blob_refreshes_a_stored_blobs_mtime(tmp_path: Path) -> None:
    storage = Storage(tmp_path)
    sha = storage.put_blob(b"module")
    path = tmp_path / "blobs" / sha
    _age(path)
    assert storage.put_blob(b"module") == sha
    assert path.stat().st_mtime > time.time() - 60
    assert path.read_bytes() == b"module"


def test_load_blob_refreshes_the_mtime(tmp_path: Path) -> None:
    storage = Storage(tmp_path)
    sha = storage.put_blob(b"module")
    path = tmp_path / "blobs" / sha
    _age(path)
    assert storage.read_blob(sha) == b"module"
    assert path.stat().st_mtime < time.time() - HOUR  # reading for a peer is no use
    assert storage.load_blob(sha) == b"module"
    assert path.stat().st_mtime > time.time() - 60
    with pytest.raises(NotFound):
        storage.load_blob("0" * 64)
    with pytest.raises(NotFound):
        storage.load_blob("../x")


def test_load_blob_removes_a_blob_changed_under_its_hash(tmp_path: Path) -> None:
    storage = Storage(tmp_path)
    sha = storage.put_blob(b"module")
    path = tmp_path / "blobs" / sha
    path.write_bytes(b"modulE")  # a flipped bit on disk
    with pytest.raises(NotFound, match="damaged"):
        storage.load_blob(sha)
    assert not path.exists()  # so that the fetched copy is written, not the stale one kept
    assert storage.put_blob(b"module") == sha
    assert storage.load_blob(sha) == b"module"


def test_collect(tmp_path: Path) -> None:
    storage = Storage(tmp_path)
    blobs, compiled = tmp_path / "blobs", storage.compiled_dir
    used = storage.put_blob(b"used by a record")
    unused = storage.put_blob(b"unused and old")
    young = storage.put_blob(b"unused but young")
    missing = "0" * 64  # referenced, never fetched here
    deploying = "1" * 64  # compiled, its blob not stored yet (a deploy in flight)
    orphan = "2" * 64  # compiled, its blob collected by an earlier run
    for sha in (used, unused, young, missing, deploying, orphan):
        storage.compiled_path(sha, "50.0.0").write_bytes(b"c" * 10)
    storage.compiled_path(used, "49.0.0").write_bytes(b"c" * 7)  # before an upgrade
    (blobs / "notes").write_bytes(b"not ours")
    (compiled / ".tmp-x").write_bytes(b"a crash's leftover")
    for d in (blobs, compiled):
        for p in d.iterdir():
            _age(p)
    for p in (blobs / young, storage.compiled_path(young, "50.0.0")):
        os.utime(p)
    os.utime(storage.compiled_path(deploying, "50.0.0"))

    result = storage.collect({used, missing}, older_than=time.time() - HOUR, runtime="50.0.0")

    assert {p.name for p in blobs.iterdir()} == {used, young, "notes"}
    assert {p.name for p in compiled.iterdir()} == {
        storage.compiled_path(sha, "50.0.0").name for sha in (used, young, missing, deploying)
    } | {".tmp-x"}
    assert result == Collected(
        blobs_removed=1,
        blob_bytes_removed=len(b"unused and old"),
        compiled_removed=3,
        compiled_bytes_removed=10 + 10 + 7,
        blob_bytes=len(b"used by a record") + len(b"unused but young"),
        compiled_bytes=4 * 10,
    )
    assert result.removed
    again = storage.collect({used, missing}, older_than=time.time() - HOUR, runtime="50.0.0")
    assert not again.removed
