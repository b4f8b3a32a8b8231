"""What ``isaseg predict`` will read and write, decided and checked before any model is loaded.

Inputs are expanded, every output path is chosen, and options, clashes, existing results and
writability are checked here, so a typo or a read-only folder fails before a download.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from isaseg_cli.data.mask_io import check_writable
from isaseg_cli.data.tiff import TIFF_SUFFIXES, is_tiff, tifffile_available
from isaseg_cli.data.video import VIDEO_EXTENSIONS
from isaseg_cli.errors import InputError
from isaseg_cli.zoo.classes import CITYSCAPES

IMAGE_EXTENSIONS = (
    ".bmp", ".jpg", ".jpeg", ".jpe", ".jp2", ".png", ".pbm", ".pgm", ".ppm", ".pnm",
    ".tif", ".tiff", ".webp", ".avif",
)  # fmt: skip
FORMATS = ("index", "color", "overlay", "labelids")
MANIFEST_NAME = "manifest.jsonl"
_GLOB_CHARS = frozenset("*?[")


@dataclass(frozen=True, slots=True)
class Source:
    """One input file; ``name`` is its path relative to the folder or glob it came from."""

    path: Path
    name: Path
    is_video: bool


@dataclass(frozen=True, slots=True)
class Job:
    """One input and the files it produces (``overlay``, ``confidence``, ``probs`` when asked)."""

    source: Source
    mask: Path
    overlay: Path | None = None
    confidence: Path | None = None
    probs: Path | None = None


@dataclass(frozen=True, slots=True)
class PredictPlan:
    """The checked work of one ``predict`` call.

    Under torchrun each process plans the same inputs and keeps its share (``rank`` of
    ``world_size``); everything below is about that share.

    Attributes:
        jobs: the inputs still to do, with their output paths.
        done: inputs left out because all their outputs exist (``skip_existing``).
        output_dir: the masks' folder (the file's folder for a single ``--out`` file); created
            only when the first result is written.
        overlay_dir: the same for overlays, when asked for.
        manifest: ``output_dir/manifest.jsonl`` when a manifest is kept (see ``manifest``).
        probs, confidence: the ``--probs`` and ``--confidence`` file or folder, when asked for.
    """

    jobs: tuple[Job, ...]
    fmt: str
    opacity: float
    probs: Path | None
    output_dir: Path
    overlay_dir: Path | None
    done: tuple[Job, ...] = ()
    manifest: Path | None = None
    rank: int = 0
    world_size: int = 1
    confidence: Path | None = None

    @property
    def skipped(self) -> int:
        return len(self.done)


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


def _mirrored(sources: Sequence[Source], folder: Path, suffix: str | None = None) -> list[Path]:
    """Output paths under ``folder`` that mirror the input names: images -> .png (TIFF -> .tif,
    keeping GeoTIFF tags), videos -> .mp4; or all -> ``suffix``.

    Names that would clash (``a/x.jpg`` and ``b/x.jpg`` given as files) get ``_2``, ``_3``, ...
    """
    taken: set[Path] = set()
    paths = []
    for source in sources:
        own = ".mp4" if source.is_video else ".tif" if is_tiff(source.path) else ".png"
        name = source.name.with_suffix(suffix or own)
        candidate, number = name, 1
        while candidate in taken:
            number += 1
            candidate = name.with_name(f"{name.stem}_{number}{name.suffix}")
        taken.add(candidate)
        paths.append(folder / candidate)
    return paths


def _single_file(sources: Sequence[Source], target: Path | None) -> bool:
    return len(sources) == 1 and target is not None and bool(target.suffix) and not target.is_dir()


def _paths(
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
        if suffix not in TIFF_SUFFIXES:
            raise InputError(f"{flag} {target}: {fmt} masks are PNG or TIFF, use a .png name")
    if not sources[0].is_video and suffix not in IMAGE_EXTENSIONS:
        raise InputError(f"{flag} {target}: not an image suffix ({', '.join(IMAGE_EXTENSIONS)})")
    return [target]


def check_options(sources: Sequence[Source], fmt: str, opacity: float, probs: bool) -> None:
    """The checks that need neither the model nor the files' contents.

    Raises:
        InputError: an unknown format, an opacity outside (0, 1], labelids for a video, or
            ``--probs`` for a video.
    """
    if fmt not in FORMATS:
        raise InputError(f"unknown format {fmt!r}: use one of {', '.join(FORMATS)}")
    if fmt == "labelids" and any(source.is_video for source in sources):
        raise InputError("labelids is for images; write videos as color or overlay")
    if not 0 < opacity <= 1:
        raise InputError(f"opacity must be in (0, 1], got {opacity}")
    if probs and any(source.is_video for source in sources):
        raise InputError("--probs and --confidence are for images, not videos")


def _extra_paths(
    sources: Sequence[Source], target: Path, suffixes: tuple[str, ...], flag: str
) -> list[Path]:
    """``--probs`` / ``--confidence``: one image's file (a name with one of ``suffixes``), or a
    folder of mirrored names with the first suffix."""
    suffix = target.suffix.lower()
    if len(sources) == 1 and suffix and not target.is_dir():
        if suffix not in suffixes:
            raise InputError(f"{flag} {target}: use a {' or '.join(suffixes)} name")
        return [target]
    if suffix in suffixes or target.is_file():
        raise InputError(f"{flag} {target} is one image's file; give a folder for several inputs")
    return _mirrored(sources, target, suffixes[0])


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


def _check_existing(planned: Sequence[Path]) -> None:
    existing = [path for path in planned if os.path.lexists(path)]
    if existing:
        more = f" (and {len(existing) - 1} more)" if len(existing) > 1 else ""
        raise InputError(
            f"{existing[0]} already exists{more}: add --overwrite to replace, --skip-existing "
            f"to keep finished results, or choose another --out"
        )


def plan_predict(
    inputs: Sequence[str | Path] | Sequence[Source],
    *,
    out: str | Path | None = None,
    fmt: str = "index",
    overlay_out: str | Path | None = None,
    opacity: float = 0.5,
    probs_out: str | Path | None = None,
    cwd: str | Path | None = None,
    overwrite: bool = False,
    skip_existing: bool = False,
    manifest: bool = False,
    rank: int = 0,
    world_size: int = 1,
    confidence_out: str | Path | None = None,
) -> PredictPlan:
    """Chooses every output path and checks that the work can be done, writing nothing.

    Outputs: with one input and an ``out`` file name, that file; otherwise a folder (``out``, or
    a new ``runs/predict``, ``runs/predict2``, ... under ``cwd``) mirroring the input names,
    images as ``.png`` and videos as ``.mp4``. Existing results are never replaced silently:
    ``overwrite`` replaces them, ``skip_existing`` leaves out the inputs whose outputs all exist
    (atomic writes make an existing output a complete one). ``probs_out`` (``.npy`` float32 or
    ``.npz`` float16 for one image; a folder of ``.npz``) and ``confidence_out`` (``.png`` 8-bit
    or ``.npy`` float16; a folder of ``.png``) likewise.

    Several processes (torchrun): the inputs, in their deterministic expanded order, are dealt
    round-robin, input ``i`` to rank ``i % world_size``; names are chosen over the whole list, so
    every rank plans the same paths. Only this rank's share is checked for finished outputs:
    another rank may be writing its own already, and each output has one writer.

    Raises:
        InputError: the inputs or options cannot work, or an output exists already.
        OutputError: an output cannot be written (read-only folder, a file in the way).
    """
    if all(isinstance(item, Source) for item in inputs):
        sources: list[Source] = list(inputs)  # type: ignore[arg-type]
    else:
        sources = expand_inputs(inputs)  # type: ignore[arg-type]
    if not sources:
        raise InputError("nothing to segment: give at least one image, folder or video")
    if world_size < 1 or not 0 <= rank < world_size:
        raise InputError(f"rank {rank} is not one of {world_size} process(es)")
    if overwrite and skip_existing:
        raise InputError("--overwrite and --skip-existing exclude each other: choose one")
    check_options(sources, fmt, opacity, probs_out is not None or confidence_out is not None)
    target = Path(out) if out is not None else _next_run_dir(Path(cwd or "") / "runs")
    as_file = out is not None and _single_file(sources, target)
    masks = _paths(sources, target, as_file, fmt, "--out")
    overlays: list[Path | None] = [None] * len(sources)
    overlay_dir, as_overlay_file = None, False
    if overlay_out is not None:
        overlay_target = Path(overlay_out)
        as_overlay_file = _single_file(sources, overlay_target)
        overlays = list(_paths(sources, overlay_target, as_overlay_file, "overlay", "--overlay"))
        overlay_dir = overlay_target.parent if as_overlay_file else overlay_target
    probs = Path(probs_out) if probs_out is not None else None
    confidence = Path(confidence_out) if confidence_out is not None else None
    no_paths: list[Path | None] = [None] * len(sources)
    probs_paths = _extra_paths(sources, probs, (".npz", ".npy"), "--probs") if probs else no_paths
    confidence_paths = (
        _extra_paths(sources, confidence, (".png", ".npy"), "--confidence")
        if confidence
        else no_paths
    )
    items = zip(sources, masks, overlays, confidence_paths, probs_paths, strict=True)
    jobs = [Job(*item) for item in items]
    planned = [path for job in jobs for path in job_outputs(job)]
    _check_no_clash(sources, planned)
    if any(is_tiff(path) for path in planned) and not tifffile_available():
        raise InputError("TIFF outputs (for TIFF inputs) need tifffile: pip install 'isaseg[tiff]'")
    mine = jobs[rank::world_size]
    todo, done = mine, []
    if skip_existing:
        finished = [all(os.path.lexists(p) for p in job_outputs(job)) for job in mine]
        todo = [job for job, skip in zip(mine, finished, strict=True) if not skip]
        done = [job for job, skip in zip(mine, finished, strict=True) if skip]
    elif not overwrite:
        _check_existing(planned)
    check_writable(target, "--out", folder=not as_file)
    if overlay_out is not None:
        check_writable(Path(overlay_out), "--overlay", folder=not as_overlay_file)
    for flag, extra in (("--probs", probs), ("--confidence", confidence)):
        if extra is not None:
            check_writable(extra, flag, folder=len(sources) > 1 or not extra.suffix)
    output_dir = target.parent if as_file else target
    return PredictPlan(
        jobs=tuple(todo),
        fmt=fmt,
        opacity=opacity,
        probs=probs,
        output_dir=output_dir,
        overlay_dir=overlay_dir,
        done=tuple(done),
        manifest=output_dir / MANIFEST_NAME if manifest else None,
        rank=rank,
        world_size=world_size,
        confidence=confidence,
    )


def check_classes(fmt: str, classes: Sequence[str]) -> None:
    """Raises InputError when ``labelids`` is asked of a model without the Cityscapes classes."""
    if fmt == "labelids" and tuple(classes) != CITYSCAPES.classes:
        raise InputError(
            f"labelids needs a model with the 19 Cityscapes classes; this one has "
            f"{len(classes)} classes"
        )


def check_model_options(name: str | None, fmt: str, options: dict[str, Any]) -> None:
    """What can be checked of a PyTorch model's options without its weights: device, precision,
    test and tile overrides and, for a zoo model, whether its classes suit ``--format labelids``.

    Raises:
        InputError: the first option that cannot work.
    """
    from isaseg_cli.engine.device import check_precision, resolve_device
    from isaseg_cli.engine.infer.protocol import resolve_test_spec
    from isaseg_cli.engine.infer.tiles import check_tile_options
    from isaseg_cli.engine.loading import entry_classes
    from isaseg_cli.zoo.catalog import resolve_entry

    crop, stride, mode = options["crop"], options["stride"], options["mode"]
    tile, tile_stride = options.get("tile"), options.get("tile_stride")
    check_tile_options(tile, tile_stride, mode, crop, stride, options["ms_flip"], cli=True)
    check_precision(options["precision"], resolve_device(options["device"]))
    if name is not None:
        entry = resolve_entry(name)
        resolve_test_spec(entry, mode=mode, crop=crop, stride=stride)
        check_classes(fmt, entry_classes(entry, {})[0])


def refuse_torch_only_options(torch_only: dict[str, Any], confidence_out: Path | None) -> None:
    """Refuses the options only the PyTorch segmenter has (tiles, test scale, confidence) for an
    exported network, which never sees them.

    Raises:
        InputError: one of them was given.
    """
    if confidence_out is not None or any(v not in (None, "top1") for v in torch_only.values()):
        raise InputError(
            "--tile, --scale, --confidence, --uncertainty and --min-confidence need the PyTorch "
            "backend (drop --backend or the .onnx file)"
        )


def job_outputs(job: Job) -> list[Path]:
    """The files ``job`` writes (its confidence map and probabilities included)."""
    return [path for path in (job.mask, job.overlay, job.confidence, job.probs) if path]
