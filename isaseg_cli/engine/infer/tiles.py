"""Tiled inference in memory bounded by a band of rows, not by the image.

The windows are those of ``slide`` (docs/FAITHFULNESS.md#test-pipeline: every stride, the last one
shifted back inside, logits summed and divided by the coverage count), taken one row of windows
at a time. Only the rows that a later window can still touch are accumulated; the rows above the
next window row are finished, resized to the original size if the image was rescaled, and turned
into their outputs (class index, confidence), and the band moves down.
"""

from __future__ import annotations

from collections.abc import Iterator
from itertools import groupby

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from isaseg_cli.data.image import normalize_bgr, resize_keep_ratio
from isaseg_cli.engine.infer.confidence import BandCollector, ConfidenceSpec, SegmentationResult
from isaseg_cli.engine.infer.protocol import linear_taps, slide_windows
from isaseg_cli.errors import InputError
from isaseg_cli.models.segmentor import Segmentor
from isaseg_cli.zoo.spec import ZooEntry

Band = tuple[int, Tensor]  # (first image row, scores (K, rows, W))
# Finished rows leave the band this many at a time, so their quotient, softmax and other
# per-pixel temporaries stay small beside the band itself.
EMIT_ROWS = 64
ACCUMULATE = {"float32": torch.float32, "float16": torch.float16}


def resolve_scale(
    entry: ZooEntry, scale: str | tuple[int, int] | None, *, tiled: bool
) -> tuple[int, int] | None:
    """The keep-ratio test scale (w, h), or None for the image's own size.

    ``scale`` is ``native`` (no resize), ``zoo`` (the entry's), a (w, h) pair, or None: the
    entry's, except with tiles, whose usual inputs (aerial, medical) are segmented at native scale.

    Raises:
        InputError: an unknown name or a non-positive size.
    """
    if scale is None:
        scale = "native" if tiled else "zoo"
    if scale == "native":
        return None
    if scale == "zoo":
        return entry.test.scale
    if isinstance(scale, str):
        raise InputError(f"scale must be native, zoo or WIDTHxHEIGHT, not {scale!r}")
    _check_pair(scale, "scale")
    return (int(scale[0]), int(scale[1]))


def check_tile_options(
    tile: tuple[int, int] | None,
    tile_stride: tuple[int, int] | None,
    mode: str | None,
    crop: tuple[int, int] | None,
    stride: tuple[int, int] | None,
    ms_flip: bool,
    *,
    cli: bool = False,
) -> None:
    """Raises InputError for tile options that cannot work together (``cli``: name the flags)."""
    _check_pair(tile, "tile")
    _check_pair(tile_stride, "tile stride")
    flags = ("--tile", "--tile-stride", "--mode, --crop-size and --stride", "--ms-flip")
    names = flags if cli else ("tile", "tile_stride", "mode, crop and stride", "ms_flip")
    if tile is None:
        if tile_stride is not None:
            raise InputError(f"{names[1]} needs {names[0]}")
        return
    if mode or crop or stride:
        raise InputError(f"{names[0]} replaces {names[2]}: drop them")
    if ms_flip:
        raise InputError(f"{names[0]} runs at one scale: drop {names[3]}")
    if tile_stride is not None and (tile_stride[0] > tile[0] or tile_stride[1] > tile[1]):
        raise InputError(f"{names[1]} {tile_stride} must not exceed {names[0]} {tile}: gaps")


def _check_pair(value: tuple[int, int] | None, what: str) -> None:
    if value is not None and (len(value) != 2 or min(value) < 1):
        raise InputError(f"{what} must be two positive integers, got {value}")


def window_rows(
    height: int, width: int, tile: tuple[int, int], stride: tuple[int, int]
) -> list[list[tuple[int, int, int, int]]]:
    """``slide_windows`` grouped into rows of windows (same y1, y2), top to bottom."""
    boxes = slide_windows(height, width, tile, stride)
    return [list(row) for _, row in groupby(boxes, key=lambda box: (box[0], box[1]))]


