"""The work of ``isaseg predict``: expand the inputs, choose output paths, segment, write results.

Nothing here prints; progress goes through ``on_progress`` and the outcome is a ``PredictResult``.
"""

from __future__ import annotations

import contextlib
import io
import itertools
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from isaseg_cli.data.image import read_image_bgr
from isaseg_cli.data.mask_io import (
    atomic_write_bytes,
    colorize,
    overlay,
    save_image_bgr,
    save_index_png,
    to_cityscapes_label_ids,
)
from isaseg_cli.data.video import VIDEO_EXTENSIONS, VideoReader, VideoWriter
from isaseg_cli.engine.progress import ProgressCallback, ProgressEvent
from isaseg_cli.engine.segmenter import Segmenter
from isaseg_cli.errors import InputError
from isaseg_cli.zoo.classes import CITYSCAPES

IMAGE_EXTENSIONS = (
    ".bmp", ".jpg", ".jpeg", ".jpe", ".jp2", ".png", ".pbm", ".pgm", ".ppm", ".pnm",
    ".tif", ".tiff", ".webp", ".avif",
)  # fmt: skip
FORMATS = ("index", "color", "overlay", "labelids")
_GLOB_CHARS = frozenset("*?[")
T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Source:
    """One input file; ``name`` is its path relative to the folder or glob it came from."""

    path: Path
    name: Path
    is_video: bool


@dataclass(frozen=True, slots=True)
class PredictResult:
    """What ``predict`` did. ``images`` counts segmented images and video frames;
    ``failures`` holds (input, reason) for inputs that could not be read or written."""

    inputs: int
    outputs: tuple[Path, ...]
    failures: tuple[tuple[str, str], ...]
    images: int
    seconds: float
    output_dir: Path
    warnings: tuple[str, ...] = field(default=())

    @property
    def images_per_s(self) -> float:
        return self.images / self.seconds if self.seconds > 0 else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "inputs": self.inputs,
            "outputs": [str(path) for path in self.outputs],
            "failures": [{"input": name, "reason": reason} for name, reason in self.failures],
            "images": self.images,
            "seconds": round(self.seconds, 4),
            "images_per_s": round(self.images_per_s, 4),
            "output_dir": str(self.output_dir),
            "warnings": list(self.warnings),
        }


def _is_video(path: Path) -> bool:
    return path.suffix.lower() in VIDEO_EXTENSIONS


def _glob(pattern: str) -> list[Source]:
    parts = Path(pattern).expanduser().parts
    fixed = next(i for i, part in enumerate(parts) if _GLOB_CHARS & set(part))
    base = Path(*parts[:fixed]) if fixed else Path()
    wanted = IMAGE_EXTENSIONS + VIDEO_EXTENSIONS
    matches = sorted(base.glob(str(Path(*parts[fixed:]))))
    return [
        Source(path, path.relative_to(base), _is_video(path))
        for path in matches
        if path.is_file() and path.suffix.lower() in wanted
    ]


def expand_inputs(inputs: Sequence[str | Path]) -> list[Source]:
    """Files (images or videos by suffix), folders (images, recursively) and glob patterns, in
    order, each file once.

    Raises:
        InputError: an input does not exist, or a folder or pattern holds no image.
    """
    sources: list[Source] = []
    for raw in inputs:
        path = Path(raw).expanduser()
        if path.is_dir():
            found = [
                Source(file, file.relative_to(path), False)
                for file in sorted(path.rglob("*"))
                if file.is_file() and file.suffix.lower() in IMAGE_EXTENSIONS
            ]
            if not found:
                raise InputError(f"no image files in folder {raw}")
        elif path.exists():
            found = [Source(path, Path(path.name), _is_video(path))]
        elif _GLOB_CHARS & set(str(raw)):
            found = _glob(str(raw))
            if not found:
                raise InputError(f"no image or video files match {raw}")
        else:
            raise InputError(f"no such file or folder: {raw}")
        sources += found
    unique: dict[Path, Source] = {}
    for source in sources:
        unique.setdefault(source.path.resolve(), source)
    return list(unique.values())


