"""How sure the model is, per pixel: the top-1 probability, the top-1 minus top-2 margin or the
normalised entropy, plus ``--min-confidence`` masking and per-image statistics.

Everything is computed band by band (a band may be the whole image), so tiled inference never
holds more than one band of class scores; the full-size outputs are one byte (mask) or two bytes
(float16 confidence) per pixel.
"""

from __future__ import annotations

import io
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from isaseg_cli.data.mask_io import atomic_write_bytes, encode_index_png, to_cityscapes_label_ids
from isaseg_cli.errors import InputError

if TYPE_CHECKING:  # torch is imported where scores are taken: exported networks run without it
    from torch import Tensor

MEASURES = ("top1", "margin", "entropy")
IGNORE_INDEX = 255
# Low-confidence pixels in colour and overlay outputs: a neutral mid grey (RGB).
IGNORE_GREY = (128, 128, 128)


@dataclass(frozen=True, kw_only=True, slots=True)
class ConfidenceSpec:
    """What to compute besides the mask.

    Attributes:
        measure: the per-pixel map to return: ``top1`` (probability of the chosen class),
            ``margin`` (top-1 minus top-2 probability) or ``entropy`` (of the class distribution,
            divided by log K, so 0 = certain and 1 = uniform); None for no map.
        min_confidence: pixels whose top-1 probability is below it get ``IGNORE_INDEX`` (255).
        probs: also return the class probabilities (K, H, W) float32 (not in tiled mode).
    """

    measure: str | None = None
    min_confidence: float | None = None
    probs: bool = False

    def __post_init__(self) -> None:
        if self.measure is not None and self.measure not in MEASURES:
            raise InputError(
                f"uncertainty must be one of {', '.join(MEASURES)}, not {self.measure!r}"
            )
        if self.min_confidence is not None and not 0 <= self.min_confidence <= 1:
            raise InputError(f"min-confidence must lie in [0, 1], got {self.min_confidence}")


@dataclass(frozen=True, slots=True)
class ImageStats:
    """Per-image figures for ``--json-out``: the mean top-1 probability and pixels per class
    (after ``--min-confidence``, whose pixels are counted apart as ``low_confidence``)."""

    mean_confidence: float | None
    class_pixels: tuple[int, ...]
    low_confidence: int = 0

    def to_dict(self, classes: Sequence[str]) -> dict[str, Any]:
        counts = {classes[i]: n for i, n in enumerate(self.class_pixels) if n and i < len(classes)}
        mean = self.mean_confidence
        return {
            "mean_confidence": None if mean is None else round(mean, 6),
            "class_pixels": counts,
            "low_confidence_pixels": self.low_confidence,
        }


@dataclass(frozen=True, slots=True)
class SegmentationResult:
    """One image's outputs: mask (H, W), and when asked the confidence map (H, W) of
    ``ConfidenceSpec.measure`` (float32; float16 from tiles) and the probabilities (K, H, W)."""

    mask: np.ndarray
    stats: ImageStats
    confidence: np.ndarray | None = None
    probs: np.ndarray | None = None


def band_measures(scores: Tensor, *, are_probs: bool) -> tuple[Tensor, Tensor, Tensor]:
    """Class index, top-1 probability and probabilities of a band of scores (K, h, w).

    The index is the argmax of the scores themselves (logits, or ms+flip's mean probabilities),
    as the mask has always been; the probabilities are their softmax unless ``are_probs``.
    """
    probs = scores.float() if are_probs else scores.float().softmax(dim=0)  # (K, h, w)
    return scores.argmax(dim=0), probs.amax(dim=0), probs


def measure_map(probs: Tensor, top1: Tensor, measure: str) -> Tensor:
    """The ``measure`` (see ``ConfidenceSpec``) of probabilities (K, h, w), as (h, w) float32."""
    if measure == "top1":
        return top1
    if measure == "margin":
        top2 = probs.topk(2, dim=0).values if probs.shape[0] > 1 else None
        return top1 if top2 is None else top2[0] - top2[1]
    num_classes = probs.shape[0]
    import torch

    if num_classes < 2:
        return torch.zeros_like(top1)
    entropy = -torch.special.xlogy(probs, probs).sum(dim=0)  # 0 log 0 = 0
    return (entropy / math.log(num_classes)).clamp_(0, 1)