def logit_bands(
    model: Segmentor,
    image_bgr: np.ndarray,
    tile: tuple[int, int],
    stride: tuple[int, int],
    *,
    device: torch.device | str = "cpu",
    window_batch: int = 1,
    accumulate: torch.dtype = torch.float32,
) -> Iterator[Band]:
    """Finished bands of slide logits of ``image_bgr`` (uint8 H x W x 3, at network scale).

    Equals ``forward_logits`` in slide mode row for row (the same windows, summed in the same
    order), while holding at most ``min(tile_h, H)`` rows of K accumulated logits. Windows are
    normalised one by one, so the float32 copy of the image is never made.
    """
    height, width = image_bgr.shape[:2]
    band_rows = min(tile[0], height)
    canvas: Tensor | None = None  # (K, band_rows, W): rows top .. top + band_rows
    count = torch.zeros((1, band_rows, width), device=device)
    top = 0
    for row in window_rows(height, width, tile, stride):
        row_top = row[0][0]
        if row_top > top and canvas is not None:
            yield from _finished(canvas, count, top, row_top - top)
            _shift(canvas, row_top - top)
            _shift(count, row_top - top)
            top = row_top
        for start in range(0, len(row), max(1, window_batch)):
            group = row[start : start + max(1, window_batch)]
            crops = torch.cat(
                [normalize_bgr(image_bgr[y1:y2, x1:x2]) for y1, y2, x1, x2 in group]
            ).to(device)
            window_logits = model(crops)["out"].float()  # (len(group), K, h, w)
            if canvas is None:
                shape = (window_logits.shape[1], band_rows, width)
                canvas = torch.zeros(shape, dtype=accumulate, device=device)
            for index, (y1, y2, x1, x2) in enumerate(group):
                canvas[:, y1 - top : y2 - top, x1:x2] += window_logits[index]
                count[:, y1 - top : y2 - top, x1:x2] += 1
    assert canvas is not None
    yield from _finished(canvas, count, top, height - top)


def _finished(canvas: Tensor, count: Tensor, top: int, rows: int) -> Iterator[Band]:
    """The mean logits (sum / count, as ``forward_logits``) of the band's first ``rows`` rows."""
    for start in range(0, rows, EMIT_ROWS):
        end = min(start + EMIT_ROWS, rows)
        yield top + start, canvas[:, start:end].float() / count[:, start:end]


def _shift(band: Tensor, rows: int) -> None:
    """Moves rows ``rows ..`` of a band (C, R, W) to the top, in place, and zeroes the freed rows.

    Copied in blocks of at most ``rows`` rows, so no block overlaps its own source and nothing
    band-sized is allocated.
    """
    kept = band.shape[1] - rows
    step = max(1, min(rows, EMIT_ROWS))
    for start in range(0, kept, step):
        end = min(start + step, kept)
        band[:, start:end] = band[:, start + rows : end + rows]
    band[:, kept:] = 0


def _source_rows(
    source: int, output: int, align_corners: bool, device: torch.device
) -> tuple[Tensor, Tensor, Tensor]:
    """``protocol.linear_taps`` along the rows, as tensors on ``device``."""
    first, second, weight = linear_taps(source, output, align_corners)
    as_tensor = torch.from_numpy
    return as_tensor(first).to(device), as_tensor(second).to(device), as_tensor(weight).to(device)


