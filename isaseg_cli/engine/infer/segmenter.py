"""The Python API for inference: ``Segmenter`` turns images into class-index masks.

It wraps a loaded model with the zoo entry's test pipeline (docs/FAITHFULNESS.md#test-pipeline),
user overrides of that pipeline, a device and a precision, and falls back from ``whole`` to
``slide`` when a large image does not fit in the device's memory; ``tile`` runs ``slide``'s windows
in memory bounded by a band of rows (``engine.infer.tiles``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Literal, overload

import numpy as np
import torch
from torch import Tensor

from isaseg_cli.engine.device import (
    autocast,
    inference_flags,
    resolve_device,
    set_process_flags,
)
from isaseg_cli.engine.infer.confidence import ConfidenceSpec, SegmentationResult, collect
from isaseg_cli.engine.infer.fast import (
    FastOptions,
    optimize_for_inference,
    recommended_window_batch,
    resolve_fast_settings,
)
from isaseg_cli.engine.infer.protocol import (
    ImageInput,
    as_bgr,
    default_slide_stride,
    ms_flip_ratios,
    resolve_test_spec,
)
from isaseg_cli.engine.infer.scoring import ImageScoring, WarningCallback
from isaseg_cli.engine.infer.tiles import check_tile_options, resolve_scale, segment_tiled
from isaseg_cli.engine.loading import LoadedModel, Palette, load_model
from isaseg_cli.errors import InputError
from isaseg_cli.models.segmentor import Segmentor
from isaseg_cli.zoo.catalog import resolve_entry
from isaseg_cli.zoo.spec import ModelSpec, TestSpec, ZooEntry


def prepare_model(
    model: Segmentor,
    spec: ModelSpec,
    device: torch.device,
    precision: str,
    *,
    compile: bool = False,
) -> Segmentor:
    """Readies a loaded model of ``spec`` for inference on ``device`` at ``precision``, and
    sets the inference commands' process flags (``engine.device.inference_flags``).

    The one place where device- or precision-specific model changes belong: the fast path of
    ``engine.infer.fast`` (folded BN, channels-last, fused attention on CUDA, optional
    compile); float32 on the CPU keeps the plain model, bit-faithful to mmsegmentation.
    """
    settings = resolve_fast_settings(device, FastOptions(precision=precision, compile=compile))
    set_process_flags(inference_flags(device))
    return optimize_for_inference(model.eval().to(device), spec, settings)


class Segmenter(ImageScoring):
    """Segments images with a loaded ISANet model, following its zoo entry's test pipeline.

    Example:
        >>> segmenter = Segmenter.from_zoo("isanet_r50_cityscapes", device="cuda")
        >>> mask = segmenter("street.png")  # (H, W) uint8 class indices
        >>> mask, probs = segmenter(image_bgr, return_probs=True)  # probs (K, H, W) float32
        >>> mask, top1 = segmenter(image_bgr, return_confidence=True)  # top1 (H, W)
        >>> tiled = Segmenter.from_zoo("isanet_r50_cityscapes", tile=(769, 769))  # any size

    Arrays are BGR (OpenCV's order, as ``cv2.imread`` returns them) unless ``rgb=True`` is passed.
    Masks are uint8 (int64 for models with more than 256 classes), at the input's size.

    Args:
        loaded: the model, its entry, class names and palette (``engine.loading.load_model``).
        device: ``auto``, ``cpu``, ``cuda``, ``cuda:N``, ``mps`` or a ``torch.device``.
        precision: ``fp32``, ``bf16`` or ``fp16`` (autocast; fp16 needs a GPU).
        mode: ``whole`` or ``slide``; default: the entry's.
        crop: slide window (height, width); implies ``slide``.
        stride: slide step (height, width); default 2/3 of the crop, or the entry's.
        ms_flip: average softmax probabilities over multi-scale and flipped views.
        scales: the multi-scale ratios (default: the entry's six); needs ``ms_flip``.
        window_batch: slide windows per forward pass (default: all of them on CUDA, else 1;
            with tiles, 4 on CUDA, else 1).
        compile: ``torch.compile`` the model (pays a compile per new input shape).
        on_warning: receives a message when ``whole`` ran out of memory and ``slide`` took over.
        tile: run ``slide``'s windows of this size (h, w) in rows, holding only the band of rows
            later windows still touch (``engine.infer.tiles``); replaces mode, crop and stride.
        tile_stride: the step between tiles (h, w); default 2/3 of the tile.
        scale: ``native``, ``zoo`` or a test scale (w, h); see ``resolve_scale``.
        uncertainty: the map ``return_confidence`` gives: ``top1`` (probability of the chosen
            class), ``margin`` (top-1 minus top-2) or ``entropy`` (normalised to [0, 1]).
        min_confidence: pixels whose top-1 probability is below it become 255 (ignore).
        tile_accumulate: ``float32``, or ``float16`` to halve the band's memory.

    Raises:
        InputError: an unusable override, device or precision.
    """

    def __init__(
        self,
        loaded: LoadedModel,
        *,
        device: str | torch.device = "auto",
        precision: str = "fp32",
        mode: str | None = None,
        crop: tuple[int, int] | None = None,
        stride: tuple[int, int] | None = None,
        ms_flip: bool = False,
        scales: Sequence[float] | None = None,
        window_batch: int | None = None,
        compile: bool = False,
        on_warning: WarningCallback | None = None,
        tile: tuple[int, int] | None = None,
        tile_stride: tuple[int, int] | None = None,
        scale: str | tuple[int, int] | None = None,
        uncertainty: str = "top1",
        min_confidence: float | None = None,
        tile_accumulate: str = "float32",
    ) -> None:
        check_tile_options(tile, tile_stride, mode, crop, stride, ms_flip)
        ratios = ms_flip_ratios(scales, ms_flip)
        self.device = resolve_device(device) if isinstance(device, str) else torch.device(device)
        self.precision = precision
        self.loaded = loaded
        self.model = prepare_model(
            loaded.model, loaded.entry.model, self.device, precision, compile=compile
        )
        self.test = resolve_test_spec(loaded.entry, mode=mode, crop=crop, stride=stride)
        self.test = dataclasses.replace(
            self.test, scale=resolve_scale(loaded.entry, scale, tiled=tile is not None)
        )
        self.tile = tuple(tile) if tile is not None else None
        self.tile_stride = tile_stride or (default_slide_stride(tile) if tile is not None else None)
        self.tile_accumulate = tile_accumulate
        self.confidence = ConfidenceSpec(measure=uncertainty, min_confidence=min_confidence)
        self.ms_flip = ms_flip
        self.ratios = ratios
        if window_batch is None and tile is not None:
            window_batch = 4 if self.device.type == "cuda" else 1  # a few tiles: a few GB at most
        elif window_batch is None:
            window_batch = recommended_window_batch(self.device, self.test)
        self.window_batch = max(1, window_batch)
        self.on_warning = on_warning
        self.fallback_test = dataclasses.replace(
            resolve_test_spec(loaded.entry, mode="slide"), scale=self.test.scale
        )
        # Images with at least this many pixels go straight to slide: whole ran out of memory.
        self._slide_from_pixels: int | None = None

    @classmethod
    def from_zoo(
        cls,
        name: str,
        *,
        device: str | torch.device = "auto",
        on_download: Callable[[int, int | None], None] | None = None,
        on_status: Callable[[str], None] | None = None,
        **options: object,
    ) -> Segmenter:
        """A zoo model by name or alias, with its published weights (downloaded on first use).

        ``options`` are the keyword arguments of ``Segmenter`` (precision, mode, ms_flip, ...).
        """
        loaded = load_model(resolve_entry(name), on_download=on_download, on_status=on_status)
        return cls(loaded, device=device, **options)  # type: ignore[arg-type]

    @classmethod
    def from_checkpoint(
        cls,
        path: str | Path,
        model: str | ZooEntry | None = None,
        *,
        trust: bool = False,
        device: str | torch.device = "auto",
        **options: object,
    ) -> Segmenter:
        """A local checkpoint; ``model`` (zoo name or entry) gives the architecture when the file's
        meta does not (checkpoints written by isaseg carry it: ``isaseg train``'s, and the
        random-weight ones of ``isaseg make-synthetic --checkpoint``). Nothing is downloaded."""
        entry = resolve_entry(model) if isinstance(model, str) else model
        loaded = load_model(entry, path, trust=trust)
        return cls(loaded, device=device, **options)  # type: ignore[arg-type]

    @property
    def classes(self) -> tuple[str, ...]:
        return self.loaded.classes

    @property
    def palette(self) -> Palette:
        return self.loaded.palette

    @property
    def num_classes(self) -> int:
        return len(self.loaded.classes)

    @overload
    def __call__(
        self,
        image: ImageInput,
        *,
        return_probs: Literal[False] = ...,
        return_confidence: Literal[False] = ...,
        rgb: bool = ...,
    ) -> np.ndarray: ...

    @overload
    def __call__(
        self,
        image: ImageInput,
        *,
        return_probs: bool = ...,
        return_confidence: bool = ...,
        rgb: bool = ...,
    ) -> tuple[np.ndarray, ...]: ...

    def __call__(
        self,
        image: ImageInput,
        *,
        return_probs: bool = False,
        return_confidence: bool = False,
        rgb: bool = False,
    ) -> np.ndarray | tuple[np.ndarray, ...]:
        """Segments one image (a path or an array); see the class docstring for conventions.

        Returns:
            The mask (H, W); with ``return_probs`` also the class probabilities (K, H, W)
            float32 (softmax of the logits; with ms_flip, the mean over the views); with
            ``return_confidence`` also the ``uncertainty`` map (H, W) (float32; float16 in tile
            mode), in that order. ``min_confidence`` applies to the mask in every case.
        """
        if not return_confidence and self.confidence.min_confidence is None and self.tile is None:
            return self._finish(self.scores(as_bgr(image, rgb=rgb)), return_probs)
        spec = ConfidenceSpec(
            measure=self.confidence.measure if return_confidence else None,
            min_confidence=self.confidence.min_confidence,
            probs=return_probs,
        )
        result = self.segment(image, spec=spec, rgb=rgb)
        extra = [result.probs] if return_probs else []
        extra += [result.confidence] if return_confidence else []
        return (result.mask, *extra) if extra else result.mask  # type: ignore[return-value]

    def segment(
        self, image: ImageInput, *, spec: ConfidenceSpec | None = None, rgb: bool = False
    ) -> SegmentationResult:
        """The mask, per-image statistics and what ``spec`` asks (default: the ``uncertainty``
        map and ``min_confidence`` masking given to the constructor).

        Raises:
            InputError: probabilities asked of a tiled segmenter (K x H x W is what tiling
                avoids holding).
        """
        return self.segment_batch([image], spec=spec, rgb=rgb)[0]

    def segment_batch(
        self,
        images: Sequence[ImageInput],
        *,
        spec: ConfidenceSpec | None = None,
        rgb: bool = False,
    ) -> list[SegmentationResult]:
        """``segment`` for several images, batched as ``predict_batch`` (tiles: one by one)."""
        spec = spec or self.confidence
        arrays = [as_bgr(image, rgb=rgb) for image in images]
        if self.tile is None:
            return [collect(s, spec, are_probs=self.ms_flip) for s in self._all_scores(arrays)]
        assert self.tile_stride is not None
        with autocast(self.device, self.precision):
            return [
                segment_tiled(
                    self.model,
                    array,
                    self.tile,  # type: ignore[arg-type]
                    self.tile_stride,
                    scale=self.test.scale,
                    spec=spec,
                    device=self.device,
                    window_batch=self.window_batch,
                    accumulate=self.tile_accumulate,
                )
                for array in arrays
            ]

    def predict_batch(
        self, images: Sequence[ImageInput], *, return_probs: bool = False, rgb: bool = False
    ) -> list[np.ndarray] | list[tuple[np.ndarray, np.ndarray]]:
        """Segments several images, in order; those whose resized sizes match share a forward pass.

        Batching applies to single-scale inference (whole or slide); ms_flip runs image by image.
        Batched results equal per-image ones up to float rounding of the convolutions.
        """
        if self.tile is not None or self.confidence.min_confidence is not None:
            return [self(image, return_probs=return_probs, rgb=rgb) for image in images]
        arrays = [as_bgr(image, rgb=rgb) for image in images]
        return [self._finish(scores, return_probs) for scores in self._all_scores(arrays)]

    def _finish(
        self, scores: Tensor, return_probs: bool
    ) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
        dtype = np.uint8 if scores.shape[1] <= 256 else np.int64
        mask = scores[0].argmax(dim=0).cpu().numpy().astype(dtype)
        if not return_probs:
            return mask
        probs = scores[0] if self.ms_flip else scores[0].softmax(dim=0)
        return mask, probs.float().cpu().numpy()

    def prepared_test(self) -> TestSpec | None:
        """The test settings that ``segment_prepared`` expects its inputs prepared for
        (``protocol.prepare_image``, e.g. in decode workers), or None when this segmenter needs
        the decoded images themselves (ms+flip resizes each image to several views, tiles cut
        the original)."""
        return None if self.ms_flip or self.tile is not None else self.test

    @torch.no_grad()
    def segment_prepared(
        self,
        images: Sequence[np.ndarray],
        inputs: Sequence[np.ndarray],
        *,
        spec: ConfidenceSpec | None = None,
    ) -> list[SegmentationResult]:
        """``segment_batch`` of BGR ``images`` whose ``inputs`` were already made by
        ``prepare_image(image, prepared_test())`` (e.g. in decode workers): the same results,
        without the resize in this thread. Inputs of one size share a forward pass.

        A batch is normalised on the device. On CUDA it is stacked into page-locked memory and
        copied as uint8 without blocking, so the copy overlaps the launch of the forward. Images
        that run out of memory together are retried one by one from the decoded image
        (``scores``: whole falls back to slide), as are images already known to need slide.

        Raises:
            InputError: a segmenter without single-scale inputs (``prepared_test`` is None).
        """
        if self.prepared_test() is None:
            raise InputError("ms_flip and tiles segment decoded images: use segment_batch")
        spec = spec or self.confidence
        groups: dict[tuple[int, ...], list[int]] = {}
        alone = []  # whole already ran out of memory at this size: slide, from the image
        for index, (image, prepared) in enumerate(zip(images, inputs, strict=True)):
            if self._needs_slide_fallback(image):
                alone.append(index)
            else:
                groups.setdefault(prepared.shape, []).append(index)
        scores: dict[int, Tensor] = {index: self.scores(images[index]) for index in alone}
        for indices in groups.values():
            batch = self._prepared_scores(images, inputs, indices)
            for position, index in enumerate(indices):
                scores[index] = batch[position] if batch is not None else self.scores(images[index])
        return [collect(scores[i], spec, are_probs=False) for i in range(len(images))]
