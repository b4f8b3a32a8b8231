"""What a cache folder holds on disk, and emptying it (``isaseg cache``). Lock files are the
cache's bookkeeping, empty and kept for good (``hub.lock``): neither counted nor removed."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from isaseg_cli.errors import OutputError
from isaseg_cli.hub.lock import LockHeld, all_free

LOCK_SUFFIX = ".lock"


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


def clear_folders(folders: list[tuple[Path, tuple[Path, ...]]]) -> Usage:
    """Removes the files under each ``(folder, skip)`` but those in ``skip`` (the folders stay),
    while holding every lock there, so that no download or build in progress loses its files;
    what it freed. A process that has a removed file open keeps reading it until it closes it.

    Raises:
        OutputError: another process holds one of the locks (nothing is removed then), or a
            file cannot be removed (a read-only cache); named.
    """
    locks = [path for where in folders for path in _files(*where, locks=True)]
    try:
        with all_free(path for path, _ in locks):
            freed = Usage()
            for folder, skip in folders:
                freed += _clear(folder, skip)
    except LockHeld as held:
        raise OutputError(
            f"another isaseg process is writing into the cache ({held.path.name} is locked): "
            "try again when it has finished"
        ) from None
    return freed


def _clear(folder: Path, skip: tuple[Path, ...]) -> Usage:
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


def _files(
    folder: Path, skip: tuple[Path, ...], locks: bool = False
) -> Iterator[tuple[Path, os.stat_result]]:
    """The regular files under ``folder`` outside ``skip``: the lock files, or all the others."""
    for root, dirs, names in os.walk(folder):
        here = Path(root)
        dirs[:] = [name for name in dirs if here / name not in skip]
        for name in names:
            if name.endswith(LOCK_SUFFIX) != locks:
                continue
            try:
                info = (here / name).lstat()
            except FileNotFoundError:
                continue
            if stat.S_ISREG(info.st_mode):
                yield here / name, info
