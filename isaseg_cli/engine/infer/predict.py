"""The work of ``isaseg predict``: segment the planned inputs and write their results.

Nothing here prints; progress goes through ``on_progress`` and the outcome is a ``PredictResult``.
One input that cannot be read, decoded or segmented is recorded and the others go on; an output
that cannot be written (read-only, disk full) stops the run, since the next ones would fail too.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np

from isaseg_cli.data.image import read_image_bgr
from isaseg_cli.data.image_header import DEFAULT_MAX_PIXELS
from isaseg_cli.data.mask_io import colorize, overlay, save_image_bgr, save_index_png
from isaseg_cli.data.tiff import is_tiff, read_geo_tags, save_tiff
from isaseg_cli.data.video import VideoReader, VideoWriter
from isaseg_cli.engine.failure import failure_for
from isaseg_cli.engine.infer import confidence
from isaseg_cli.engine.infer.predict_plan import (
    IMAGE_EXTENSIONS,
    Job,
    PredictPlan,
    Source,
    expand_inputs,
    plan_predict,
)
from isaseg_cli.engine.progress import ProgressCallback, ProgressEvent
from isaseg_cli.errors import InputError, OutputError
from isaseg_cli.zoo.classes import CITYSCAPES

if TYPE_CHECKING:  # not imported at run time: an exported network segments without torch
    from isaseg_cli.engine.infer.segmenter import Segmenter

__all__ = ["IMAGE_EXTENSIONS", "PredictResult", "Source", "expand_inputs", "predict", "run_plan"]
T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class PredictResult:
    """What ``predict`` did.

    Attributes:
        inputs: inputs planned (skipped ones included).
        masks, overlays, probs, confidences: the files written, by kind.
        failures: (input, reason) for inputs that could not be read, decoded or segmented.
        images: segmented images and video frames (whether or not their results were written).
        skipped: inputs left out because their results existed (``skip_existing``).
        interrupted: Ctrl-C stopped the run; the files listed are complete.
        stopped: the write error that stopped the run, if one did.
        per_image: per segmented image, its input, mean confidence and pixels per class.
    """

    inputs: int
    masks: tuple[Path, ...]
    overlays: tuple[Path, ...]
    probs: tuple[Path, ...]
    failures: tuple[tuple[str, str], ...]
    images: int
    seconds: float
    output_dir: Path
    overlay_dir: Path | None = None
    warnings: tuple[str, ...] = field(default=())
    skipped: int = 0
    interrupted: bool = False
    stopped: str | None = None
    confidences: tuple[Path, ...] = ()
    per_image: tuple[dict[str, Any], ...] = ()

    @property
    def outputs(self) -> tuple[Path, ...]:
        return self.masks + self.overlays + self.probs + self.confidences

    @property
    def images_per_s(self) -> float:
        return self.images / self.seconds if self.seconds > 0 else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "inputs": self.inputs,
            "outputs": [str(path) for path in self.outputs],
            "masks": [str(path) for path in self.masks],
            "overlays": [str(path) for path in self.overlays],
            "probs": [str(path) for path in self.probs],
            "confidence": [str(path) for path in self.confidences],
            "per_image": list(self.per_image),
            "failures": [{"input": name, "reason": reason} for name, reason in self.failures],
            "images": self.images,
            "seconds": round(self.seconds, 4),
            "images_per_s": round(self.images_per_s, 4),
            "output_dir": str(self.output_dir),
            "overlay_dir": None if self.overlay_dir is None else str(self.overlay_dir),
            "skipped": self.skipped,
            "interrupted": self.interrupted,
            "stopped": self.stopped,
            "warnings": list(self.warnings),
        }


def check_classes(fmt: str, classes: Sequence[str]) -> None:
    """Raises InputError when ``labelids`` is asked of a model without the Cityscapes classes."""
    if fmt == "labelids" and tuple(classes) != CITYSCAPES.classes:
        raise InputError(
            f"labelids needs a model with the 19 Cityscapes classes; this one has "
            f"{len(classes)} classes"
        )


def _write_image(
    segmenter: Segmenter,
    fmt: str,
    path: Path,
    mask: np.ndarray,
    image: np.ndarray,
    opacity: float,
    source: Path | None = None,
) -> Path:
    palette = confidence.output_palette(segmenter.palette, _confidence(segmenter))
    geo_tags = read_geo_tags(source) if source is not None and is_tiff(path) else ()
    if fmt in ("index", "labelids"):
        indices = mask if fmt == "index" else confidence.label_ids(mask, _confidence(segmenter))
        colors = palette if fmt == "index" else None
        if is_tiff(path):
            return save_tiff(path, indices, palette=colors, geo_tags=geo_tags)
        return save_index_png(path, indices, colors)
    if fmt == "color":
        bgr = np.ascontiguousarray(colorize(mask, palette)[..., ::-1])
    else:
        bgr = overlay(image, mask, palette, opacity)
    if is_tiff(path):
        return save_tiff(path, np.ascontiguousarray(bgr[..., ::-1]), geo_tags=geo_tags)
    return save_image_bgr(path, bgr)


def predict(
    segmenter: Segmenter,
    inputs: Sequence[str | Path] | Sequence[Source],
    *,
    out: str | Path | None = None,
    fmt: str = "index",
    overlay_out: str | Path | None = None,
    opacity: float = 0.5,
    probs_out: str | Path | None = None,
    confidence_out: str | Path | None = None,
    batch_size: int = 1,
    cwd: str | Path | None = None,
    overwrite: bool = False,
    skip_existing: bool = False,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    on_progress: ProgressCallback | None = None,
) -> PredictResult:
    """Segments images and videos and writes one result per input: ``plan_predict`` then
    ``run_plan``. Videos are written in colour (``color``, or ``overlay``): index masks do not
    survive video codecs.

    Args:
        inputs: paths and patterns (see ``expand_inputs``), or its result.
        out, overlay_out, cwd, overwrite, skip_existing: where results go (see ``plan_predict``).
        fmt: ``index`` (palette PNG of class indices), ``color``, ``overlay`` or ``labelids``
            (Cityscapes label ids; needs a Cityscapes model).
        probs_out: save the class probabilities (K, H, W): for one image a ``.npy`` (float32) or
            ``.npz`` (float16, compressed) file, else a folder of ``.npz``.
        confidence_out: save the segmenter's ``uncertainty`` map: for one image a ``.png``
            (0..255) or ``.npy`` (float16) file, else a folder of ``.png``.
        batch_size: images per forward pass (see ``Segmenter.predict_batch``).
        max_pixels: images whose header announces more pixels are refused, never decoded.

    Returns:
        What was written and what failed; unreadable inputs do not stop the others.

    Raises:
        InputError: the inputs or options cannot work (checked before anything is written).
        OutputError: an output cannot be written (checked first as well).
    """
    plan = plan_predict(
        inputs,
        out=out,
        fmt=fmt,
        overlay_out=overlay_out,
        opacity=opacity,
        probs_out=probs_out,
        confidence_out=confidence_out,
        cwd=cwd,
        overwrite=overwrite,
        skip_existing=skip_existing,
    )
    return run_plan(
        segmenter, plan, batch_size=batch_size, max_pixels=max_pixels, on_progress=on_progress
    )


def run_plan(
    segmenter: Segmenter,
    plan: PredictPlan,
    *,
    batch_size: int = 1,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    on_progress: ProgressCallback | None = None,
) -> PredictResult:
    """Does the work of a ``PredictPlan`` (see ``predict``); Ctrl-C ends it early with
    ``interrupted=True`` and a write error with ``stopped`` set, both listing what was written.

    Raises:
        InputError: ``labelids`` for a model without the Cityscapes classes.
    """
    check_classes(plan.fmt, segmenter.classes)
    run = _Run(segmenter, plan, batch_size, max_pixels, on_progress)
    start = time.perf_counter()
    interrupted, stopped = False, None
    try:
        run.images([job for job in plan.jobs if not job.source.is_video])
        for job in plan.jobs:
            if job.source.is_video:
                run.video(job)
    except KeyboardInterrupt:
        interrupted = True
    except OutputError as exc:
        stopped = str(exc)
    warnings = []
    if plan.fmt == "index" and any(job.source.is_video for job in plan.jobs):
        warnings.append("videos are written in colour: index masks do not survive video codecs")
    return PredictResult(
        inputs=len(plan.jobs) + plan.skipped,
        masks=tuple(run.written["mask"]),
        overlays=tuple(run.written["overlay"]),
        probs=tuple(run.written["probs"]),
        confidences=tuple(run.written["confidence"]),
        per_image=tuple(run.per_image),
        failures=tuple(run.failures),
        images=run.count,
        seconds=time.perf_counter() - start,
        output_dir=plan.output_dir,
        overlay_dir=plan.overlay_dir,
        warnings=tuple(warnings),
        skipped=plan.skipped,
        interrupted=interrupted,
        stopped=stopped,
    )


class _Run:
    """The state of one ``predict`` call: what was written, what failed, how many images."""

    def __init__(
        self,
        segmenter: Segmenter,
        plan: PredictPlan,
        batch_size: int,
        max_pixels: int,
        on_progress: ProgressCallback | None,
    ) -> None:
        self.segmenter, self.plan, self.max_pixels = segmenter, plan, max_pixels
        self.batch_size, self.on_progress = batch_size, on_progress
        self.written: dict[str, list[Path]] = {
            "mask": [],
            "overlay": [],
            "probs": [],
            "confidence": [],
        }
        self.per_image: list[dict[str, Any]] = []
        self.spec = confidence.spec_for(_confidence(segmenter), plan)
        self.failures: list[tuple[str, str]] = []
        self.count = 0

    def _progress(self, task: str, completed: int, total: int | None) -> None:
        if self.on_progress is not None:
            self.on_progress(ProgressEvent(task=task, completed=completed, total=total))

    def _fail(self, source: Source, exc: Exception) -> None:
        self.failures.append((str(source.path), failure_for(source.path, exc)))

    def images(self, jobs: list[Job]) -> None:
        if jobs:
            self._progress("images", 0, len(jobs))
        done = 0
        for chunk in _batches(jobs, self.batch_size):
            readable = []
            for job in chunk:
                try:
                    readable.append((read_image_bgr(job.source.path, self.max_pixels), job))
                except Exception as exc:  # whatever the cause, this input fails alone
                    self._fail(job.source, exc)
            for (image, job), result in self._segment(readable):
                self.count += 1
                try:
                    self._save(image, result, job)
                except OutputError:
                    raise
                except Exception as exc:
                    self._fail(job.source, exc)
            done += len(chunk)
            self._progress("images", done, len(jobs))

    def _segment(self, readable: list[tuple[np.ndarray, Job]]) -> Iterator[tuple[Any, Any]]:
        """(item, result) per image that could be segmented: a batch that fails is retried image
        by image, so one bad image does not take the others of its batch with it."""
        arrays = [image for image, _ in readable]
        try:
            segment_batch = getattr(self.segmenter, "segment_batch", None)
            if segment_batch is not None:
                results = segment_batch(arrays, spec=self.spec)
            else:  # an exported network: masks, and probabilities when asked
                predictions = self.segmenter.predict_batch(arrays, return_probs=self.spec.probs)
                num_classes = self.segmenter.num_classes
                results = [confidence.from_prediction(p, num_classes) for p in predictions]
        except Exception as exc:
            if len(readable) == 1:
                self._fail(readable[0][1].source, exc)
                return
            for item in readable:
                yield from self._segment([item])
            return
        yield from zip(readable, results, strict=True)

    def _save(self, image: np.ndarray, result: confidence.SegmentationResult, job: Job) -> None:
        plan, segmenter, mask, source = self.plan, self.segmenter, result.mask, job.source.path
        self.written["mask"].append(
            _write_image(segmenter, plan.fmt, job.mask, mask, image, plan.opacity, source)
        )
        if job.overlay is not None:
            self.written["overlay"].append(
                _write_image(segmenter, "overlay", job.overlay, mask, image, plan.opacity, source)
            )
        for kind, path in confidence.save_extras(result, job):
            self.written[kind].append(path)
        self.per_image.append(confidence.image_record(job.source.path, result, segmenter.classes))

    def _frame(self, fmt: str, mask: np.ndarray, frame: np.ndarray) -> np.ndarray:
        palette = confidence.output_palette(self.segmenter.palette, _confidence(self.segmenter))
        if fmt == "overlay":
            return overlay(frame, mask, palette, self.plan.opacity)
        return np.ascontiguousarray(colorize(mask, palette)[..., ::-1])

    def video(self, job: Job) -> None:
        source = job.source
        targets = [(job.mask, self.plan.fmt, "mask")]
        if job.overlay is not None:
            targets.append((job.overlay, "overlay", "overlay"))
        task, frames = f"frames {source.name}", 0
        try:
            with VideoReader(source.path) as reader, contextlib.ExitStack() as stack:
                writers = [
                    (stack.enter_context(VideoWriter(path, reader.fps)), fmt, kind)
                    for path, fmt, kind in targets
                ]
                for chunk in _batches(reader, self.batch_size):
                    for frame, mask in zip(chunk, self.segmenter.predict_batch(chunk), strict=True):
                        for writer, fmt, _ in writers:
                            writer.write(self._frame(fmt, mask, frame))  # type: ignore[arg-type]
                    frames += len(chunk)
                    self._progress(task, frames, reader.frame_count)
                if not frames:
                    raise InputError(f"no frames could be read from {source.path}")
                for writer, _, kind in writers:
                    self.written[kind].append(writer.commit())
        except OutputError:
            raise
        except Exception as exc:
            self._fail(source, exc)
            return
        self.count += frames


def _confidence(segmenter: Any) -> confidence.ConfidenceSpec:
    """The segmenter's confidence settings; exported networks have none (plain masks)."""
    return getattr(segmenter, "confidence", None) or confidence.ConfidenceSpec()


def _batches(items: Iterable[T], size: int) -> Iterator[list[T]]:
    batch: list[T] = []
    for item in items:
        batch.append(item)
        if len(batch) >= max(1, size):
            yield batch
            batch = []
    if batch:
        yield batch
