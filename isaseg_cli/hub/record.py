"""The digest record beside each cached file (``<name>.sha256``): what was verified, and when.

A record line is ``<sha256> <size> <mtime_ns>``. It spares hashing a 200 MB checkpoint at every
start (about half a second), and it is the only reference for a file whose name carries no hash:
such a file is good only while its bytes still hash to the recorded digest.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True, slots=True)
class DigestRecord:
    sha256: str
    size: int
    mtime_ns: int


def record_path(path: Path) -> Path:
    return path.with_name(path.name + ".sha256")


def read_record(path: Path) -> DigestRecord | None:
    """The record beside ``path``, or None when there is none or it is unreadable."""
    try:
        digest, size, mtime = record_path(path).read_text().split()
        return DigestRecord(digest, int(size), int(mtime))
    except (OSError, ValueError):
        return None


def write_record(path: Path, digest: str) -> None:
    """Records ``digest`` for ``path`` as it is now; a read-only cache just skips the record."""
    record = record_path(path)
    tmp = record.with_name(record.name + ".tmp")
    try:
        stat = path.stat()
        tmp.write_text(f"{digest} {stat.st_size} {stat.st_mtime_ns}\n")
        os.replace(tmp, record)
    except OSError:
        tmp.unlink(missing_ok=True)


def current_digest(path: Path, record: DigestRecord | None) -> str:
    """``path``'s SHA-256: the recorded one while size and mtime are unchanged, else hashed."""
    stat = path.stat()
    if record is not None and (record.size, record.mtime_ns) == (stat.st_size, stat.st_mtime_ns):
        return record.sha256
    return sha256_of(path)


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as reader:
        while chunk := reader.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()