def resized_bands(
    bands: Iterator[Band], source_height: int, size: tuple[int, int], align_corners: bool
) -> Iterator[Band]:
    """Bands of logits resized to ``size`` (H, W) bilinearly, exactly as the whole canvas would be.

    Each source band is first resized across (its rows kept: a vertical scale of exactly 1); an
    output row is made as soon as both of its source rows are finished, from the same rows and
    weights as one whole-canvas ``interpolate``; source rows no later output row needs are dropped.
    """
    height, width = size
    pending: Tensor | None = None  # (K, rows, W): source rows pending_top .. , resized across
    pending_top = next_row = keep_from = 0
    rows: tuple[Tensor, Tensor, Tensor] | None = None
    for top, band in bands:
        if rows is None:
            rows = _source_rows(source_height, height, align_corners, band.device)
        first, second, weight = rows
        skip = max(keep_from - top, 0)  # rows no output needs (when shrinking)
        if skip >= band.shape[1]:
            continue
        across = F.interpolate(
            band[None, :, skip:],
            size=(band.shape[1] - skip, width),
            mode="bilinear",
            align_corners=align_corners,
        )[0]
        if pending is None or not pending.shape[1]:
            pending, pending_top = across, top + skip
        else:
            pending = torch.cat([pending, across], dim=1)
        finished = pending_top + pending.shape[1]
        end = int(torch.searchsorted(second, finished - 1, right=True))
        if end > next_row:
            low, high = first[next_row:end] - pending_top, second[next_row:end] - pending_top
            lam = weight[next_row:end].view(1, -1, 1)
            # As PyTorch's kernel: (1 - lambda) * row0 + lambda * row1.
            yield next_row, (1 - lam) * pending[:, low] + lam * pending[:, high]
            next_row = end
        keep_from = int(first[next_row]) if next_row < height else source_height
        drop = min(max(keep_from - pending_top, 0), pending.shape[1])
        pending, pending_top = pending[:, drop:], pending_top + drop
    if next_row != height:
        raise AssertionError(f"resized {next_row} of {height} rows")


@torch.no_grad()
def segment_tiled(
    model: Segmentor,
    image_bgr: np.ndarray,
    tile: tuple[int, int],
    stride: tuple[int, int],
    *,
    scale: tuple[int, int] | None = None,
    spec: ConfidenceSpec | None = None,
    device: torch.device | str = "cpu",
    window_batch: int = 1,
    accumulate: str = "float32",
) -> SegmentationResult:
    """Segments one image by tiles: ``slide``'s result in memory bounded by a band of rows.

    Args:
        image_bgr: uint8 (H, W, 3) BGR.
        tile, stride: window size and step (h, w); a stride larger than the tile leaves gaps.
        scale: keep-ratio test scale (w, h) the image is resized to first; None: native scale.
        spec: which confidence outputs to make (``probs`` is refused: K x H x W is what tiling
            avoids holding).
        window_batch: windows per forward pass, within one row of windows.
        accumulate: ``float32`` or ``float16`` (half the band's memory; on CPUs and GPUs alike).

    Raises:
        InputError: a stride larger than the tile, ``probs`` asked for, or an unknown dtype.
    """
    spec = spec or ConfidenceSpec()
    if spec.probs:
        raise InputError("tiled inference does not keep K x H x W probabilities: use confidence")
    if stride[0] > tile[0] or stride[1] > tile[1]:
        raise InputError(f"tile stride {stride} must not exceed the tile {tile}: gaps")
    if accumulate not in ACCUMULATE:
        raise InputError(f"accumulate must be one of {', '.join(ACCUMULATE)}, not {accumulate!r}")
    height, width = image_bgr.shape[:2]
    resized = resize_keep_ratio(image_bgr, scale) if scale else image_bgr
    bands = logit_bands(
        model,
        resized,
        tile,
        stride,
        device=device,
        window_batch=window_batch,
        accumulate=ACCUMULATE[accumulate],
    )
    if resized.shape[:2] != (height, width):
        bands = resized_bands(bands, resized.shape[0], (height, width), model.align_corners)
    collector: BandCollector | None = None
    for top, scores in bands:
        if collector is None:
            num_classes = scores.shape[0]
            collector = BandCollector(
                height, width, num_classes, spec, are_probs=False, confidence_dtype=np.float16
            )
        collector.add(top, scores)
    assert collector is not None
    return collector.result()
