"""How ``Segmenter`` scores images: the test pipeline on each image or on a batch of images of
one size, the fall back from ``whole`` to ``slide`` when the device runs out of memory, and
inputs prepared in decode workers. A base class of ``Segmenter``, kept apart so that the public
class (options, results, confidence) and the device work each read in one sitting."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch
from torch import Tensor

from isaseg_cli.data.image import keep_ratio_size, normalize_bgr, resize_keep_ratio
from isaseg_cli.engine.device import autocast, free_cached_memory, is_out_of_memory
from isaseg_cli.engine.infer.pipeline import forward_logits, infer_scores
from isaseg_cli.engine.infer.prepared import to_device
from isaseg_cli.models.segmentor import Segmentor
from isaseg_cli.zoo.spec import TestSpec

WarningCallback = Callable[[str], None]


class ImageScoring:
    """Class scores (1, K, H, W) of BGR images with ``model`` under ``test``.

    ``Segmenter`` sets these attributes in its constructor (serve's request variants replace
    ``test`` and ``ms_flip`` on a shallow copy, sharing the model).
    """

    model: Segmentor
    test: TestSpec
    fallback_test: TestSpec  # slide, for images whole ran out of memory on
    device: torch.device
    precision: str
    ms_flip: bool
    ratios: tuple[float, ...] | None
    window_batch: int
    on_warning: WarningCallback | None
    _slide_from_pixels: int | None  # images this large go straight to slide

    def _all_scores(self, arrays: list[np.ndarray]) -> list[Tensor]:
        """``scores`` of each image, in order, sharing forward passes where sizes match."""
        if self.ms_flip or len(arrays) < 2:
            return [self.scores(array) for array in arrays]
        groups: dict[tuple[int, int], list[int]] = {}
        for index, array in enumerate(arrays):
            groups.setdefault(self._resized_size(array), []).append(index)
        results: dict[int, Tensor] = {}
        for indices in groups.values():
            batch = [arrays[i] for i in indices]
            scores = self._batch_scores(batch) if len(batch) > 1 else None
            for position, index in enumerate(indices):
                results[index] = (
                    scores[position] if scores is not None else self.scores(batch[position])
                )
        return [results[i] for i in range(len(arrays))]

    @torch.no_grad()
    def scores(self, image_bgr: np.ndarray) -> Tensor:
        """Class scores (1, K, H, W) on the device: logits, or mean probabilities with ms_flip."""
        height, width = image_bgr.shape[:2]
        test = self.test
        if test.mode == "whole" and self._slide_from_pixels is not None:
            test = self.fallback_test if height * width >= self._slide_from_pixels else test
        try:
            return self._infer(image_bgr, test)
        except RuntimeError as exc:
            if test.mode != "whole" or not is_out_of_memory(exc):
                raise
        # Retried outside the except block, so the failed attempt's tensors can be freed.
        free_cached_memory(self.device)
        self._slide_from_pixels = min(height * width, self._slide_from_pixels or height * width)
        crop, stride = self.fallback_test.crop_size, self.fallback_test.stride
        if self.on_warning is not None:
            self.on_warning(
                f"a {width}x{height} image does not fit in {self.device} memory in whole mode; "
                f"using slide mode (crop {crop}, stride {stride}) for images this large"
            )
        return self._infer(image_bgr, self.fallback_test)

    def _infer(self, image_bgr: np.ndarray, test: TestSpec) -> Tensor:
        with autocast(self.device, self.precision):
            return infer_scores(
                self.model,
                image_bgr,
                test,
                ms_flip=self.ms_flip,
                ratios=self.ratios,
                device=self.device,
                window_batch=self.window_batch,
            )

    def _resized_size(self, image_bgr: np.ndarray) -> tuple[int, int]:
        height, width = image_bgr.shape[:2]
        return (
            keep_ratio_size(width, height, self.test.scale) if self.test.scale else (width, height)
        )

    @torch.no_grad()
    def _batch_scores(self, batch: list[np.ndarray]) -> list[Tensor] | None:
        """Logits (1, K, H, W) per image from one forward pass; None when it ran out of memory."""
        resized = [resize_keep_ratio(a, self.test.scale) if self.test.scale else a for a in batch]
        images = torch.cat([normalize_bgr(image) for image in resized]).to(self.device)
        try:
            with autocast(self.device, self.precision):
                logits = forward_logits(
                    self.model, images, self.test, window_batch=self.window_batch
                )
                return [
                    self.model.resize(logits[i : i + 1], image.shape[:2])
                    for i, image in enumerate(batch)
                ]
        except RuntimeError as exc:
            if not is_out_of_memory(exc):
                raise
        free_cached_memory(self.device)
        return None

    def _needs_slide_fallback(self, image_bgr: np.ndarray) -> bool:
        height, width = image_bgr.shape[:2]
        threshold = self._slide_from_pixels
        return self.test.mode == "whole" and threshold is not None and height * width >= threshold

    def _prepared_scores(
        self, images: Sequence[np.ndarray], inputs: Sequence[np.ndarray], indices: list[int]
    ) -> list[Tensor] | None:
        """Logits (1, K, H, W) at each original size from one forward pass over the prepared
        inputs ``indices``; None when it ran out of memory."""
        batch = to_device([inputs[i] for i in indices], self.device)
        try:
            with autocast(self.device, self.precision):
                logits = forward_logits(
                    self.model, batch, self.test, window_batch=self.window_batch
                )
                return [
                    self.model.resize(logits[position : position + 1], images[index].shape[:2])
                    for position, index in enumerate(indices)
                ]
        except RuntimeError as exc:
            if not is_out_of_memory(exc):
                raise
        del batch
        free_cached_memory(self.device)
        return None
