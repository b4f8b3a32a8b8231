"""One process at a time on a cache file: a ``filelock`` lock, which works across processes and
threads, taken without waiting when it is free so that the caller can say when it must wait.

Lock files are never removed, not even by ``isaseg cache --clean``: a process may be waiting on
the removed file while a newcomer locks a new one under the same name, and both would go on."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from contextlib import ExitStack, contextmanager
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


class LockHeld(Exception):
    """Another process holds ``path``'s lock."""

    def __init__(self, path: Path) -> None:
        super().__init__(str(path))
        self.path = path


@contextmanager
def all_free(lock_files: Iterable[Path]) -> Iterator[None]:
    """Holds every one of ``lock_files`` or none: raises ``LockHeld`` for the first that another
    process holds, without waiting."""
    with ExitStack() as held:
        for path in lock_files:
            lock = FileLock(path)
            try:
                lock.acquire(timeout=0)
            except Timeout:
                raise LockHeld(path) from None
            except OSError:  # cannot be opened for writing here (a read-only cache): nor
                continue  # can any writer take it
            held.callback(lock.release)
        yield
