"""``isaseg check-data``: every pair and label of the splits, label statistics and class weights;
and ``check_before_run``, its cheap part that ``train`` and ``eval`` run before starting."""

from __future__ import annotations

import functools
import multiprocessing
import signal
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from isaseg_cli.data.base import IGNORE_INDEX, Sample
from isaseg_cli.data.image_header import DEFAULT_MAX_PIXELS
from isaseg_cli.engine.progress import ProgressCallback, ProgressEvent
from isaseg_cli.errors import DatasetNotFoundError
from isaseg_cli.report.label_check import REDUCED, LabelReport, check_header, inspect_label
from isaseg_cli.report.pairing import Finding, pair_split
from isaseg_cli.zoo.spec import DataSpec

# Progress events per label would flood the terminal renderer on 3,000-file splits.
PROGRESS_EVERY = 16


@dataclass(frozen=True, slots=True)
class ClassStat:
    """A class's pixels over the checked labels and two suggested loss weights (None if absent):
    inverse frequency scaled to mean 1 over the present classes, and median frequency balancing
    (median class frequency / class frequency, Eigen & Fergus 2015)."""

    name: str
    pixels: int
    share: float
    inverse_weight: float | None
    median_weight: float | None


@dataclass(frozen=True, slots=True)
class CheckDataResult:
    """What ``check_dataset`` found; ``clean`` when there is neither a finding nor a hint."""

    dataset: str
    root: Path
    splits: tuple[str, ...]
    reduce_zero_label: bool
    images: int
    findings: tuple[Finding, ...]
    histogram: tuple[int, ...]
    classes: tuple[ClassStat, ...]
    ignored_pixels: int
    total_pixels: int
    hints: tuple[str, ...]
    seconds: float

    @property
    def clean(self) -> bool:
        return not self.findings and not self.hints

    @property
    def absent(self) -> tuple[str, ...]:
        return tuple(stat.name for stat in self.classes if stat.pixels == 0)

    def to_dict(self) -> dict[str, Any]:
        return {
            "dataset": self.dataset,
            "root": str(self.root),
            "splits": list(self.splits),
            "reduce_zero_label": self.reduce_zero_label,
            "images": self.images,
            "clean": self.clean,
            "findings": [finding.to_dict() for finding in self.findings],
            "hints": list(self.hints),
            "label_values": {str(v): n for v, n in enumerate(self.histogram) if n},
            "ignored_pixels": self.ignored_pixels,
            "total_pixels": self.total_pixels,
            "ignored_share": self.ignored_pixels / self.total_pixels if self.total_pixels else None,
            "absent_classes": list(self.absent),
            "classes": [
                {
                    "class": s.name,
                    "pixels": s.pixels,
                    "share": s.share,
                    "inverse_frequency_weight": s.inverse_weight,
                    "median_frequency_weight": s.median_weight,
                }
                for s in self.classes
            ],
            "seconds": round(self.seconds, 3),
        }


def check_before_run(
    spec: DataSpec, root: Path, split: str, max_pixels: int = DEFAULT_MAX_PIXELS
) -> None:
    """Pairing, sizes and channel counts of ``split`` from file headers, before a run starts.

    Raises:
        DatasetNotFoundError: the first finding (with how many there are), or the reader's
            message when the root, a split folder or all images are missing.
    """
    pairing = pair_split(spec, root, split)
    findings = list(pairing.findings)
    for sample in pairing.samples:
        findings += check_header(sample, max_pixels)
    if findings:
        more = len(findings) - 1
        tail = f" ({more} more in the {split} split; isaseg check-data lists them all)"
        raise DatasetNotFoundError(findings[0].message + (tail if more else ""))