class BandCollector:
    """Turns bands of class scores into one image's ``SegmentationResult``, band by band.

    Args:
        height, width: the image's size.
        num_classes: K.
        spec: what to compute.
        are_probs: the scores are probabilities (ms+flip), not logits.
        confidence_dtype: of the confidence map; float16 halves a large image's map.
    """

    def __init__(
        self,
        height: int,
        width: int,
        num_classes: int,
        spec: ConfidenceSpec,
        *,
        are_probs: bool,
        confidence_dtype: type = np.float32,
    ) -> None:
        if spec.min_confidence is not None and num_classes > IGNORE_INDEX:
            raise InputError(
                f"--min-confidence marks pixels {IGNORE_INDEX}, a class of this "
                f"{num_classes}-class model"
            )
        self.spec, self.are_probs, self.num_classes = spec, are_probs, num_classes
        self.mask = np.zeros((height, width), np.uint8 if num_classes <= 256 else np.int64)
        self.confidence = (
            np.zeros((height, width), confidence_dtype) if spec.measure is not None else None
        )
        self.probs = np.zeros((num_classes, height, width), np.float32) if spec.probs else None
        self._counts = np.zeros(num_classes + 1, dtype=np.int64)
        self._top1_sum = 0.0
        self._rows = 0

    def add(self, top: int, scores: Tensor) -> None:
        """Finishes rows ``top .. top + h`` from their scores (K, h, W)."""
        import torch

        index, top1, probs = band_measures(scores, are_probs=self.are_probs)
        rows = slice(top, top + scores.shape[1])
        self._top1_sum += float(top1.double().sum())
        if self.spec.min_confidence is not None:
            index = index.masked_fill(top1 < self.spec.min_confidence, IGNORE_INDEX)
        flat = index.reshape(-1)
        if self.spec.min_confidence is not None:
            flat = torch.where(flat == IGNORE_INDEX, self.num_classes, flat)
        self._counts += torch.bincount(flat.cpu(), minlength=self.num_classes + 1).numpy()
        self.mask[rows] = index.cpu().numpy()
        if self.confidence is not None:
            assert self.spec.measure is not None
            band = measure_map(probs, top1, self.spec.measure)
            self.confidence[rows] = band.cpu().numpy()
        if self.probs is not None:
            self.probs[:, rows] = probs.cpu().numpy()
        self._rows += scores.shape[1]

    def result(self) -> SegmentationResult:
        height, width = self.mask.shape
        assert self._rows == height, f"{self._rows} of {height} rows were finished"
        counts = [int(n) for n in self._counts]
        stats = ImageStats(
            mean_confidence=self._top1_sum / max(height * width, 1),
            class_pixels=tuple(counts[: self.num_classes]),
            low_confidence=counts[self.num_classes],
        )
        return SegmentationResult(self.mask, stats, self.confidence, self.probs)


def collect(
    scores: Tensor, spec: ConfidenceSpec, *, are_probs: bool, rows: int = 64
) -> SegmentationResult:
    """The ``SegmentationResult`` of whole-image scores (1, K, H, W), taken ``rows`` rows at a
    time so the softmax and its companions never add a second K x H x W array."""
    _, num_classes, height, width = scores.shape
    collector = BandCollector(height, width, num_classes, spec, are_probs=are_probs)
    for top in range(0, height, rows):
        collector.add(top, scores[0, :, top : top + rows])
    return collector.result()


def from_prediction(
    prediction: np.ndarray | tuple[np.ndarray, np.ndarray], num_classes: int
) -> SegmentationResult:
    """A ``SegmentationResult`` of a plain ``predict_batch`` result, a mask or (mask,
    probabilities), as exported networks give them: pixel counts, and the mean confidence when
    the probabilities are there."""
    mask, probs = prediction if isinstance(prediction, tuple) else (prediction, None)
    counts = np.bincount(mask.reshape(-1), minlength=num_classes)[:num_classes]
    mean = None if probs is None else float(probs.max(axis=0).mean(dtype=np.float64))
    stats = ImageStats(mean_confidence=mean, class_pixels=tuple(int(n) for n in counts))
    return SegmentationResult(mask, stats, None, probs)


