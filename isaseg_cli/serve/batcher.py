"""Dynamic batching: requests wait in an asyncio queue; one worker thread runs them in batches.

The collector coroutine takes the first waiting job, then up to ``max_batch - 1`` more that arrive
within ``max_wait_s``, and hands the batch to a single inference thread, so the event loop keeps
accepting and decoding while the model runs. Jobs whose caller gave up (timeout) are skipped.
A batch that fails runs again job by job, so that only the jobs at fault get its error.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Hashable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass(slots=True)
class Job:
    """One image to segment; ``variant`` names the inference settings (jobs batch only with
    jobs of the same variant)."""

    image: np.ndarray
    variant: Hashable
    want_probs: bool
    future: asyncio.Future[BatchOutcome]
    queued_at: float = field(default_factory=time.perf_counter)


@dataclass(frozen=True, slots=True)
class BatchOutcome:
    """A job's answer: the mask, probabilities when asked for, and how it was run."""

    mask: np.ndarray
    probs: np.ndarray | None
    batch_size: int
    queue_s: float
    inference_s: float


# Runs one batch in the worker thread: (image, want_probs) pairs of one variant -> (mask, probs).
RunBatch = Callable[[Hashable, Sequence[tuple[np.ndarray, bool]]], list[tuple[Any, Any]]]


class Batcher:
    """Collects jobs into batches and runs them off the event loop. Start and stop it on the loop.

    Args:
        run_batch: does the inference for one variant's jobs (called in the worker thread).
        max_batch: jobs per batch at most.
        max_wait_s: how long a batch's first job waits for company.
        max_queue: jobs waiting at most; ``submit`` raises ``asyncio.QueueFull`` beyond it.
        on_batch: receives each batch's size (for metrics).
    """

    def __init__(
        self,
        run_batch: RunBatch,
        *,
        max_batch: int,
        max_wait_s: float,
        max_queue: int,
        on_batch: Callable[[int], None] | None = None,
    ) -> None:
        self.run_batch = run_batch
        self.max_batch, self.max_wait_s = max_batch, max_wait_s
        self.on_batch = on_batch
        self._queue: asyncio.Queue[Job] = asyncio.Queue(maxsize=max_queue)
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="isaseg-infer")
        self._task: asyncio.Task[None] | None = None

    @property
    def queued(self) -> int:
        return self._queue.qsize()

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._collect())

    async def stop(self) -> None:
        """Stops collecting (after in-flight requests have been answered) and ends the thread."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        self._executor.shutdown(wait=True)

    async def run_in_worker(self, function: Callable[[], Any]) -> Any:
        """Runs ``function`` in the inference thread, between batches (e.g. the warm-up)."""
        return await asyncio.get_running_loop().run_in_executor(self._executor, function)

    def submit(self, image: np.ndarray, variant: Hashable, want_probs: bool) -> Job:
        """Queues an image; await ``job.future`` for its ``BatchOutcome``.

        Raises:
            asyncio.QueueFull: ``max_queue`` jobs are already waiting.
        """
        future: asyncio.Future[BatchOutcome] = asyncio.get_running_loop().create_future()
        job = Job(image, variant, want_probs, future)
        self._queue.put_nowait(job)
        return job

    async def _next_batch(self) -> list[Job]:
        batch = [await self._queue.get()]
        deadline = time.perf_counter() + self.max_wait_s
        while len(batch) < self.max_batch:
            remaining = deadline - time.perf_counter()
            try:
                if remaining <= 0:
                    batch.append(self._queue.get_nowait())
                else:
                    batch.append(await asyncio.wait_for(self._queue.get(), remaining))
            except (asyncio.QueueEmpty, asyncio.TimeoutError):
                break
        return [job for job in batch if not job.future.done()]

    async def _collect(self) -> None:
        while True:
            batch = await self._next_batch()
            groups: dict[Hashable, list[Job]] = {}
            for job in batch:
                groups.setdefault(job.variant, []).append(job)
            for variant, jobs in groups.items():
                failure = await self._run(variant, jobs)
                if failure is None:
                    continue
                if len(jobs) == 1:
                    _fail(jobs[0], failure)
                    continue
                # One job's fault (an image the model cannot take) must not fail the others
                # of its batch: each runs again alone, and only the faulty ones fail.
                for job in jobs:
                    if job.future.done():  # its caller gave up meanwhile
                        continue
                    if (alone := await self._run(variant, [job])) is not None:
                        _fail(job, alone)

    async def _run(self, variant: Hashable, jobs: list[Job]) -> Exception | None:
        """Runs ``jobs`` as one batch and answers each; the exception when the batch failed
        (nothing answered then)."""
        started = time.perf_counter()
        pairs = [(job.image, job.want_probs) for job in jobs]
        try:
            results = await asyncio.get_running_loop().run_in_executor(
                self._executor, self.run_batch, variant, pairs
            )
        except Exception as exc:  # noqa: BLE001 - answered to the callers, never fatal
            return exc
        inference_s = time.perf_counter() - started
        if self.on_batch is not None:
            self.on_batch(len(jobs))
        for job, (mask, probs) in zip(jobs, results, strict=True):
            if not job.future.done():
                job.future.set_result(
                    BatchOutcome(mask, probs, len(jobs), started - job.queued_at, inference_s)
                )
        return None


def _fail(job: Job, exc: Exception) -> None:
    if not job.future.done():
        job.future.set_exception(exc)
