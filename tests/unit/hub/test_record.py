"""The digest record beside a cached file: trusted while size and mtime hold, else re-hashed."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from isaseg_cli.hub.record import (
    DigestRecord,
    current_digest,
    read_record,
    record_path,
    sha256_of,
    write_record,
)


def _file(tmp_path: Path, data: bytes = b"weights" * 1000) -> Path:
    path = tmp_path / "model-0123abcd.pth"
    path.write_bytes(data)
    return path


def test_a_record_round_trips_with_the_files_size_and_mtime(tmp_path: Path) -> None:
    path = _file(tmp_path)
    write_record(path, "ab" * 32)
    assert record_path(path) == tmp_path / "model-0123abcd.pth.sha256"
    stat = path.stat()
    assert read_record(path) == DigestRecord("ab" * 32, stat.st_size, stat.st_mtime_ns)
    assert sorted(p.name for p in tmp_path.iterdir()) == [path.name, path.name + ".sha256"]


def test_missing_or_garbled_records_read_as_none(tmp_path: Path) -> None:
    path = _file(tmp_path)
    assert read_record(path) is None
    record_path(path).write_text("not a record\n")
    assert read_record(path) is None


def test_the_recorded_digest_is_used_only_while_the_file_is_unchanged(tmp_path: Path) -> None:
    path = _file(tmp_path)
    real = hashlib.sha256(path.read_bytes()).hexdigest()
    assert sha256_of(path) == real
    write_record(path, "f" * 64)  # a stand-in digest: proves the record, not the bytes, answered
    assert current_digest(path, read_record(path)) == "f" * 64
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000))
    assert current_digest(path, read_record(path)) == real
    assert current_digest(path, None) == real


def test_an_unwritable_cache_skips_the_record(tmp_path: Path) -> None:
    path = tmp_path / "gone.pth"  # stat fails: nothing written, nothing left behind
    write_record(path, "ab" * 32)
    assert list(tmp_path.iterdir()) == []