def check_dataset(
    spec: DataSpec,
    root: Path,
    splits: Sequence[str],
    *,
    classes: Sequence[str],
    palette: Sequence[Sequence[int]] = (),
    workers: int = 0,
    on_progress: ProgressCallback | None = None,
) -> CheckDataResult:
    """Checks every pair and every label of ``splits`` and gathers the label statistics.

    Args:
        spec: the layout (dataset, suffixes) and ``reduce_zero_label``.
        root: the dataset root.
        splits: e.g. ``("train", "val")``.
        classes: the class names; their count is the valid value range.
        palette: the dataset's colours, to explain an RGB label drawn in them.
        workers: processes decoding labels (0: in this process).
        on_progress: ``ProgressEvent("check labels", done, total)``.

    Raises:
        DatasetNotFoundError: a root, split folder or split file is missing, or a split is empty.
    """
    start = time.perf_counter()
    samples: list[Sample] = []
    findings: list[Finding] = []
    for split in splits:
        pairing = pair_split(spec, root, split)
        samples += pairing.samples
        findings += pairing.findings
    inspect = functools.partial(
        inspect_label,
        num_classes=len(classes),
        reduce_zero_label=spec.reduce_zero_label,
        palette=tuple(palette),
    )
    histogram = np.zeros(256, dtype=np.int64)
    if on_progress is not None:
        on_progress(ProgressEvent("check labels", 0, len(samples)))
    for done, report in enumerate(_reports(inspect, samples, workers), start=1):
        findings += report.findings
        if report.histogram is not None:
            histogram += report.histogram
        if on_progress is not None and (done % PROGRESS_EVERY == 0 or done == len(samples)):
            on_progress(ProgressEvent("check labels", done, len(samples)))
    findings.sort(key=lambda finding: (str(finding.path), finding.kind))
    reduced = np.bincount(
        (REDUCED if spec.reduce_zero_label else np.arange(256)), weights=histogram, minlength=256
    ).astype(np.int64)
    return CheckDataResult(
        dataset=spec.dataset,
        root=root,
        splits=tuple(splits),
        reduce_zero_label=spec.reduce_zero_label,
        images=len(samples) + sum(f.kind == "missing label" for f in findings),
        findings=tuple(findings),
        histogram=tuple(int(n) for n in histogram),
        classes=class_stats(reduced[: len(classes)], classes),
        ignored_pixels=int(reduced[IGNORE_INDEX]),
        total_pixels=int(histogram.sum()),
        hints=reduce_zero_label_hints(histogram, len(classes), spec.reduce_zero_label),
        seconds=time.perf_counter() - start,
    )


def class_stats(pixels: np.ndarray, names: Sequence[str]) -> tuple[ClassStat, ...]:
    """Shares and suggested weights from per-class pixel counts (absent classes get no weight)."""
    total = pixels.sum()
    share = pixels / total if total else np.zeros(len(pixels))
    present = share > 0
    inverse = np.zeros(len(pixels))
    median = np.zeros(len(pixels))
    if present.any():
        inverse[present] = 1.0 / share[present]
        inverse[present] /= inverse[present].mean()
        median[present] = np.median(share[present]) / share[present]
    return tuple(
        ClassStat(
            name=name,
            pixels=int(pixels[c]),
            share=float(share[c]),
            inverse_weight=float(inverse[c]) if present[c] else None,
            median_weight=float(median[c]) if present[c] else None,
        )
        for c, name in enumerate(names)
    )


def reduce_zero_label_hints(
    histogram: np.ndarray, num_classes: int, reduce_zero_label: bool
) -> tuple[str, ...]:
    """A hint when the stored values say reduce_zero_label is wrong for this data.

    Needed: 0 and K both occur and nothing above K (but 255), so 0 reads as "unlabelled" and the
    K classes as 1..K (ADE20K's convention). Not needed: it is on, but no pixel holds 0 (the
    value it turns into ignore), or 255 already marks ignored pixels and no value reaches K: the
    labels look 0-based, and would all shift down by one.
    """
    stored = [v for v in np.flatnonzero(histogram) if v != IGNORE_INDEX]
    if not stored:
        return ()
    zero_based = 0 not in stored or (histogram[IGNORE_INDEX] > 0 and max(stored) < num_classes)
    if not reduce_zero_label and 0 in stored and max(stored) == num_classes:
        return (
            f"the labels hold values 0..{num_classes} for {num_classes} classes: 0 looks like "
            f"'unlabelled' and the classes like 1..{num_classes}; set reduce_zero_label "
            "(check-data --reduce-zero-label; train/eval --set data.reduce_zero_label=true)",
        )
    if reduce_zero_label and zero_based:
        return (
            "reduce_zero_label is on, but the labels look 0-based (255 marks ignored pixels or "
            "no pixel holds 0, and no value reaches the class count): it would turn class 0 "
            "into 'ignore' and shift every class down by one; check with --no-reduce-zero-label",
        )
    return ()


def _reports(inspect: Any, samples: list[Sample], workers: int) -> Iterator[LabelReport]:
    if workers == 0 or len(samples) < 2:
        yield from map(inspect, samples)
        return
    with multiprocessing.Pool(workers, initializer=_init_worker) as pool:
        yield from pool.imap_unordered(inspect, samples, chunksize=8)


def _init_worker() -> None:
    # Ctrl-C is the parent's to handle; OpenCV's threads would oversubscribe the workers' cores.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    cv2.setNumThreads(0)
