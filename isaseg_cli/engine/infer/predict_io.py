"""The input and output sides of ``predict``: images decoded in DataLoader workers, batched by
size, and results written by a background thread, so the model waits for neither. Without
workers torch is not imported (an exported network segments without it)."""

from __future__ import annotations

import multiprocessing
import multiprocessing.context
import queue
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from isaseg_cli.data.image import read_image_bgr
from isaseg_cli.engine.failure import failure_for


@dataclass(frozen=True, slots=True)
class Decoded:
    """Input ``index``: its image (H, W, 3) BGR uint8, or why it could not be read."""

    index: int
    image: np.ndarray | None
    reason: str | None
    seconds: float


class _DecodeDataset:
    """Decodes one input per item (a map-style dataset for DataLoader); a failure is returned as
    its one-line reason (exceptions do not all survive pickling between processes)."""

    def __init__(self, paths: Sequence[Path], max_pixels: int, as_tensor: bool) -> None:
        self.paths, self.max_pixels, self.as_tensor = list(paths), max_pixels, as_tensor

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> tuple[int, Any, str | None, float]:
        start = time.perf_counter()
        path = self.paths[index]
        try:
            image = read_image_bgr(path, self.max_pixels)
        except Exception as exc:  # whatever the cause, this input fails alone
            return index, None, failure_for(path, exc), time.perf_counter() - start
        if self.as_tensor:  # a tensor reaches the main process through shared memory, not pickle
            import torch

            return index, torch.from_numpy(image), None, time.perf_counter() - start
        return index, image, None, time.perf_counter() - start


def _as_is(item: object) -> object:
    return item


def _one_thread_per_worker(worker_id: int) -> None:
    # Each worker is one of several decoding processes: OpenCV's own pool would oversubscribe.
    cv2.setNumThreads(1)


def _worker_context() -> multiprocessing.context.BaseContext:
    """Workers start from a fork server that imported this module and never ran OpenCV: a plain
    fork copies the parent's OpenCV thread pool without its threads, and a child that touches the
    pool waits for them forever (seen: cv2.setNumThreads stuck in pthread_cond_destroy)."""
    if "forkserver" not in multiprocessing.get_all_start_methods():
        return multiprocessing.get_context("spawn")
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload([__name__])
    return context


def decode_images(paths: Sequence[Path], *, workers: int, max_pixels: int) -> Iterator[Decoded]:
    """The inputs decoded, in order: in this process with ``workers == 0``, else in ``workers``
    DataLoader processes that run a few images ahead of the consumer."""
    dataset = _DecodeDataset(paths, max_pixels, as_tensor=workers > 0)
    if workers == 0:
        items: Iterator[tuple[int, Any, str | None, float]] = (
            dataset[index] for index in range(len(dataset))
        )
    else:
        from torch.utils.data import DataLoader

        loader = DataLoader(
            dataset,
            batch_size=None,
            num_workers=min(workers, max(1, len(dataset))),
            collate_fn=_as_is,
            prefetch_factor=4,
            worker_init_fn=_one_thread_per_worker,
            multiprocessing_context=_worker_context(),
        )
        items = iter(loader)
    for index, image, reason, seconds in items:
        array = image if image is None or isinstance(image, np.ndarray) else image.numpy()
        yield Decoded(index, array, reason, seconds)


def size_batches(items: Iterator[Decoded], batch_size: int) -> Iterator[list[Decoded]]:
    """Decoded images grouped by size into batches of up to ``batch_size``, so that batches share
    a forward pass; failures come alone. A size still short of a full batch is sent partial once
    ``2 * batch_size`` images wait (oldest size first), which bounds the images held."""
    pending: dict[tuple[int, ...], list[Decoded]] = {}
    waiting = 0
    for item in items:
        if item.image is None:
            yield [item]
            continue
        group = pending.setdefault(item.image.shape, [])
        group.append(item)
        waiting += 1
        if len(group) >= batch_size:
            waiting -= len(group)
            yield pending.pop(item.image.shape)
        elif waiting >= 2 * batch_size:
            oldest = next(iter(pending))
            waiting -= len(pending[oldest])
            yield pending.pop(oldest)
    yield from pending.values()


Task = Callable[[], None]


class InlineWriter:
    """Runs each write at once, in the calling thread (``--workers 0``: the loop of old)."""

    def submit(self, task: Task) -> float:
        """Runs ``task``; returns the seconds it took, time the model was not computing."""
        start = time.perf_counter()
        task()
        return time.perf_counter() - start

    def close(self) -> None:
        """Nothing is pending."""


class BackgroundWriter:
    """Runs writes in order in one background thread, behind a queue of ``depth`` tasks.

    The first exception a task raises (an ``OutputError``: the disk is full) is kept, later tasks
    are dropped, and the exception is raised in the submitting thread at its next ``submit`` or
    at ``close``, so a write error stops the run as it does inline.
    """

    def __init__(self, depth: int) -> None:
        self._queue: queue.Queue[Task | None] = queue.Queue(maxsize=max(1, depth))
        self._error: BaseException | None = None
        self._stopped = False
        self._thread = threading.Thread(target=self._work, name="predict-writer", daemon=True)
        self._thread.start()

    def _work(self) -> None:
        while (task := self._queue.get()) is not None:
            if not self._stopped:
                try:
                    task()
                except BaseException as exc:  # re-raised in the submitting thread
                    self._error, self._stopped = exc, True

    def _raise_pending(self) -> None:
        if self._error is not None:
            error, self._error = self._error, None
            raise error

    def submit(self, task: Task) -> float:
        """Queues ``task``; returns the seconds spent waiting for room (the writer lagging)."""
        self._raise_pending()
        start = time.perf_counter()
        self._queue.put(task)
        return time.perf_counter() - start

    def close(self) -> None:
        """Waits for the queued writes; raises the error one of them hit, if any."""
        if self._thread.is_alive():
            self._queue.put(None)
            self._thread.join()
        self._raise_pending()
