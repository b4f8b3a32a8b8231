"""What a cache folder holds on disk, and emptying it (``isaseg cache``)."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from isaseg_cli.errors import OutputError


@dataclass(frozen=True, slots=True)
class Usage:
    """Regular files and their bytes."""

    files: int = 0
    bytes: int = 0

    def __add__(self, other: Usage) -> Usage:
        return Usage(self.files + other.files, self.bytes + other.bytes)


def folder_usage(folder: Path, skip: tuple[Path, ...] = ()) -> Usage:
    """The regular files under ``folder``, leaving out the folders in ``skip``; links are not
    followed. A missing folder holds nothing."""
    total = Usage()
    for _, info in _files(folder, skip):
        total += Usage(1, info.st_size)
    return total


def clear_folder(folder: Path, skip: tuple[Path, ...] = ()) -> Usage:
    """Removes the files under ``folder`` but those in ``skip`` (the folders stay); what it
    freed. A process that has a removed file open keeps reading it until it closes it.

    Raises:
        OutputError: a file that cannot be removed (a read-only cache), named.
    """
    freed = Usage()
    for path, info in _files(folder, skip):
        try:
            path.unlink()
        except FileNotFoundError:  # another process removed it meanwhile
            continue
        except OSError as exc:
            raise OutputError(f"cannot remove {path}: {exc.strerror}") from None
        freed += Usage(1, info.st_size)
    return freed


def _files(folder: Path, skip: tuple[Path, ...]) -> Iterator[tuple[Path, os.stat_result]]:
    for root, dirs, names in os.walk(folder):
        here = Path(root)
        dirs[:] = [name for name in dirs if here / name not in skip]
        for name in names:
            try:
                info = (here / name).lstat()
            except FileNotFoundError:
                continue
            if stat.S_ISREG(info.st_mode):
                yield here / name, info
