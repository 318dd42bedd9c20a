from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from assemblexd.errors import NotFound
from assemblexd.records import AppRecord
from assemblexd.storage import Storage


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
