"""Response bodies: the same encoders as ``isaseg predict``, to bytes instead of files."""

from __future__ import annotations

import json

import numpy as np

from isaseg_cli.data.mask_io import (
    Palette,
    colorize,
    encode_image_bgr,
    encode_index_png,
    overlay,
    to_cityscapes_label_ids,
)

FORMATS = ("index", "color", "overlay", "labelids", "json")


def encode_result(
    fmt: str,
    *,
    image: np.ndarray,
    mask: np.ndarray,
    probs: np.ndarray | None,
    classes: tuple[str, ...],
    palette: Palette,
    opacity: float,
) -> tuple[bytes, str]:
    """(body, media type) for one segmented image in ``fmt`` (one of ``FORMATS``)."""
    if fmt == "index":
        return encode_index_png(mask, palette), "image/png"
    if fmt == "labelids":
        return encode_index_png(to_cityscapes_label_ids(mask)), "image/png"
    if fmt == "color":
        return encode_image_bgr(colorize(mask, palette)[..., ::-1]), "image/png"
    if fmt == "overlay":
        return encode_image_bgr(overlay(image, mask, palette, opacity)), "image/png"
    return json.dumps(summarize(mask, probs, classes)).encode(), "application/json"


def summarize(
    mask: np.ndarray, probs: np.ndarray | None, classes: tuple[str, ...]
) -> dict[str, object]:
    """Pixel counts per predicted class and the mean top-class probability (overall and per
    class), from the mask (H, W) and the probabilities (K, H, W)."""
    counts = np.bincount(mask.reshape(-1).astype(np.int64), minlength=len(classes))
    confidence = probs.max(axis=0) if probs is not None else None  # (H, W)
    sums = (
        np.bincount(mask.reshape(-1).astype(np.int64), weights=confidence.reshape(-1))
        if confidence is not None
        else None
    )
    found = []
    for index in np.flatnonzero(counts):
        row: dict[str, object] = {
            "index": int(index),
            "name": classes[index] if index < len(classes) else str(index),
            "pixels": int(counts[index]),
        }
        if sums is not None:
            row["mean_confidence"] = round(float(sums[index] / counts[index]), 6)
        found.append(row)
    height, width = mask.shape
    summary: dict[str, object] = {"width": width, "height": height, "classes": found}
    if confidence is not None:
        summary["mean_confidence"] = round(float(confidence.mean()), 6)
    return summary