def _next_run_dir(root: Path) -> Path:
    """``root/predict``, else ``predict2``, ``predict3``, ...: the first that does not exist."""
    names = ("predict" if number == 1 else f"predict{number}" for number in itertools.count(1))
    return next(root / name for name in names if not (root / name).exists())


def _mirrored(sources: Sequence[Source], folder: Path) -> list[Path]:
    """Output paths under ``folder`` that mirror the input names: images -> .png, videos -> .mp4.

    Names that would clash (``a/x.jpg`` and ``b/x.jpg`` given as files) get ``_2``, ``_3``, ...
    """
    taken: set[Path] = set()
    paths = []
    for source in sources:
        name = source.name.with_suffix(".mp4" if source.is_video else ".png")
        candidate, number = name, 1
        while candidate in taken:
            number += 1
            candidate = name.with_name(f"{name.stem}_{number}{name.suffix}")
        taken.add(candidate)
        paths.append(folder / candidate)
    return paths


def _single_file(sources: Sequence[Source], target: Path | None) -> bool:
    return len(sources) == 1 and target is not None and bool(target.suffix) and not target.is_dir()


def _plan(
    sources: Sequence[Source], target: Path, as_file: bool, fmt: str, flag: str
) -> list[Path]:
    if not as_file:
        if target.is_file():
            raise InputError(f"{flag} {target} is a file; give a folder for several inputs")
        return _mirrored(sources, target)
    suffix = target.suffix.lower()
    if sources[0].is_video and suffix not in VIDEO_EXTENSIONS:
        raise InputError(f"{flag} {target}: a video needs one of {', '.join(VIDEO_EXTENSIONS)}")
    if not sources[0].is_video and fmt in ("index", "labelids") and suffix != ".png":
        raise InputError(f"{flag} {target}: {fmt} masks are PNG files, use a .png name")
    if not sources[0].is_video and suffix not in IMAGE_EXTENSIONS:
        raise InputError(f"{flag} {target}: not an image suffix ({', '.join(IMAGE_EXTENSIONS)})")
    return [target]


def _check_options(
    segmenter: Segmenter, sources: Sequence[Source], fmt: str, opacity: float, probs: bool
) -> None:
    if fmt not in FORMATS:
        raise InputError(f"unknown format {fmt!r}: use one of {', '.join(FORMATS)}")
    if fmt == "labelids" and segmenter.classes != CITYSCAPES.classes:
        raise InputError(
            f"labelids needs a model with the 19 Cityscapes classes; this one has "
            f"{segmenter.num_classes} classes"
        )
    if fmt == "labelids" and any(source.is_video for source in sources):
        raise InputError("labelids is for images; write videos as color or overlay")
    if not 0 < opacity <= 1:
        raise InputError(f"opacity must be in (0, 1], got {opacity}")
    if probs and (len(sources) != 1 or sources[0].is_video):
        raise InputError("--probs saves one image's probabilities: give exactly one image")


def _check_no_clash(sources: Sequence[Source], planned: Sequence[Path]) -> None:
    inputs = {source.path.resolve() for source in sources}
    seen: set[Path] = set()
    for path in planned:
        resolved = path.resolve()
        if resolved in inputs:
            raise InputError(f"{path} is an input; writing there would overwrite it")
        if resolved in seen:
            raise InputError(f"{path} would be written twice: give --overlay a different place")
        seen.add(resolved)


def _write_image(
    segmenter: Segmenter, fmt: str, path: Path, mask: np.ndarray, image: np.ndarray, opacity: float
) -> Path:
    if fmt == "index":
        return save_index_png(path, mask, segmenter.palette)
    if fmt == "labelids":
        return save_index_png(path, to_cityscapes_label_ids(mask))
    if fmt == "color":
        return save_image_bgr(path, colorize(mask, segmenter.palette)[..., ::-1])
    return save_image_bgr(path, overlay(image, mask, segmenter.palette, opacity))


