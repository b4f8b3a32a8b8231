"""Checks of one image/label pair: the cheap header part (sizes, channels) and the full read
(value range and the histogram of label values), each problem a Finding that names the file."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from PIL import Image, UnidentifiedImageError

from isaseg_cli.data.base import IGNORE_INDEX, Sample, reduce_zero
from isaseg_cli.data.image_header import DEFAULT_MAX_PIXELS, check_image_size, read_image_size
from isaseg_cli.errors import InputError
from isaseg_cli.report.pairing import Finding

# Stored value -> value after mmseg's reduce_zero_label, for all 256 byte values.
REDUCED = reduce_zero(np.arange(256, dtype=np.uint8))
# Colours listed one by one in a finding; a photo-like RGB label has thousands.
MAX_COLOURS_SHOWN = 6


@dataclass(frozen=True, slots=True)
class LabelReport:
    """What the full read of one label found; ``histogram`` counts its 256 stored values
    (None when the file holds no 8-bit class indices)."""

    label_path: Path
    findings: tuple[Finding, ...]
    histogram: np.ndarray | None


def image_size(path: Path) -> tuple[int, int] | None:
    """(width, height) from the header, else by an OpenCV decode; None: unreadable.

    Only called once ``check_image_size`` has let the file through, so the decode is bounded.
    """
    size = read_image_size(path)
    if size is not None:
        return size
    # The loader's own decoder (read_image_bgr), without importing torch with it.
    try:
        image = cv2.imdecode(np.fromfile(path, dtype=np.uint8), cv2.IMREAD_COLOR)
    except (OSError, cv2.error):
        return None
    return None if image is None else (image.shape[1], image.shape[0])


def check_header(sample: Sample, max_pixels: int = DEFAULT_MAX_PIXELS) -> list[Finding]:
    """The cheap checks run before train and eval: both files readable and within
    ``max_pixels``, the label single-channel and of the image's size. Only headers are read."""
    try:
        check_image_size(sample.image_path, max_pixels)
    except InputError as exc:
        return [Finding("too large", sample.image_path, str(exc))]
    size = image_size(sample.image_path)
    if size is None:
        return [_unreadable_image(sample.image_path)]
    try:
        with Image.open(sample.label_path) as label:
            bands, mode, label_size = len(label.getbands()), label.mode, label.size
    except (OSError, UnidentifiedImageError, Image.DecompressionBombError) as exc:
        message = f"cannot read label {sample.label_path}: {exc}"
        return [Finding("unreadable", sample.label_path, message)]
    findings = []
    if bands != 1:
        findings.append(_channels(sample.label_path, bands, mode))
    if label_size != size:
        findings.append(_size(sample, label_size, size))
    return findings


def inspect_label(
    sample: Sample,
    num_classes: int,
    reduce_zero_label: bool,
    palette: Sequence[Sequence[int]] = (),
) -> LabelReport:
    """The full check of one pair: the header checks, then the values of the decoded label.

    Values must be below ``num_classes`` or be 255 after ``reduce_zero_label`` (as the loader
    applies it). A colour label's finding says how to convert it, naming ``palette`` when its
    colours are the dataset's.
    """
    path = sample.label_path
    findings = check_header(sample)
    if any(f.kind in ("unreadable", "unreadable image") for f in findings):
        return LabelReport(path, tuple(findings), None)
    values, mode = _decode(path)
    if values.ndim == 3:
        colour = next(f for f in findings if f.kind == "channels")
        detail = _colour_detail(values, palette)
        findings[findings.index(colour)] = Finding("channels", path, f"{colour.message}; {detail}")
        return LabelReport(path, tuple(findings), None)
    if values.dtype != np.uint8:
        if values.size and (values.min() < 0 or values.max() > IGNORE_INDEX):
            message = f"label {path} holds value {values.max()}; class-index labels are 8-bit"
            return LabelReport(path, (*findings, Finding("values", path, message)), None)
        values = values.astype(np.uint8)
    histogram = value_histogram(values)
    reduced = REDUCED if reduce_zero_label else np.arange(256)
    bad = [v for v in np.flatnonzero(histogram) if num_classes <= reduced[v] != IGNORE_INDEX]
    if bad:
        findings.append(_values(path, bad, histogram, num_classes, reduce_zero_label, mode))
    return LabelReport(path, tuple(findings), histogram)


