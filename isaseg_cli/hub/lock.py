"""One process at a time on a cache file: a ``filelock`` lock, which works across processes and
threads, taken without waiting when it is free so that the caller can say when it must wait."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from filelock import FileLock, Timeout


@contextmanager
def exclusive(lock_file: Path, on_wait: Callable[[], None] | None = None) -> Iterator[bool]:
    """Holds ``lock_file``'s lock (the empty file stays); calls ``on_wait`` before waiting for
    another holder, and yields whether it waited (that holder may have done the work)."""
    lock = FileLock(lock_file)
    try:
        lock.acquire(timeout=0)
        waited = False
    except Timeout:
        if on_wait is not None:
            on_wait()
        lock.acquire()
        waited = True
    try:
        yield waited
    finally:
        lock.release()
