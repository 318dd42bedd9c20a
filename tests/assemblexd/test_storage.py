from __future__ import annotations

import hashlib
import logging
from pathlib import Path

import pytest

from assemblexd.errors import NotFound
from assemblexd.records import AppRecord
from assemblexd.storage import LocalKV, Storage, app_file_stem


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
    for sub in ("blobs", "apps", "compiled"):
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


def test_apps_save_load_delete(tmp_path: Path) -> None:
    storage = Storage(tmp_path)
    storage.save_app(record("echo", 1))
    storage.save_app(record("Other.App-2", 5))
    storage.save_app(record("echo", 2))  # replaces
    assert Storage(tmp_path).load_apps() == {
        "echo": record("echo", 2),
        "Other.App-2": record("Other.App-2", 5),
    }
    storage.delete_app("echo")
    storage.delete_app("echo")  # no error the second time
    assert set(storage.load_apps()) == {"Other.App-2"}


@pytest.mark.parametrize(
    "name", ["../../etc/passwd", "a/b", "..", ".", "x\0y", "é", "A", "a" * 300]
)
def test_app_names_never_escape_apps_dir(tmp_path: Path, name: str) -> None:
    storage = Storage(tmp_path / "data")
    storage.save_app(record(name))
    files = list((tmp_path / "data" / "apps").iterdir())
    assert len(files) == 1
    assert files[0].parent == tmp_path / "data" / "apps"
    assert [p for p in tmp_path.iterdir()] == [tmp_path / "data"]
    assert storage.load_apps() == {name: record(name)}
    storage.delete_app(name)
    assert storage.load_apps() == {}


def test_file_stems_are_distinct_across_case() -> None:
    assert app_file_stem("echo") == "echo"
    assert app_file_stem("Echo") != app_file_stem("echo")
    assert app_file_stem("a.b") != app_file_stem("a%2Eb")


def test_corrupt_app_file_is_skipped(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    storage = Storage(tmp_path)
    storage.save_app(record("good"))
    (tmp_path / "apps" / "bad.json").write_bytes(b"{not json")
    (tmp_path / "apps" / "partial.json").write_bytes(b'{"name": "partial"}')
    (tmp_path / "apps" / "list.json").write_bytes(b"[1, 2]")
    (tmp_path / "apps" / "binary.json").write_bytes(b"\xff\xfe\x00")
    # A record whose file name does not match its name (hand-copied or tampered) is not trusted.
    (tmp_path / "apps" / "liar.json").write_bytes(record("good", 9).encode())
    with caplog.at_level(logging.WARNING, logger="assemblexd.storage"):
        apps = storage.load_apps()
    assert apps == {"good": record("good")}
    assert len(caplog.records) == 5


def test_leftover_temp_files_are_removed(tmp_path: Path) -> None:
    Storage(tmp_path)
    (tmp_path / "apps" / ".tmp-abc").write_bytes(b"half a record")
    (tmp_path / "blobs" / ".tmp-def").write_bytes(b"half a blob")
    storage = Storage(tmp_path)
    assert list((tmp_path / "apps").iterdir()) == []
    assert list((tmp_path / "blobs").iterdir()) == []
    assert storage.load_apps() == {}


def test_kv_registers_and_counters(tmp_path: Path) -> None:
    with Storage(tmp_path).open_kv() as kv:
        assert kv.get("a") is None
        kv.set("a", b"1")
        kv.set("a", b"two")
        assert kv.get("a") == b"two"
        kv.delete("a")
        kv.delete("a")
        assert kv.get("a") is None
        assert kv.value("n") == 0
        assert kv.incr("n") == 1
        assert kv.incr("n", 5) == 6
        assert kv.incr("n", 0) == 6
        assert kv.value("n") == 6
        # Registers and counters are apart: the same key names two things.
        kv.set("n", b"register")
        assert kv.value("n") == 6
        assert kv.get("n") == b"register"
        with pytest.raises(ValueError, match="only grow"):
            kv.incr("n", -1)
        kv.set("bin", bytes(range(256)))
        assert kv.get("bin") == bytes(range(256))


def test_kv_reopen_keeps_data(tmp_path: Path) -> None:
    kv = LocalKV(tmp_path / "kv.sqlite3")
    kv.set("k", b"v")
    kv.incr("c", 3)
    kv.close()
    with LocalKV(tmp_path / "kv.sqlite3") as kv2:
        assert kv2.get("k") == b"v"
        assert kv2.value("c") == 3
        assert kv2.incr("c") == 4
        journal = kv2._db.execute("PRAGMA journal_mode").fetchone()[0]
        assert journal == "wal"


def test_reopen_keeps_blobs_and_apps(tmp_path: Path) -> None:
    storage = Storage(tmp_path)
    sha = storage.put_blob(b"module")
    storage.save_app(record("echo", 3, sha))
    again = Storage(tmp_path)
    assert again.read_blob(sha) == b"module"
    assert again.load_apps() == {"echo": record("echo", 3, sha)}
