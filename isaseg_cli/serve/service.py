"""The serving state behind the routes: the Segmenter, its batcher, readiness and metrics."""

from __future__ import annotations

import asyncio
import copy
from collections.abc import Hashable, Sequence

import numpy as np

from isaseg_cli.engine.infer.protocol import resolve_test_spec
from isaseg_cli.engine.infer.segmenter import Segmenter
from isaseg_cli.serve.api_error import ApiError
from isaseg_cli.serve.batcher import Batcher, BatchOutcome
from isaseg_cli.serve.metrics import ServeMetrics
from isaseg_cli.serve.settings import ServeSettings

Variant = tuple[str, bool]  # (mode, ms_flip)
RETRY_AFTER_S = 1


class SegmentService:
    """Segments decoded images through the batcher; one per app.

    Args:
        segmenter: the loaded model with its test pipeline (its mode and ms_flip are the defaults
            that requests may override).
        settings: limits and batching parameters.
    """

    def __init__(self, segmenter: Segmenter, settings: ServeSettings) -> None:
        self.segmenter = segmenter
        self.settings = settings
        self.ready = False
        self._variants: dict[Variant, Segmenter] = {self.default_variant: segmenter}
        self._batcher: Batcher | None = None
        self._warmup: asyncio.Task[None] | None = None
        self.metrics = ServeMetrics(lambda: self._batcher.queued if self._batcher else 0)

    @property
    def default_variant(self) -> Variant:
        return (self.segmenter.test.mode, self.segmenter.ms_flip)

    def _segmenter(self, variant: Variant) -> Segmenter:
        """The Segmenter for other request options: a shallow copy sharing the prepared model,
        so a request's ``mode`` or ``ms_flip`` costs no second copy of the weights."""
        if variant not in self._variants:
            mode, ms_flip = variant
            other = copy.copy(self.segmenter)
            if mode != self.segmenter.test.mode:
                other.test = resolve_test_spec(self.segmenter.loaded.entry, mode=mode)
            other.ms_flip = ms_flip
            self._variants[variant] = other
        return self._variants[variant]

    def _run_batch(
        self, variant: Hashable, pairs: Sequence[tuple[np.ndarray, bool]]
    ) -> list[tuple[np.ndarray, np.ndarray | None]]:
        segmenter = self._segmenter(variant)  # type: ignore[arg-type]
        want_probs = any(want for _, want in pairs)
        results = segmenter.predict_batch([image for image, _ in pairs], return_probs=want_probs)
        if want_probs:
            return [(mask, probs) for mask, probs in results]  # type: ignore[misc]
        return [(mask, None) for mask in results]  # type: ignore[misc]

    async def start(self) -> None:
        """Starts the batcher and warms the model up in the background (``ready`` after it)."""
        settings = self.settings
        self._batcher = Batcher(
            self._run_batch,
            max_batch=settings.max_batch,
            max_wait_s=settings.max_wait_ms / 1000,
            max_queue=settings.max_queue,
            on_batch=self.metrics.batch_size.observe,
        )
        self._batcher.start()
        self._warmup = asyncio.get_running_loop().create_task(self._warm_up())

    async def _warm_up(self) -> None:
        image = np.zeros((64, 64, 3), dtype=np.uint8)
        assert self._batcher is not None
        await self._batcher.run_in_worker(lambda: self.segmenter(image))
        self.ready = True

    async def stop(self) -> None:
        if self._warmup is not None and not self._warmup.done():
            self._warmup.cancel()
        if self._batcher is not None:
            await self._batcher.stop()

    def variant(self, mode: str | None, ms_flip: bool | None) -> Variant:
        default_mode, default_ms_flip = self.default_variant
        return (mode or default_mode, default_ms_flip if ms_flip is None else ms_flip)

    async def segment(self, image: np.ndarray, variant: Variant, want_probs: bool) -> BatchOutcome:
        """Queues ``image`` and waits for its mask.

        Raises:
            ApiError: 503 (with Retry-After) when the queue is full, 504 after the timeout.
        """
        assert self._batcher is not None, "start() the service first"
        try:
            job = self._batcher.submit(image, variant, want_probs)
        except asyncio.QueueFull:
            raise ApiError(
                503,
                f"the server is busy: {self.settings.max_queue} requests are waiting",
                {"Retry-After": str(RETRY_AFTER_S)},
            ) from None
        try:
            return await asyncio.wait_for(job.future, self.settings.timeout_s)
        except asyncio.TimeoutError:
            raise ApiError(
                504, f"no answer within {self.settings.timeout_s:g} s; try again later"
            ) from None
