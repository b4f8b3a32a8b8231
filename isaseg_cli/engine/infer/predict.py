"""The work of ``isaseg predict``: segment the planned inputs and write their results.

Nothing here prints; progress goes through ``on_progress`` and the outcome is a ``PredictResult``.
One input that cannot be read, decoded or segmented is recorded and the others go on; an output
that cannot be written (read-only, disk full) stops the run, since the next ones would fail too.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import time
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np

from isaseg_cli.data.image_header import DEFAULT_MAX_PIXELS
from isaseg_cli.data.mask_io import colorize, overlay
from isaseg_cli.data.video import VideoReader, VideoWriter
from isaseg_cli.engine.failure import failure_for
from isaseg_cli.engine.infer import confidence
from isaseg_cli.engine.infer.manifest import (
    ManifestRecord,
    ManifestWriter,
    merge_manifest,
    skipped_record,
)
from isaseg_cli.engine.infer.mask_output import confidence_spec, write_mask
from isaseg_cli.engine.infer.predict_io import (
    BackgroundWriter,
    Decoded,
    InlineWriter,
    decode_images,
    size_batches,
)
from isaseg_cli.engine.infer.predict_plan import (
    Job,
    PredictPlan,
    Source,
    check_classes,
    plan_predict,
)
from isaseg_cli.engine.infer.predict_result import PredictResult, merge_results
from isaseg_cli.engine.progress import ProgressCallback, ProgressEvent
from isaseg_cli.errors import InputError, OutputError

if TYPE_CHECKING:  # not imported at run time: an exported network segments without torch
    from isaseg_cli.engine.infer.segmenter import Segmenter

T = TypeVar("T")


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
    manifest: bool = False,
    workers: int = 0,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    on_progress: ProgressCallback | None = None,
) -> PredictResult:
    """Segments images and videos and writes one result per input: ``plan_predict`` then
    ``run_plan``. Videos are written in colour (``color``, or ``overlay``): index masks do not
    survive video codecs.

    Args:
        inputs: paths and patterns (see ``expand_inputs``), or its result.
        out, overlay_out, cwd, overwrite, skip_existing: where results go (see ``plan_predict``).
        manifest: keep ``DIR/manifest.jsonl``, one line per input (see ``manifest``).
        workers: processes decoding images (0: decode and write in this thread).
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
        manifest=manifest,
    )
    return run_plan(
        segmenter,
        plan,
        batch_size=batch_size,
        workers=workers,
        max_pixels=max_pixels,
        on_progress=on_progress,
    )


def run_plan(
    segmenter: Segmenter,
    plan: PredictPlan,
    *,
    batch_size: int = 1,
    workers: int = 0,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    on_progress: ProgressCallback | None = None,
) -> PredictResult:
    """Does the work of a ``PredictPlan`` (see ``predict``); Ctrl-C ends it early with
    ``interrupted=True`` and a write error with ``stopped`` set, both listing what was written.

    With ``workers`` > 0, images are decoded in that many DataLoader processes and results are
    written by a background thread; with 0 everything happens in turn in this thread. Under
    torchrun every process calls this with its own plan (``plan_predict(rank=...)``), and each
    gets the totals over all of them; rank 0 then folds the manifest.

    Raises:
        InputError: ``labelids`` for a model without the Cityscapes classes.
    """
    check_classes(plan.fmt, segmenter.classes)
    run = _Run(segmenter, plan, batch_size, workers, max_pixels, on_progress)
    start = time.perf_counter()
    interrupted, stopped = False, None
    try:
        try:
            run.skipped()
            run.images([job for job in plan.jobs if not job.source.is_video])
            for job in plan.jobs:
                if job.source.is_video:
                    run.video(job)
        finally:
            run.close()
    except KeyboardInterrupt:
        interrupted = True
    except OutputError as exc:
        stopped = str(exc)
    seconds = time.perf_counter() - start
    warnings = []
    if plan.fmt == "index" and any(job.source.is_video for job in plan.jobs):
        warnings.append("videos are written in colour: index masks do not survive video codecs")
    result = PredictResult(
        inputs=len(plan.jobs) + plan.skipped,
        masks=tuple(run.written["mask"]),
        overlays=tuple(run.written["overlay"]),
        probs=tuple(run.written["probs"]),
        confidences=tuple(run.written["confidence"]),
        per_image=tuple(run.per_image),
        failures=tuple(run.failures),
        images=run.count,
        seconds=seconds,
        output_dir=plan.output_dir,
        overlay_dir=plan.overlay_dir,
        warnings=tuple(warnings),
        skipped=plan.skipped,
        interrupted=interrupted,
        stopped=stopped,
        input_wait=max(0.0, 1 - run.compute_seconds / seconds) if seconds > 0 else 0.0,
    )
    if plan.world_size > 1:
        from isaseg_cli.engine.distributed import gather_objects  # torch: only under torchrun

        result = merge_results(gather_objects(result))
    if plan.manifest is not None and plan.rank == 0:
        try:
            merge_manifest(plan.manifest)
        except OutputError as exc:
            result = dataclasses.replace(result, stopped=result.stopped or str(exc))
    return result


