"""``ExportedSegmenter``: ``Segmenter`` for an exported network (``backends.open_exported``),
in numpy, so that ``predict`` and ``serve`` on ONNX Runtime or OpenVINO never import torch (about
a second of start-up). The test protocol is the same (``protocol``); ``pipeline`` is its PyTorch
twin, and both are held to the same fixture (tests/unit/engine/infer/test_exported.py)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Literal, overload

import numpy as np

from isaseg_cli.data.image import (
    keep_ratio_size,
    normalize_bgr_array,
    resize_keep_ratio,
    resize_to,
)
from isaseg_cli.engine.infer.backends import ExportedModel, check_backend_options
from isaseg_cli.engine.infer.confidence import (
    ConfidenceSpec,
    SegmentationResult,
    from_prediction,
)
from isaseg_cli.engine.infer.protocol import (
    ImageInput,
    as_bgr,
    chunks,
    linear_taps,
    ms_flip_ratios,
    ms_flip_views,
    resolve_test_spec,
    slide_windows,
)
from isaseg_cli.engine.infer.runtime import Runner
from isaseg_cli.zoo.spec import TestSpec


def resize_logits(logits: np.ndarray, size: tuple[int, int], align_corners: bool) -> np.ndarray:
    """Bilinear resize of (N, K, h, w) float32 to ``size`` (H, W): ``Segmentor.resize`` in numpy
    (width first, then height, as PyTorch's separable kernel weighs them)."""
    height, width = size
    if logits.shape[2:] == (height, width):
        return logits
    x0, x1, wx1 = linear_taps(logits.shape[3], width, align_corners)
    y0, y1, wy1 = linear_taps(logits.shape[2], height, align_corners)
    wx0, wy0 = np.float32(1) - wx1, np.float32(1) - wy1
    rows = logits[..., x0] * wx0 + logits[..., x1] * wx1  # (N, K, h, W)
    return rows[..., y0, :] * wy0[:, None] + rows[..., y1, :] * wy1[:, None]  # (N, K, H, W)


def softmax(scores: np.ndarray, axis: int = 1) -> np.ndarray:
    shifted = np.exp(scores - scores.max(axis=axis, keepdims=True))
    return shifted / shifted.sum(axis=axis, keepdims=True)


def forward_logits(
    run: Runner, images: np.ndarray, test: TestSpec, *, window_batch: int = 1
) -> np.ndarray:
    """``pipeline.forward_logits`` in numpy: logits (N, K, H, W) at the size of ``images``."""
    if test.mode == "whole":
        return run(images)
    assert test.crop_size is not None and test.stride is not None  # TestSpec guarantees it
    n, _, height, width = images.shape
    boxes = slide_windows(height, width, test.crop_size, test.stride)
    canvas: np.ndarray | None = None
    count = np.zeros((n, 1, height, width), dtype=np.float32)
    for group in chunks(boxes, max(1, window_batch)):
        crops = np.concatenate([images[:, :, y1:y2, x1:x2] for y1, y2, x1, x2 in group])
        window_logits = run(np.ascontiguousarray(crops))  # (len(group) * N, K, h, w)
        if canvas is None:
            canvas = np.zeros((n, window_logits.shape[1], height, width), dtype=np.float32)
        for index, (y1, y2, x1, x2) in enumerate(group):
            canvas[:, :, y1:y2, x1:x2] += window_logits[index * n : (index + 1) * n]
            count[:, :, y1:y2, x1:x2] += 1
    assert canvas is not None
    return canvas / count


class ExportedSegmenter:
    """Segments images with an exported network, as ``Segmenter`` does with a PyTorch model: the
    same arguments, attributes and results (masks and probabilities as numpy arrays); ``scores``
    returns a numpy array. Runs on the CPU at the file's precision; there is no out-of-memory
    fallback from ``whole`` to ``slide`` (the backends report allocation failures their own way).

    Args:
        exported: the opened file (``backends.open_exported``).
        device, precision, compile: accepted for ``Segmenter``'s signature; only ``cpu``/``auto``,
            ``fp32`` and no compile are allowed.
        mode, crop, stride, ms_flip, scales, window_batch: as ``Segmenter``'s.
        on_warning: unused (no fallback to warn about); kept for the signature.

    Raises:
        InputError: an unusable override or option.
    """

    def __init__(
        self,
        exported: ExportedModel,
        *,
        device: str = "cpu",
        precision: str = "fp32",
        mode: str | None = None,
        crop: tuple[int, int] | None = None,
        stride: tuple[int, int] | None = None,
        ms_flip: bool = False,
        scales: Sequence[float] | None = None,
        window_batch: int | None = None,
        compile: bool = False,
        on_warning: Callable[[str], None] | None = None,
    ) -> None:
        check_backend_options(exported.backend, device, precision, compile)
        ratios = ms_flip_ratios(scales, ms_flip)
        self.loaded = exported
        self.device = "cpu"
        self.precision = precision
        self.test = resolve_test_spec(exported.entry, mode=mode, crop=crop, stride=stride)
        self.ms_flip = ms_flip
        self.ratios = ratios
        self.window_batch = max(1, window_batch or 1)  # batching windows saves nothing on CPUs
        self.on_warning = on_warning
        self.align_corners = exported.entry.model.align_corners

    @property
    def classes(self) -> tuple[str, ...]:
        return self.loaded.classes

    @property
    def palette(self) -> tuple[tuple[int, int, int], ...]:
        return self.loaded.palette

    @property
    def num_classes(self) -> int:
        return len(self.loaded.classes)

    @overload
    def __call__(
        self, image: ImageInput, *, return_probs: Literal[False] = ..., rgb: bool = ...
    ) -> np.ndarray: ...

    @overload
    def __call__(
        self, image: ImageInput, *, return_probs: Literal[True], rgb: bool = ...
    ) -> tuple[np.ndarray, np.ndarray]: ...

    def __call__(
        self, image: ImageInput, *, return_probs: bool = False, rgb: bool = False
    ) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
        """Segments one image (a path or an array), as ``Segmenter.__call__``."""
        return self._finish(self.scores(as_bgr(image, rgb=rgb)), return_probs)

    def segment_batch(
        self,
        images: Sequence[ImageInput],
        *,
        spec: ConfidenceSpec | None = None,
        rgb: bool = False,
    ) -> list[SegmentationResult]:
        """``Segmenter.segment_batch`` for an exported network: masks, pixel counts, and the
        probabilities and mean confidence when ``spec`` asks for probabilities (confidence maps
        and ``min_confidence`` need the PyTorch segmenter; commands refuse them earlier)."""
        want_probs = spec is not None and spec.probs
        predictions = self.predict_batch(images, return_probs=want_probs, rgb=rgb)
        return [from_prediction(p, self.num_classes) for p in predictions]

    def predict_batch(
        self, images: Sequence[ImageInput], *, return_probs: bool = False, rgb: bool = False
    ) -> list[np.ndarray] | list[tuple[np.ndarray, np.ndarray]]:
        """Segments several images, in order; same-size ones share a forward pass (single
        scale), as ``Segmenter.predict_batch``."""
        arrays = [as_bgr(image, rgb=rgb) for image in images]
        if self.ms_flip or len(arrays) < 2:
            return [self._finish(self.scores(array), return_probs) for array in arrays]
        groups: dict[tuple[int, int], list[int]] = {}
        for index, array in enumerate(arrays):
            groups.setdefault(self._resized_size(array), []).append(index)
        results: dict[int, np.ndarray | tuple[np.ndarray, np.ndarray]] = {}
        for indices in groups.values():
            batch = [arrays[i] for i in indices]
            scores = self._batch_scores(batch) if len(batch) > 1 else [self.scores(batch[0])]
            for index, single in zip(indices, scores, strict=True):
                results[index] = self._finish(single, return_probs)
        return [results[i] for i in range(len(arrays))]  # type: ignore[return-value]

    def scores(self, image_bgr: np.ndarray) -> np.ndarray:
        """Class scores (1, K, H, W): logits, or mean probabilities with ms_flip
        (``pipeline.infer_scores``)."""
        height, width = image_bgr.shape[:2]
        test = self.test
        if not self.ms_flip:
            resized = resize_keep_ratio(image_bgr, test.scale) if test.scale else image_bgr
            logits = self._logits(normalize_bgr_array(resized))
            return resize_logits(logits, (height, width), self.align_corners)
        total: np.ndarray | None = None
        views = ms_flip_views(width, height, test, self.ratios)
        for size, flip in views:
            view = resize_to(image_bgr, size)
            logits = self._logits(normalize_bgr_array(view[:, ::-1] if flip else view))
            if flip:
                logits = logits[..., ::-1]
            probs = softmax(resize_logits(logits, (height, width), self.align_corners))
            total = probs if total is None else total + probs
        assert total is not None
        return total / len(views)

    def _logits(self, images: np.ndarray) -> np.ndarray:
        return forward_logits(self.loaded.run, images, self.test, window_batch=self.window_batch)

    def _resized_size(self, image_bgr: np.ndarray) -> tuple[int, int]:
        height, width = image_bgr.shape[:2]
        scale = self.test.scale
        return keep_ratio_size(width, height, scale) if scale else (width, height)

    def _batch_scores(self, batch: list[np.ndarray]) -> list[np.ndarray]:
        """Logits (1, K, H, W) per image from one forward pass."""
        resized = [resize_keep_ratio(a, self.test.scale) if self.test.scale else a for a in batch]
        logits = self._logits(np.concatenate([normalize_bgr_array(image) for image in resized]))
        return [
            resize_logits(logits[i : i + 1], image.shape[:2], self.align_corners)
            for i, image in enumerate(batch)
        ]

    def _finish(
        self, scores: np.ndarray, return_probs: bool
    ) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
        dtype = np.uint8 if scores.shape[1] <= 256 else np.int64
        mask = scores[0].argmax(axis=0).astype(dtype)
        if not return_probs:
            return mask
        probs = scores[0] if self.ms_flip else softmax(scores[0], axis=0)
        return mask, probs.astype(np.float32, copy=False)
