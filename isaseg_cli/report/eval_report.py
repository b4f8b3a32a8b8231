"""``isaseg eval --report DIR``: per-image metrics gathered during the evaluation, then one folder
with index.html, the plots, the confusion matrix and per-image CSVs and a gallery of the worst
images. The folder is built beside DIR and moved into place, so DIR is never half-written."""

from __future__ import annotations

import csv
import hashlib
import heapq
import io
import math
import os
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from isaseg_cli.data.base import IGNORE_INDEX
from isaseg_cli.data.image import read_image_bgr
from isaseg_cli.data.loader import EvalRecord
from isaseg_cli.data.mask_io import temporary_sibling
from isaseg_cli.errors import InputError
from isaseg_cli.report import html, plots

WORST_IMAGES = 8
PANEL_SIDE = 480  # longest side of a gallery panel, in pixels
INDEX = "index.html"
# Error map colours (RGB): right, wrong and ignored pixels.
RIGHT, WRONG, IGNORED = (60, 60, 60), (230, 40, 40), (255, 255, 255)


@dataclass(frozen=True, slots=True)
class ImageMetrics:
    """One image's scores in percent; NaN when it has no counted pixel.

    ``miou`` averages the IoU of the classes present in its label or its prediction (the
    split-level NaN rule, applied to one image); ``worst_class`` is the label class with the
    lowest IoU (-1 when the label holds no counted pixel).
    """

    image: Path
    pixels: int
    pixel_acc: float
    miou: float
    worst_class: int
    worst_iou: float


def image_confusion(mask: np.ndarray, label: np.ndarray, num_classes: int) -> np.ndarray:
    """The (K, K) int64 counts ``[label, prediction]`` of one image, ignored pixels left out."""
    kept = label != IGNORE_INDEX
    pairs = label[kept].astype(np.int64) * num_classes + mask[kept].astype(np.int64)
    return np.bincount(pairs, minlength=num_classes**2).reshape(num_classes, num_classes)


def metrics_of(counts: np.ndarray, image: Path) -> ImageMetrics:
    """ImageMetrics from one image's confusion counts."""
    intersect = np.diag(counts).astype(np.float64)
    area_label, area_pred = counts.sum(axis=1), counts.sum(axis=0)
    union = area_label + area_pred - intersect
    present = union > 0
    iou = np.divide(intersect, union, out=np.full(len(union), np.nan), where=present) * 100
    pixels = int(area_label.sum())
    in_label = np.flatnonzero(area_label > 0)
    worst = int(in_label[np.argmin(iou[in_label])]) if in_label.size else -1
    return ImageMetrics(
        image=image,
        pixels=pixels,
        pixel_acc=100 * intersect.sum() / pixels if pixels else math.nan,
        miou=float(iou[present].mean()) if present.any() else math.nan,
        worst_class=worst,
        worst_iou=float(iou[worst]) if worst >= 0 else math.nan,
    )


class ReportCollector:
    """Takes every evaluated image (the ``on_image`` callback of ``engine.evaluate.evaluate``).

    It sums the split's confusion matrix, keeps each image's metrics and the ``worst`` images
    with the lowest mIoU (their label and prediction, for the gallery).
    """

    def __init__(self, num_classes: int, worst: int = WORST_IMAGES) -> None:
        self.num_classes = num_classes
        self.counts = np.zeros((num_classes, num_classes), dtype=np.int64)
        self.rows: list[ImageMetrics] = []
        self.worst = worst
        # The lowest ``worst`` by mIoU, as a max-heap: (-mIoU, order, metrics, label, mask).
        self._heap: list[tuple[float, int, ImageMetrics, np.ndarray, np.ndarray]] = []

    def add(self, record: EvalRecord, mask: np.ndarray) -> None:
        counts = image_confusion(mask, record.label, self.num_classes)
        self.counts += counts
        row = metrics_of(counts, record.image_path)
        self.rows.append(row)
        if math.isnan(row.miou):
            return
        item = (-row.miou, len(self.rows), row, record.label.copy(), mask.astype(np.uint8))
        if len(self._heap) < self.worst:
            heapq.heappush(self._heap, item)
        elif item[0] > self._heap[0][0]:
            heapq.heapreplace(self._heap, item)

    def worst_images(self) -> list[tuple[ImageMetrics, np.ndarray, np.ndarray]]:
        """(metrics, label, prediction) of the worst images, lowest mIoU first."""
        return [(row, label, mask) for _, _, row, label, mask in sorted(self._heap, reverse=True)]

    def mean_image_miou(self) -> float:
        values = [row.miou for row in self.rows if not math.isnan(row.miou)]
        return float(np.mean(values)) if values else math.nan


def check_report_dir(target: Path) -> None:
    """Before the evaluation: the extra is installed and ``target`` is new, empty or a report.

    Raises:
        InputError: matplotlib is missing, or ``target`` is a file or a folder of other files.
    """
    plots.require_matplotlib()
    if target.exists() and not target.is_dir():
        raise InputError(f"--report {target} is a file; give a folder")
    if target.is_dir() and any(target.iterdir()) and not (target / INDEX).is_file():
        raise InputError(
            f"--report {target} holds other files; give a new or empty folder or an earlier report"
        )