class _Run:
    """The state of one ``predict`` call: what was written, what failed, how many images.

    Every write (results, failures, manifest lines) goes through ``self.writer``: in this thread
    with no workers, else in its background thread, so these lists are only appended by one.
    """

    def __init__(
        self,
        segmenter: Segmenter,
        plan: PredictPlan,
        batch_size: int,
        workers: int,
        max_pixels: int,
        on_progress: ProgressCallback | None,
    ) -> None:
        self.segmenter, self.plan, self.max_pixels = segmenter, plan, max_pixels
        self.batch_size, self.workers, self.on_progress = max(1, batch_size), workers, on_progress
        self.written: dict[str, list[Path]] = {
            "mask": [],
            "overlay": [],
            "probs": [],
            "confidence": [],
        }
        self.per_image: list[dict[str, Any]] = []
        self.spec = confidence.spec_for(confidence_spec(segmenter), plan)
        self.failures: list[tuple[str, str]] = []
        self.count = 0
        self.compute_seconds = 0.0  # inside the segmenter's calls
        self.writer: InlineWriter | BackgroundWriter = (
            BackgroundWriter(depth=2 * self.batch_size) if workers > 0 else InlineWriter()
        )
        self.manifest = None if plan.manifest is None else ManifestWriter(plan.manifest, plan.rank)
        # Workers also resize to the test scale when the segmenter takes their inputs (PyTorch,
        # single scale); ms+flip, tiles and exported networks get the decoded images.
        prepared_test = getattr(segmenter, "prepared_test", None)
        self.prepare = prepared_test() if workers > 0 and prepared_test is not None else None

    def close(self) -> None:
        """Waits for the pending writes (they are finished results, worth keeping)."""
        try:
            self.writer.close()
        finally:
            if self.manifest is not None:
                self.manifest.close()

    def _progress(self, task: str, completed: int, total: int | None) -> None:
        if self.on_progress is not None:
            self.on_progress(ProgressEvent(task=task, completed=completed, total=total))

    def _record(self, source: Source, outputs: Sequence[Path], status: str, **fields: Any) -> None:
        if self.manifest is not None:
            paths = tuple(str(path) for path in outputs)
            record = ManifestRecord(str(source.path), paths, status, rank=self.plan.rank, **fields)
            self.manifest.append(record)

    def _failed(self, source: Source, reason: str, seconds: float = 0.0) -> None:
        """Records a failure; runs in the writer's thread."""
        self.failures.append((str(source.path), reason))
        self._record(source, (), "failed", error=reason, seconds=seconds)

    def _fail(self, source: Source, exc: Exception | str, seconds: float = 0.0) -> None:
        reason = exc if isinstance(exc, str) else failure_for(source.path, exc)
        self.writer.submit(functools.partial(self._failed, source, reason, seconds))

    def skipped(self) -> None:
        if self.manifest is not None:
            for job in self.plan.done:
                record = skipped_record(job, self.plan)
                self.writer.submit(functools.partial(self.manifest.append, record))

    def images(self, jobs: list[Job]) -> None:
        if jobs:
            self._progress("images", 0, len(jobs))
        done = 0
        paths = [job.source.path for job in jobs]
        decoded = decode_images(
            paths, workers=self.workers, max_pixels=self.max_pixels, prepare=self.prepare
        )
        try:
            for batch in size_batches(decoded, self.batch_size):
                readable = []
                for item in batch:
                    if item.image is None:
                        self._fail(jobs[item.index].source, item.reason or "", item.seconds)
                    else:
                        readable.append((item, jobs[item.index]))
                for (item, job), result, seconds in self._segment(readable):
                    self.count += 1
                    finish = functools.partial(
                        self._finish, item.image, result, job, item.seconds + seconds
                    )
                    self.writer.submit(finish)
                done += len(batch)
                self._progress("images", done, len(jobs))
        finally:
            decoded.close()

    def _segment(self, readable: list[tuple[Decoded, Job]]) -> Iterator[tuple[Any, Any, float]]:
        """(item, result, seconds per image) per image that could be segmented: a batch that
        fails is retried image by image, so one bad image does not take the others with it."""
        if not readable:  # a batch of failures only
            return
        arrays = [item.image for item, _ in readable]
        inputs = [item.prepared for item, _ in readable]
        start = time.perf_counter()
        try:
            if self.prepare is not None and all(array is not None for array in inputs):
                results = self.segmenter.segment_prepared(arrays, inputs, spec=self.spec)  # type: ignore[arg-type]
            else:
                results = self.segmenter.segment_batch(arrays, spec=self.spec)  # type: ignore[arg-type]
        except Exception as exc:
            self.compute_seconds += time.perf_counter() - start
            if len(readable) == 1:
                self._fail(readable[0][1].source, exc)
                return
            for item in readable:
                yield from self._segment([item])
            return
        elapsed = time.perf_counter() - start
        self.compute_seconds += elapsed
        for item, result in zip(readable, results, strict=True):
            yield item, result, elapsed / len(readable)

    def _finish(self, image: np.ndarray, result: Any, job: Job, seconds: float) -> None:
        """Writes one image's results and its manifest line; runs in the writer's thread."""
        start = time.perf_counter()
        try:
            outputs = self._save(image, result, job)
        except OutputError:
            raise
        except Exception as exc:
            self._failed(job.source, failure_for(job.source.path, exc), seconds)
            return
        seconds += time.perf_counter() - start
        mean = result.stats.mean_confidence
        self._record(job.source, outputs, "ok", seconds=seconds, mean_confidence=mean)

    def _save(
        self, image: np.ndarray, result: confidence.SegmentationResult, job: Job
    ) -> list[Path]:
        """The one place an image's results are written, from the segmenter's ``result``;
        returns the files written."""
        plan, segmenter, mask, source = self.plan, self.segmenter, result.mask, job.source.path
        written = [write_mask(segmenter, plan.fmt, job.mask, mask, image, plan.opacity, source)]
        self.written["mask"].append(written[-1])
        if job.overlay is not None:
            written.append(
                write_mask(segmenter, "overlay", job.overlay, mask, image, plan.opacity, source)
            )
            self.written["overlay"].append(written[-1])
        for kind, path in confidence.save_extras(result, job):
            written.append(path)
            self.written[kind].append(path)
        self.per_image.append(confidence.image_record(job.source.path, result, segmenter.classes))
        return written

    def _frame(self, fmt: str, mask: np.ndarray, frame: np.ndarray) -> np.ndarray:
        palette = confidence.output_palette(self.segmenter.palette, confidence_spec(self.segmenter))
        if fmt == "overlay":
            return overlay(frame, mask, palette, self.plan.opacity)
        return np.ascontiguousarray(colorize(mask, palette)[..., ::-1])

    def video(self, job: Job) -> None:
        source = job.source
        targets = [(job.mask, self.plan.fmt, "mask")]
        if job.overlay is not None:
            targets.append((job.overlay, "overlay", "overlay"))
        task, frames, start = f"frames {source.name}", 0, time.perf_counter()
        try:
            with VideoReader(source.path) as reader, contextlib.ExitStack() as stack:
                writers = [
                    (stack.enter_context(VideoWriter(path, reader.fps)), fmt, kind)
                    for path, fmt, kind in targets
                ]
                for chunk in _batches(reader, self.batch_size):
                    compute = time.perf_counter()
                    masks = self.segmenter.predict_batch(chunk)
                    self.compute_seconds += time.perf_counter() - compute
                    for frame, mask in zip(chunk, masks, strict=True):
                        for writer, fmt, _ in writers:
                            writer.write(self._frame(fmt, mask, frame))  # type: ignore[arg-type]
                    frames += len(chunk)
                    self._progress(task, frames, reader.frame_count)
                if not frames:
                    raise InputError(f"no frames could be read from {source.path}")
                outputs = [(writer.commit(), kind) for writer, _, kind in writers]
        except OutputError:
            raise
        except Exception as exc:
            self._fail(source, exc, time.perf_counter() - start)
            return
        self.count += frames
        self.writer.submit(functools.partial(self._committed, job, outputs, start))

    def _committed(self, job: Job, outputs: list[tuple[Path, str]], start: float) -> None:
        for path, kind in outputs:
            self.written[kind].append(path)
        seconds = time.perf_counter() - start
        self._record(job.source, [path for path, _ in outputs], "ok", seconds=seconds)


def _batches(items: Iterable[T], size: int) -> Iterator[list[T]]:
    batch: list[T] = []
    for item in items:
        batch.append(item)
        if len(batch) >= max(1, size):
            yield batch
            batch = []
    if batch:
        yield batch