def predict(
    segmenter: Segmenter,
    inputs: Sequence[str | Path] | Sequence[Source],
    *,
    out: str | Path | None = None,
    fmt: str = "index",
    overlay_out: str | Path | None = None,
    opacity: float = 0.5,
    probs_out: str | Path | None = None,
    batch_size: int = 1,
    cwd: str | Path | None = None,
    on_progress: ProgressCallback | None = None,
) -> PredictResult:
    """Segments images and videos and writes one result per input.

    Outputs: with one input and an ``out`` file name, that file; otherwise a folder (``out``, or
    a new ``runs/predict``, ``runs/predict2``, ... under ``cwd``, so nothing existing is ever
    overwritten) mirroring the input names, images as ``.png`` and videos as ``.mp4``. Videos
    are written in colour (``color``, or ``overlay``): index masks do not survive video codecs.

    Args:
        inputs: paths and patterns (see ``expand_inputs``), or its result.
        fmt: ``index`` (palette PNG of class indices), ``color``, ``overlay`` or ``labelids``
            (Cityscapes label ids; needs a Cityscapes model).
        overlay_out: also write overlays there (a file for one input, else a folder).
        probs_out: save the class probabilities (K, H, W) float32 as ``.npy`` (one image only).
        batch_size: images per forward pass (see ``Segmenter.predict_batch``).

    Returns:
        What was written and what failed; unreadable inputs do not stop the others.

    Raises:
        InputError: the inputs or options cannot work (checked before anything is written).
    """
    if all(isinstance(item, Source) for item in inputs):
        sources = list(inputs)
    else:
        sources = expand_inputs(inputs)  # type: ignore[arg-type]
    if not sources:
        raise InputError("nothing to segment: give at least one image, folder or video")
    _check_options(segmenter, sources, fmt, opacity, probs_out is not None)
    target = Path(out) if out is not None else _next_run_dir(Path(cwd or "") / "runs")
    as_file = out is not None and _single_file(sources, target)
    masks = _plan(sources, target, as_file, fmt, "--out")
    overlays: list[Path | None] = [None] * len(sources)
    if overlay_out is not None:
        overlay_path = Path(overlay_out)
        as_overlay_file = _single_file(sources, overlay_path)
        overlays = list(_plan(sources, overlay_path, as_overlay_file, "overlay", "--overlay"))
    _check_no_clash(
        sources, [*masks, *(p for p in overlays if p), *([Path(probs_out)] if probs_out else [])]
    )
    output_dir = target.parent if as_file else target
    output_dir.mkdir(parents=True, exist_ok=out is not None)

    run = _Run(segmenter, fmt, opacity, batch_size, on_progress)
    start = time.perf_counter()
    images = [(s, m, o) for s, m, o in zip(sources, masks, overlays, strict=True) if not s.is_video]
    run.images(images, Path(probs_out) if probs_out else None)
    for source, mask_path, overlay_path in zip(sources, masks, overlays, strict=True):
        if source.is_video:
            run.video(source, mask_path, overlay_path)
    warnings = []
    if fmt == "index" and any(source.is_video for source in sources):
        warnings.append("videos are written in colour: index masks do not survive video codecs")
    return PredictResult(
        inputs=len(sources),
        outputs=tuple(run.outputs),
        failures=tuple(run.failures),
        images=run.count,
        seconds=time.perf_counter() - start,
        output_dir=output_dir,
        warnings=tuple(warnings),
    )


