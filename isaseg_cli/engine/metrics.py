"""mIoU, mAcc and aAcc from a confusion matrix accumulated over a whole split.

The rules are mmseg's (docs/FAITHFULNESS.md#metrics).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor


@dataclass(frozen=True, slots=True)
class MetricsResult:
    """Per-class IoU and accuracy and the three summary figures, all in percent (unrounded).

    ``iou[c]`` is NaN for a class absent from both labels and predictions, ``acc[c]`` for a class
    absent from the labels; the means leave NaN classes out, as mmseg does.
    """

    iou: tuple[float, ...]
    acc: tuple[float, ...]
    aacc: float
    miou: float
    macc: float
    classes: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: ``aAcc``/``mIoU``/``mAcc`` and a ``per_class`` list; NaN becomes None."""
        names = self.classes or tuple(str(c) for c in range(len(self.iou)))
        return {
            "aAcc": _finite(self.aacc),
            "mIoU": _finite(self.miou),
            "mAcc": _finite(self.macc),
            "per_class": [
                {"class": name, "IoU": _finite(iou), "Acc": _finite(acc)}
                for name, iou, acc in zip(names, self.iou, self.acc, strict=True)
            ],
        }


class ConfusionMatrix:
    """An int64 count matrix of (label, prediction) pairs, kept on ``device``.

    Rows are ground-truth classes, columns predicted classes. Besides the K classes there is one
    extra row and column for values outside 0..K-1 (other than the ignore index): mmseg counts a
    kept pixel in each histogram whose range its value falls in, so a pixel with an out-of-range
    label still adds to its prediction's area. They are zero with checked labels.

    Args:
        num_classes: K.
        ignore_index: label value whose pixels are not counted at all.
        device: where the matrix lives (that of the tensors passed to ``update``).
    """

    def __init__(
        self, num_classes: int, ignore_index: int = 255, device: torch.device | str | None = None
    ) -> None:
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        size = num_classes + 1
        self.counts = torch.zeros((size, size), dtype=torch.int64, device=device)

    @property
    def matrix(self) -> Tensor:
        """The K x K part: ``matrix[label, prediction]``."""
        return self.counts[: self.num_classes, : self.num_classes]

    def update(self, pred: Tensor, label: Tensor) -> None:
        """Adds the pixels of predictions and labels of the same shape (any integer dtype)."""
        if pred.shape != label.shape:
            raise ValueError(f"prediction shape {tuple(pred.shape)} != label {tuple(label.shape)}")
        k = self.num_classes
        label = label.to(self.counts.device, torch.int64).flatten()
        pred = pred.to(self.counts.device, torch.int64).flatten()
        kept = label != self.ignore_index
        label, pred = label[kept], pred[kept]
        # Out-of-range values go to the extra row/column K.
        label = torch.where((label >= 0) & (label < k), label, k)
        pred = torch.where((pred >= 0) & (pred < k), pred, k)
        self.counts += torch.bincount(label * (k + 1) + pred, minlength=(k + 1) ** 2).view(
            k + 1, k + 1
        )

    def all_reduce(self) -> None:
        """Sums the matrices of all processes when torch.distributed is initialised."""
        if dist.is_available() and dist.is_initialized():
            dist.all_reduce(self.counts, op=dist.ReduceOp.SUM)

    def compute(self, classes: Sequence[str] = ()) -> MetricsResult:
        """Derives IoU, Acc, aAcc, mIoU and mAcc from the counts so far (in float64)."""
        k = self.num_classes
        if classes and len(classes) != k:
            raise ValueError(f"{len(classes)} class names given for {k} classes")
        counts = self.counts.double().cpu()
        intersect = counts.diagonal()[:k]
        area_label = counts[:k].sum(dim=1)  # all predictions, in range or not
        area_pred = counts[:, :k].sum(dim=0)  # all kept labels, in range or not
        union = area_pred + area_label - intersect
        iou = intersect / union  # 0/0 = NaN: the class is absent from labels and predictions
        acc = intersect / area_label
        total_label = area_label.sum()
        aacc = (intersect.sum() / total_label).item() if total_label > 0 else math.nan
        return MetricsResult(
            iou=tuple((iou * 100).tolist()),
            acc=tuple((acc * 100).tolist()),
            aacc=aacc * 100,
            miou=_nanmean(iou) * 100,
            macc=_nanmean(acc) * 100,
            classes=tuple(classes),
        )


def _nanmean(values: Tensor) -> float:
    valid = values[~values.isnan()]
    return valid.mean().item() if valid.numel() else math.nan


def _finite(value: float) -> float | None:
    return None if math.isnan(value) else value