def write_report(
    target: Path,
    collector: ReportCollector,
    payload: dict[str, Any],
    *,
    classes: Sequence[str],
    palette: Sequence[Sequence[int]],
) -> Path:
    """Writes the report folder (replacing an earlier report there) and returns index.html.

    Args:
        target: the folder.
        collector: what the evaluation gathered.
        payload: ``isaseg eval``'s JSON record (the numbers the terminal shows).
        classes: the class names.
        palette: an RGB colour per class for the gallery.

    Raises:
        InputError: ``target`` cannot be written, or is neither new, empty nor a report.
    """
    check_report_dir(target)
    work = temporary_sibling(target, ".tmp")
    try:
        work.mkdir(parents=True)
        _write_contents(work, collector, payload, classes, palette)
        _publish(work, target)
    except OSError as exc:
        raise InputError(f"cannot write the report {target}: {exc.strerror or exc}") from None
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return target / INDEX


def _write_contents(
    folder: Path,
    collector: ReportCollector,
    payload: dict[str, Any],
    classes: Sequence[str],
    palette: Sequence[Sequence[int]],
) -> None:
    root = Path(payload["settings"]["data_root"])
    _write_csv(folder / "confusion_matrix.csv", _confusion_rows(collector.counts, classes))
    _write_csv(folder / "per_image.csv", _image_rows(collector.rows, classes, root))
    plots.confusion_heatmap(collector.counts, classes, folder / "confusion_matrix.png")
    per_class = payload["per_class"]
    iou, acc = [r["IoU"] for r in per_class], [r["Acc"] for r in per_class]
    plots.class_bars(iou, acc, classes, folder / "per_class.png")
    gallery = []
    for rank, (row, label, mask) in enumerate(collector.worst_images(), start=1):
        names = _write_panels(folder / "worst", rank, row.image, label, mask, palette)
        worst = classes[row.worst_class] if row.worst_class >= 0 else "-"
        gallery.append({"row": row, "name": _shown(row.image, root), "worst": worst, **names})
    checkpoint = payload["settings"].get("checkpoint")
    page = html.render_index(
        payload,
        checkpoint_sha256=_sha256(Path(checkpoint)) if checkpoint else None,
        mean_image_miou=collector.mean_image_miou(),
        gallery=gallery,
    )
    (folder / INDEX).write_text(page, encoding="utf-8")


def _write_csv(path: Path, rows: list[list[Any]]) -> None:
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\n").writerows(rows)
    path.write_text(buffer.getvalue(), encoding="utf-8")


def _confusion_rows(counts: np.ndarray, classes: Sequence[str]) -> list[list[Any]]:
    """Raw pixel counts: a header of predicted classes, then one row per label class."""
    header: list[Any] = ["label \\ prediction", *classes]
    return [header] + [[name, *map(int, counts[c])] for c, name in enumerate(classes)]


def _image_rows(rows: list[ImageMetrics], classes: Sequence[str], root: Path) -> list[list[Any]]:
    header: list[Any] = ["image", "pixels", "pixel_accuracy", "mIoU", "worst_class", "worst_IoU"]
    return [header] + [
        [
            _shown(row.image, root),
            row.pixels,
            _number(row.pixel_acc),
            _number(row.miou),
            classes[row.worst_class] if row.worst_class >= 0 else "",
            _number(row.worst_iou),
        ]
        for row in rows
    ]


def _number(value: float) -> str:
    return "" if math.isnan(value) else f"{value:.4f}"


def _shown(path: Path, root: Path) -> str:
    """An image path relative to the data root (the report names the root) when it is under it."""
    try:
        return path.relative_to(root).as_posix()
    except ValueError:
        return str(path)


def _write_panels(
    folder: Path,
    rank: int,
    image_path: Path,
    label: np.ndarray,
    mask: np.ndarray,
    palette: Sequence[Sequence[int]],
) -> dict[str, str]:
    """Image, label, prediction and error map as PNGs; returns their paths within the report."""
    folder.mkdir(exist_ok=True)
    colours = np.zeros((256, 3), dtype=np.uint8)
    colours[: len(palette)] = np.asarray(palette, dtype=np.uint8).reshape(-1, 3)[:256]
    colours[IGNORE_INDEX] = IGNORED
    errors = np.where(label == mask, 0, 1).astype(np.uint8)
    errors[label == IGNORE_INDEX] = 2
    panels = {
        "image": read_image_bgr(image_path)[:, :, ::-1],
        "label": colours[label],
        "prediction": colours[mask],
        "errors": np.array([RIGHT, WRONG, IGNORED], dtype=np.uint8)[errors],
    }
    names = {}
    for kind, rgb in panels.items():
        height, width = rgb.shape[:2]
        scale = min(1.0, PANEL_SIDE / max(height, width))
        if scale < 1.0:
            size = (max(1, round(width * scale)), max(1, round(height * scale)))
            method = cv2.INTER_AREA if kind == "image" else cv2.INTER_NEAREST
            rgb = cv2.resize(np.ascontiguousarray(rgb), size, interpolation=method)
        name = f"{rank:02d}_{kind}.png"
        ok, encoded = cv2.imencode(".png", np.ascontiguousarray(rgb[:, :, ::-1]))
        if not ok:
            raise InputError(f"cannot encode the gallery image {name}")
        (folder / name).write_bytes(encoded.tobytes())
        names[kind] = f"{folder.name}/{name}"
    return names


def _sha256(path: Path) -> str | None:
    if not path.is_file():
        return None
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _publish(work: Path, target: Path) -> None:
    """Moves the finished folder to ``target``; an earlier report there is removed after."""
    old = None
    if target.exists():
        old = temporary_sibling(target, ".old")
        os.replace(target, old)
    os.replace(work, target)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
