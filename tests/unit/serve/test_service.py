"""The serving state: request options as variants sharing one model, readiness after the
warm-up, and 503 / 504 for a full queue and a late answer. A stand-in Segmenter keeps it fast."""

from __future__ import annotations

import asyncio
import dataclasses
import threading
from types import SimpleNamespace

import numpy as np
import pytest

from isaseg_cli.serve.api_error import ApiError
from isaseg_cli.serve.service import RETRY_AFTER_S, SegmentService
from isaseg_cli.serve.settings import ServeSettings
from isaseg_cli.zoo.spec import TestSpec
from tests.helpers import make_tiny_entry


class FakeSegmenter:
    """Answers each image with a mask of its first pixel's value; ``gate`` can hold it back."""

    def __init__(self) -> None:
        entry = make_tiny_entry()
        entry = dataclasses.replace(entry, data=dataclasses.replace(entry.data, crop_size=(32, 32)))
        self.loaded = SimpleNamespace(entry=entry, model=object())
        self.test = TestSpec()
        self.ms_flip = False
        self.calls: list[tuple[str, bool, int, bool]] = []
        self.gate = threading.Event()
        self.gate.set()

    def __call__(self, image: np.ndarray) -> np.ndarray:
        return self.predict_batch([image])[0]

    def predict_batch(self, images: list[np.ndarray], return_probs: bool = False) -> list:
        self.gate.wait(5)
        self.calls.append((self.test.mode, self.ms_flip, len(images), return_probs))
        masks = [np.full(image.shape[:2], image[0, 0, 0]) for image in images]
        return [(mask, mask[None] * 0.5) for mask in masks] if return_probs else masks


def _run(segmenter: FakeSegmenter, body, **settings: float) -> object:
    async def main() -> object:
        service = SegmentService(segmenter, ServeSettings(**settings))  # type: ignore[arg-type]
        await service.start()
        try:
            return await body(service)
        finally:
            await service.stop()

    return asyncio.run(main())


def _image(value: int) -> np.ndarray:
    return np.full((4, 4, 3), value, np.uint8)


def test_requests_run_in_their_variant_and_variants_share_the_model() -> None:
    segmenter = FakeSegmenter()

    async def body(service: SegmentService) -> tuple:
        while not service.ready:  # the warm-up runs one image first
            await asyncio.sleep(0.01)
        default = service.variant(None, None)
        slide_flip = service.variant("slide", True)
        plain = await service.segment(_image(3), default, want_probs=False)
        other = await service.segment(_image(5), slide_flip, want_probs=True)
        copy = service._variants[slide_flip]
        return default, slide_flip, plain, other, copy

    default, slide_flip, plain, other, copy = _run(segmenter, body)  # type: ignore[misc]
    assert default == ("whole", False) and slide_flip == ("slide", True)
    assert (plain.mask == 3).all() and plain.probs is None
    assert (other.mask == 5).all() and other.probs is not None
    assert copy is not segmenter and copy.loaded.model is segmenter.loaded.model
    assert (copy.test.mode, copy.test.crop_size, copy.ms_flip) == ("slide", (32, 32), True)
    assert (segmenter.test.mode, segmenter.ms_flip) == ("whole", False)  # the default is kept
    # The warm-up, then one request in each variant (the copy shares the stand-in's call list).
    assert segmenter.calls == [
        ("whole", False, 1, False), ("whole", False, 1, False), ("slide", True, 1, True)
    ]  # fmt: skip
    assert copy.calls is segmenter.calls


def test_a_full_queue_is_503_with_retry_after_and_a_late_answer_504() -> None:
    segmenter = FakeSegmenter()

    async def body(service: SegmentService) -> list[ApiError]:
        segmenter.gate.clear()  # the model is stuck: nothing leaves the queue
        variant = service.variant(None, None)
        errors = []

        async def request(value: int) -> None:
            try:
                await service.segment(_image(value), variant, False)
            except ApiError as exc:
                errors.append(exc)

        first = asyncio.ensure_future(request(1))
        await asyncio.sleep(0.05)  # the collector takes it and waits for the stuck model
        second = asyncio.ensure_future(request(2))
        await asyncio.sleep(0.05)  # it fills the queue of one
        await request(3)
        await asyncio.gather(first, second)
        segmenter.gate.set()
        return errors

    errors = _run(segmenter, body, max_batch=1, max_queue=1, timeout_s=0.2)
    assert [error.status for error in errors] == [503, 504, 504]  # type: ignore[union-attr]
    busy = errors[0]  # type: ignore[index]
    assert busy.headers == {"Retry-After": str(RETRY_AFTER_S)}
    assert str(busy) == "the server is busy: 1 requests are waiting"
    assert "no answer within 0.2 s" in str(errors[1])  # type: ignore[index]


def test_segment_before_start_is_a_programming_error() -> None:
    service = SegmentService(FakeSegmenter(), ServeSettings())  # type: ignore[arg-type]
    with pytest.raises(AssertionError, match="start"):
        asyncio.run(service.segment(_image(0), ("whole", False), False))