class _Run:
    """The state of one ``predict`` call: what was written, what failed, how many images."""

    def __init__(
        self,
        segmenter: Segmenter,
        fmt: str,
        opacity: float,
        batch_size: int,
        on_progress: ProgressCallback | None,
    ) -> None:
        self.segmenter, self.fmt, self.opacity = segmenter, fmt, opacity
        self.batch_size, self.on_progress = batch_size, on_progress
        self.outputs: list[Path] = []
        self.failures: list[tuple[str, str]] = []
        self.count = 0

    def _progress(self, task: str, completed: int, total: int | None) -> None:
        if self.on_progress is not None:
            self.on_progress(ProgressEvent(task=task, completed=completed, total=total))

    def images(self, items: list[tuple[Source, Path, Path | None]], probs_out: Path | None) -> None:
        if items:
            self._progress("images", 0, len(items))
        done = 0
        for chunk in _batches(items, self.batch_size):
            readable = []
            for source, mask_path, overlay_path in chunk:
                try:
                    readable.append((read_image_bgr(source.path), source, mask_path, overlay_path))
                except InputError as exc:
                    self.failures.append((str(source.path), str(exc)))
            arrays = [image for image, *_ in readable]
            results = self.segmenter.predict_batch(arrays, return_probs=probs_out is not None)
            for (image, source, *paths), result in zip(readable, results, strict=True):
                mask, probs = result if isinstance(result, tuple) else (result, None)
                try:
                    self.outputs += self._save(image, mask, probs, *paths, probs_out)
                    self.count += 1
                except (OSError, InputError) as exc:
                    self.failures.append((str(source.path), str(exc)))
            done += len(chunk)
            self._progress("images", done, len(items))

    def _save(
        self,
        image: np.ndarray,
        mask: np.ndarray,
        probs: np.ndarray | None,
        mask_path: Path,
        overlay_path: Path | None,
        probs_out: Path | None,
    ) -> list[Path]:
        written = [_write_image(self.segmenter, self.fmt, mask_path, mask, image, self.opacity)]
        if overlay_path is not None:
            written.append(
                _write_image(self.segmenter, "overlay", overlay_path, mask, image, self.opacity)
            )
        if probs_out is not None and probs is not None:
            buffer = io.BytesIO()
            np.save(buffer, probs.astype(np.float32, copy=False))
            written.append(atomic_write_bytes(probs_out, buffer.getvalue()))
        return written

    def _frame(self, fmt: str, mask: np.ndarray, frame: np.ndarray) -> np.ndarray:
        if fmt == "overlay":
            return overlay(frame, mask, self.segmenter.palette, self.opacity)
        return np.ascontiguousarray(colorize(mask, self.segmenter.palette)[..., ::-1])

    def video(self, source: Source, mask_path: Path, overlay_path: Path | None) -> None:
        targets = [(mask_path, self.fmt)] + ([(overlay_path, "overlay")] if overlay_path else [])
        task, frames = f"frames {source.name}", 0
        try:
            with VideoReader(source.path) as reader, contextlib.ExitStack() as stack:
                writers = [
                    (stack.enter_context(VideoWriter(path, reader.fps)), fmt)
                    for path, fmt in targets
                ]
                for chunk in _batches(reader, self.batch_size):
                    for frame, mask in zip(chunk, self.segmenter.predict_batch(chunk), strict=True):
                        for writer, fmt in writers:
                            writer.write(self._frame(fmt, mask, frame))  # type: ignore[arg-type]
                    frames += len(chunk)
                    self._progress(task, frames, reader.frame_count)
                if not frames:
                    raise InputError(f"no frames could be read from {source.path}")
                self.outputs += [writer.commit() for writer, _ in writers]
        except (OSError, InputError) as exc:
            self.failures.append((str(source.path), str(exc)))
            return
        self.count += frames


def _batches(items: Iterable[T], size: int) -> Iterator[list[T]]:
    batch: list[T] = []
    for item in items:
        batch.append(item)
        if len(batch) >= max(1, size):
            yield batch
            batch = []
    if batch:
        yield batch
