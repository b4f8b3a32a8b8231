"""SIGTERM handled as Ctrl-C: what batch schedulers, `timeout` and `docker stop` send before
they kill a process. By default it ends Python at once, with no ``finally`` run, so partial
files stayed behind and the user was told nothing; as a KeyboardInterrupt every command's own
interruption path runs (atomic outputs cleaned up, a line on how to go on)."""

from __future__ import annotations

import signal
from collections.abc import Callable, Iterator
from contextlib import contextmanager

# What a process ended by SIGTERM returns (128 + 15), as a shell reports it.
TERMINATED_EXIT = 128 + signal.SIGTERM


@contextmanager
def sigterm_as_interrupt() -> Iterator[Callable[[], bool]]:
    """Raises KeyboardInterrupt on SIGTERM while held; yields whether SIGTERM came.

    A caller that is not the main thread (an embedding program) keeps its handler.
    """
    received: list[int] = []

    def stop(signum: int, frame: object) -> None:
        del frame
        received.append(signum)
        raise KeyboardInterrupt

    try:
        previous = signal.signal(signal.SIGTERM, stop)
    except ValueError:  # signal handlers can only be set from the main thread
        yield lambda: False
        return
    try:
        yield lambda: bool(received)
    finally:
        signal.signal(signal.SIGTERM, previous)