def _decode(path: Path) -> tuple[np.ndarray, str]:
    """The label's values as Pillow (the loader's reader) gives them, and its mode.

    An 8-bit grayscale PNG, the usual label, decodes the same in OpenCV at 1.5x the speed (no
    copy out of Pillow); a palette PNG must go through Pillow, which keeps its indices.
    """
    with Image.open(path) as image:
        mode, fmt, size = image.mode, image.format, image.size
        if not (mode == "L" and fmt == "PNG"):
            return np.array(image), mode
    values = cv2.imdecode(np.fromfile(path, dtype=np.uint8), cv2.IMREAD_UNCHANGED)
    if values is None or values.dtype != np.uint8 or values.shape != (size[1], size[0]):
        with Image.open(path) as image:
            return np.array(image), mode
    return values, mode


def value_histogram(values: np.ndarray) -> np.ndarray:
    """Pixel counts of the 256 values of a uint8 map, as int64."""
    if values.size < 1 << 24:  # OpenCV counts in float32, exact below 2^24 per bin; 2x bincount
        counts = cv2.calcHist([np.ascontiguousarray(values)], [0], None, [256], [0, 256])
        return counts.ravel().astype(np.int64)
    return np.bincount(values.ravel(), minlength=256)


def _unreadable_image(path: Path) -> Finding:
    return Finding("unreadable image", path, f"cannot read image {path}: not a decodable image")


def _channels(path: Path, bands: int, mode: str) -> Finding:
    return Finding(
        "channels",
        path,
        f"label {path} has {bands} channels ({mode}), not one class index per pixel: map each "
        "colour to its class index and save an 8-bit grayscale or palette PNG",
    )


def _size(sample: Sample, label: tuple[int, int], image: tuple[int, int]) -> Finding:
    return Finding(
        "size",
        sample.label_path,
        f"label {sample.label_path} is {label[0]}x{label[1]} but image {sample.image_path} is "
        f"{image[0]}x{image[1]}",
    )


def _values(
    path: Path,
    bad: list[int],
    histogram: np.ndarray,
    num_classes: int,
    reduce_zero_label: bool,
    mode: str,
) -> Finding:
    pixels = int(histogram[bad].sum())
    shown = ", ".join(str(v) for v in bad[:8]) + (", ..." if len(bad) > 8 else "")
    message = (
        f"label {path} holds value{'s' if len(bad) > 1 else ''} {shown} ({pixels} pixels), but the "
        f"dataset has {num_classes} classes (0..{num_classes - 1}, {IGNORE_INDEX} = ignore)"
    )
    if reduce_zero_label:
        message += "; with reduce_zero_label a stored value v is class v - 1"
    if mode == "P":
        message += "; it is a palette PNG: its indices, not its colours, are the class values"
    return Finding("values", path, message)


def _colour_detail(values: np.ndarray, palette: Sequence[Sequence[int]]) -> str:
    """How to turn an (H, W, C) colour label into class indices."""
    rgb = values[..., :3]
    if (rgb == rgb[..., :1]).all():
        return "its colour channels are equal: keep one (Image.open(path).convert('L'))"
    colours = np.unique(rgb.reshape(-1, 3), axis=0)
    known = {tuple(int(c) for c in colour) for colour in palette}
    listed = ", ".join(str(tuple(int(c) for c in colour)) for colour in colours[:MAX_COLOURS_SHOWN])
    more = ", ..." if len(colours) > MAX_COLOURS_SHOWN else ""
    if known and all(tuple(int(c) for c in colour) in known for colour in colours):
        return (
            f"its {len(colours)} colours are all in the dataset's palette: replace each colour by "
            "its position in that palette"
        )
    return f"it holds {len(colours)} colours ({listed}{more})"
