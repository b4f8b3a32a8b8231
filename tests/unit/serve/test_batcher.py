"""Dynamic batching: jobs that arrive together run together, per variant, up to max_batch."""

from __future__ import annotations

import asyncio
from collections.abc import Hashable, Sequence

import numpy as np
import pytest

from isaseg_cli.serve.batcher import Batcher


class Recorder:
    """A run_batch that answers each image with its own first pixel and records every batch."""

    def __init__(self, fail_on: Hashable | None = None, bad_image: int | None = None) -> None:
        self.batches: list[tuple[Hashable, list[int]]] = []
        self.fail_on, self.bad_image = fail_on, bad_image

    def __call__(self, variant: Hashable, pairs: Sequence[tuple[np.ndarray, bool]]) -> list:
        self.batches.append((variant, [int(image[0, 0]) for image, _ in pairs]))
        if variant == self.fail_on:
            raise RuntimeError(f"{variant} failed")
        if any(int(image[0, 0]) == self.bad_image for image, _ in pairs):
            raise ValueError(f"image {self.bad_image} cannot be segmented")
        return [(image[0, 0], "probs" if want else None) for image, want in pairs]


def _image(value: int) -> np.ndarray:
    return np.full((2, 2), value, np.uint8)


async def _run(recorder: Recorder, jobs: list[tuple[int, str]]) -> tuple[list, list[int]]:
    """Submits every job at once (before the collector first runs); returns the outcomes, or
    exceptions, and the batch sizes reported to ``on_batch``."""
    sizes: list[int] = []
    batcher = Batcher(recorder, max_batch=4, max_wait_s=0.2, max_queue=16, on_batch=sizes.append)
    batcher.start()
    try:
        submitted = [
            batcher.submit(_image(value), variant, value % 2 == 0) for value, variant in jobs
        ]
        outcomes = await asyncio.gather(*(job.future for job in submitted), return_exceptions=True)
    finally:
        await batcher.stop()
    return outcomes, sizes


def test_waiting_jobs_run_as_batches_of_at_most_max_batch() -> None:
    recorder = Recorder()
    outcomes, sizes = asyncio.run(_run(recorder, [(value, "a") for value in range(6)]))
    assert recorder.batches == [("a", [0, 1, 2, 3]), ("a", [4, 5])]
    assert sizes == [4, 2]
    # Each caller gets its own answer, and how it was batched.
    assert [int(outcome.mask) for outcome in outcomes] == list(range(6))
    assert [outcome.probs for outcome in outcomes] == ["probs", None] * 3
    assert [outcome.batch_size for outcome in outcomes] == [4, 4, 4, 4, 2, 2]
    assert all(outcome.queue_s >= 0 and outcome.inference_s >= 0 for outcome in outcomes)


def test_jobs_batch_only_with_jobs_of_their_variant() -> None:
    recorder = Recorder()
    _, sizes = asyncio.run(_run(recorder, [(1, "a"), (2, "b"), (3, "a"), (4, "b")]))
    assert recorder.batches == [("a", [1, 3]), ("b", [2, 4])]
    assert sizes == [2, 2]


def test_a_failing_batch_answers_its_callers_and_the_others_go_on() -> None:
    recorder = Recorder(fail_on="bad")
    outcomes, sizes = asyncio.run(_run(recorder, [(1, "bad"), (2, "good"), (3, "bad")]))
    assert [str(o) for o in outcomes if isinstance(o, Exception)] == ["bad failed"] * 2
    assert int(outcomes[1].mask) == 2
    assert sizes == [1]  # only the batch that ran is counted


def test_one_bad_image_fails_alone_and_its_batch_mates_are_answered() -> None:
    """An image the model refuses (another size than a static export's) in a batch."""
    recorder = Recorder(bad_image=2)
    outcomes, sizes = asyncio.run(_run(recorder, [(value, "a") for value in range(4)]))
    assert recorder.batches == [("a", [0, 1, 2, 3]), ("a", [0]), ("a", [1]), ("a", [2]), ("a", [3])]
    assert [int(outcomes[i].mask) for i in (0, 1, 3)] == [0, 1, 3]
    assert isinstance(outcomes[2], ValueError) and "image 2" in str(outcomes[2])
    assert sizes == [1, 1, 1] and [outcomes[i].batch_size for i in (0, 1, 3)] == [1, 1, 1]


def test_a_full_queue_refuses_at_once() -> None:
    async def overfill() -> None:
        batcher = Batcher(Recorder(), max_batch=1, max_wait_s=0.0, max_queue=2)
        batcher.submit(_image(0), "a", False)  # not started: nothing is taken off the queue
        batcher.submit(_image(1), "a", False)
        assert batcher.queued == 2
        with pytest.raises(asyncio.QueueFull):
            batcher.submit(_image(2), "a", False)
        await batcher.stop()

    asyncio.run(overfill())


def test_jobs_whose_caller_gave_up_are_skipped() -> None:
    async def abandon() -> list:
        recorder = Recorder()
        batcher = Batcher(recorder, max_batch=4, max_wait_s=0.05, max_queue=8)
        gone = batcher.submit(_image(7), "a", False)
        gone.future.cancel()  # as a request timeout does
        kept = batcher.submit(_image(8), "a", False)
        batcher.start()
        outcome = await kept.future
        await batcher.stop()
        return [recorder.batches, int(outcome.mask)]

    assert asyncio.run(abandon()) == [[("a", [8])], 8]