def palette_with_ignore(palette: Sequence[Sequence[int]]) -> list[tuple[int, int, int]]:
    """The palette padded to 256 colours with black, and ``IGNORE_INDEX`` drawn grey."""
    colors = [tuple(int(c) for c in color) for color in palette][:IGNORE_INDEX]
    colors += [(0, 0, 0)] * (IGNORE_INDEX - len(colors))
    return [*colors, IGNORE_GREY]  # type: ignore[list-item]


def confidence_bytes(confidence: np.ndarray, suffix: str) -> bytes:
    """A confidence map (H, W) in [0, 1] as ``.npy`` float16, or any other suffix as an 8-bit
    grayscale PNG (value x 255, rounded)."""
    if suffix.lower() == ".npy":
        buffer = io.BytesIO()
        np.save(buffer, confidence.astype(np.float16, copy=False))
        return buffer.getvalue()
    return encode_index_png(to_uint8(confidence))


def to_uint8(confidence: np.ndarray) -> np.ndarray:
    """[0, 1] -> 0..255, rounded to nearest, computed row block by row block to stay small."""
    out = np.empty(confidence.shape, np.uint8)
    step = max(1, (1 << 22) // max(confidence.shape[-1], 1))
    for start in range(0, confidence.shape[0], step):
        block = confidence[start : start + step].astype(np.float32) * 255 + 0.5
        out[start : start + step] = np.clip(block, 0, 255).astype(np.uint8)
    return out


def save_confidence(path: Path, confidence: np.ndarray) -> Path:
    """Writes a confidence map atomically: ``.npy`` float16, else an 8-bit PNG."""
    return atomic_write_bytes(path, confidence_bytes(confidence, path.suffix))


def save_probs(path: Path, probs: np.ndarray) -> Path:
    """Writes class probabilities (K, H, W) atomically: a ``.npy`` file keeps float32 (as
    ``--probs FILE.npy`` always has); ``.npz`` is float16, compressed, under the key ``probs``."""
    buffer = io.BytesIO()
    if path.suffix.lower() == ".npz":
        np.savez_compressed(buffer, probs=probs.astype(np.float16))
    else:
        np.save(buffer, probs.astype(np.float32, copy=False))
    return atomic_write_bytes(path, buffer.getvalue())


def output_palette(
    palette: Sequence[Sequence[int]], spec: ConfidenceSpec
) -> Sequence[Sequence[int]]:
    """The palette for masks: with ``min_confidence``, ``IGNORE_INDEX`` is drawn grey."""
    return palette_with_ignore(palette) if spec.min_confidence is not None else palette


def label_ids(mask: np.ndarray, spec: ConfidenceSpec) -> np.ndarray:
    """Cityscapes label ids of a trainId mask; low-confidence pixels stay ``IGNORE_INDEX``."""
    ids = to_cityscapes_label_ids(mask)
    if spec.min_confidence is not None:
        ids[mask == IGNORE_INDEX] = IGNORE_INDEX
    return ids


class _Targets(Protocol):
    """A predict plan or job: where the confidence map and the probabilities go, if anywhere."""

    @property
    def confidence(self) -> Path | None: ...

    @property
    def probs(self) -> Path | None: ...


def spec_for(spec: ConfidenceSpec, plan: _Targets) -> ConfidenceSpec:
    """What one ``predict`` run asks of each image: the segmenter's measure and masking, the map
    only if ``--confidence`` is written, the probabilities only if ``--probs`` is."""
    return ConfidenceSpec(
        measure=spec.measure if plan.confidence is not None else None,
        min_confidence=spec.min_confidence,
        probs=plan.probs is not None,
    )


def save_extras(result: SegmentationResult, job: _Targets) -> list[tuple[str, Path]]:
    """Writes a job's confidence map and probabilities, when planned; returns (kind, path)s."""
    written = []
    if job.confidence is not None and result.confidence is not None:
        written.append(("confidence", save_confidence(job.confidence, result.confidence)))
    if job.probs is not None and result.probs is not None:
        written.append(("probs", save_probs(job.probs, result.probs)))
    return written


def image_record(source: Path, result: SegmentationResult, classes: Sequence[str]) -> dict:
    """One image's entry of ``--json-out``'s ``per_image``."""
    return {"input": str(source), **result.stats.to_dict(classes)}
