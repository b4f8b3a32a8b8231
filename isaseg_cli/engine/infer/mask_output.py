"""How ``predict`` writes one mask: the format, the file type and low-confidence pixels."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from isaseg_cli.data.mask_io import colorize, overlay, save_image_bgr, save_index_png
from isaseg_cli.data.tiff import is_tiff, read_geo_tags, save_tiff
from isaseg_cli.engine.infer import confidence

if TYPE_CHECKING:  # not imported at run time: an exported network segments without torch
    from isaseg_cli.engine.infer.segmenter import Segmenter


def write_mask(
    segmenter: Segmenter,
    fmt: str,
    path: Path,
    mask: np.ndarray,
    image: np.ndarray,
    opacity: float,
    source: Path | None = None,
) -> Path:
    """Writes ``mask`` to ``path`` as ``fmt`` (``index``, ``labelids``, ``color`` or ``overlay``
    of ``image``), PNG or, for a ``.tif`` path, TIFF carrying the GeoTIFF tags of ``source``;
    pixels below the segmenter's ``min_confidence`` are 255 in index masks, grey in colours."""
    palette = confidence.output_palette(segmenter.palette, confidence_spec(segmenter))
    geo_tags = read_geo_tags(source) if source is not None and is_tiff(path) else ()
    if fmt in ("index", "labelids"):
        indices = mask if fmt == "index" else confidence.label_ids(mask, confidence_spec(segmenter))
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


def confidence_spec(segmenter: Any) -> confidence.ConfidenceSpec:
    """The segmenter's confidence settings; exported networks have none (plain masks)."""
    return getattr(segmenter, "confidence", None) or confidence.ConfidenceSpec()
