"""Writing segmentation results: index PNGs with an embedded palette, colour images, overlays and
Cityscapes label ids. Every write is atomic: a temporary file in the same folder, then os.replace.
"""

from __future__ import annotations

import errno
import io
import os
import tempfile
import uuid
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from isaseg_cli.errors import InputError, OutputError
from isaseg_cli.zoo.classes import CITYSCAPES_TRAIN_ID_TO_ID

Palette = Sequence[Sequence[int]]

# Cityscapes labelId 0 ('unlabeled') for anything that is not a trainId 0..18 (e.g. 255 = ignore).
_UNLABELED_ID = 0


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    """Writes ``data`` to ``path`` so that a reader sees either the old file or the whole new one.

    Parent folders are created as needed.

    Raises:
        OutputError: the file cannot be written (read-only, disk full, ...); the message names
            ``path``, never the temporary file, and nothing is left behind.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"cannot create the folder for {path}: {os_error_reason(exc)}") from None
    tmp = temporary_sibling(path, ".tmp")
    try:
        with open(tmp, "xb") as file:
            file.write(data)
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise OutputError(f"cannot write {path}: {os_error_reason(exc)}") from None
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


_ADVICE = {
    errno.ENOSPC: "free some space or write elsewhere",
    errno.EROFS: "choose a writable place",
    errno.EACCES: "choose a writable place",
    errno.EPERM: "choose a writable place",
}


def os_error_reason(exc: OSError) -> str:
    """The system's words ("No space left on device") and what to do, without the temporary
    file's name that ``str(exc)`` would show."""
    advice = _ADVICE.get(exc.errno or 0)
    reason = exc.strerror or type(exc).__name__
    return f"{reason}; {advice}" if advice else reason


def check_writable(path: str | Path, flag: str, *, folder: bool = False) -> None:
    """Checks, before any work, that a file (or, with ``folder``, files in a folder) can be
    created at ``path``; missing folders count as creatable when their nearest existing parent
    accepts new entries. Probes with a real file: permission bits are wrong for root and for
    read-only mounts. Creates nothing that stays.

    Raises:
        OutputError: naming ``flag`` and ``path``, and why.
    """
    path = Path(path)
    if folder and path.is_file():
        raise OutputError(f"{flag} {path} is a file; give a folder")
    if not folder and path.is_dir():
        raise OutputError(f"{flag} {path} is a folder; give a file name")
    base = path if folder else path.parent
    while not os.path.lexists(base) and base != base.parent:
        base = base.parent
    if not base.is_dir():
        raise OutputError(f"{flag} {path}: {base} is not a folder")
    try:
        handle, probe = tempfile.mkstemp(dir=base, prefix=".isaseg-probe-")
        os.close(handle)
        os.unlink(probe)
    except OSError as exc:
        reason = os_error_reason(exc)
        raise OutputError(f"{flag} {path} cannot be written ({base}): {reason}") from None


def temporary_sibling(path: Path, suffix: str) -> Path:
    """A fresh hidden name beside ``path`` (same folder, so ``os.replace`` is atomic)."""
    return path.with_name(f".{path.stem}.{os.getpid()}-{uuid.uuid4().hex[:8]}{suffix}")


def _check_mask(mask: np.ndarray) -> np.ndarray:
    if mask.ndim != 2:
        raise InputError(f"a mask must be 2-D (H, W), got shape {mask.shape}")
    if mask.size and (mask.min() < 0 or mask.max() > 255):
        raise InputError(f"mask values must lie in 0..255 for an 8-bit PNG, got {mask.max()}")
    return mask.astype(np.uint8, copy=False)


def _lookup(palette: Palette) -> np.ndarray:
    """A (256, 3) uint8 RGB table: the palette, then black for indices it does not cover."""
    table = np.zeros((256, 3), dtype=np.uint8)
    colors = np.asarray(palette, dtype=np.uint8).reshape(-1, 3)[:256]
    table[: len(colors)] = colors
    return table


def encode_index_png(mask: np.ndarray, palette: Palette | None = None) -> bytes:
    """The PNG bytes that ``save_index_png`` writes (for callers that send rather than save).

    Raises:
        InputError: the mask is not 2-D or has values outside 0..255.
    """
    indices = np.ascontiguousarray(_check_mask(mask))
    height, width = indices.shape
    image = Image.frombytes("L" if palette is None else "P", (width, height), indices.tobytes())
    if palette is not None:
        image.putpalette(_lookup(palette).reshape(-1).tolist())
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def save_index_png(path: str | Path, mask: np.ndarray, palette: Palette | None = None) -> Path:
    """Saves class indices as an 8-bit PNG.

    With a ``palette`` (RGB per class) the PNG is a palette ('P') image: Pillow reads back the
    indices, as mmseg reads label maps, and image viewers show the colours. OpenCV always expands
    a PNG palette, so ``cv2.imread`` of such a file gives the colours (BGR), not the indices.
    Without a palette the PNG is plain 8-bit grayscale, which every reader returns as indices
    (the format of Cityscapes' ``*_labelIds.png``).

    Raises:
        InputError: the mask is not 2-D or has values outside 0..255.
    """
    return atomic_write_bytes(path, encode_index_png(mask, palette))


def encode_image_bgr(image: np.ndarray, suffix: str = ".png") -> bytes:
    """A BGR uint8 image encoded by OpenCV in the format ``suffix`` names (.png, .jpg, ...).

    Raises:
        InputError: OpenCV cannot write that suffix.
    """
    try:
        ok, encoded = cv2.imencode(suffix or ".png", image)
    except cv2.error:
        ok = False
    if not ok:
        raise InputError(f"OpenCV does not know the {suffix!r} format")
    return encoded.tobytes()


def save_image_bgr(path: str | Path, image: np.ndarray) -> Path:
    """Encodes a BGR uint8 image with OpenCV in the format its suffix names (.png, .jpg, ...).

    Raises:
        InputError: OpenCV cannot write that suffix.
    """
    path = Path(path)
    try:
        encoded = encode_image_bgr(image, path.suffix or ".png")
    except InputError:
        raise InputError(
            f"cannot write {path}: OpenCV does not know the {path.suffix!r} format"
        ) from None
    return atomic_write_bytes(path, encoded)


def colorize(mask: np.ndarray, palette: Palette) -> np.ndarray:
    """The RGB colour image (H, W, 3) uint8 of a mask; indices beyond the palette are black."""
    return _lookup(palette)[_check_mask(mask)]


def overlay(
    image_bgr: np.ndarray, mask: np.ndarray, palette: Palette, opacity: float = 0.5
) -> np.ndarray:
    """The image blended with the mask's colours, as mmseg's ``show_result``: BGR uint8.

    ``image * (1 - opacity) + colours * opacity``, truncated to uint8.

    Raises:
        InputError: ``opacity`` is not in (0, 1], or the sizes differ.
    """
    if not 0 < opacity <= 1:
        raise InputError(f"opacity must be in (0, 1], got {opacity}")
    if image_bgr.shape[:2] != mask.shape:
        raise InputError(f"image {image_bgr.shape[:2]} and mask {mask.shape} sizes differ")
    color_bgr = colorize(mask, palette)[..., ::-1]
    return (image_bgr * (1 - opacity) + color_bgr * opacity).astype(np.uint8)


def to_cityscapes_label_ids(mask: np.ndarray) -> np.ndarray:
    """Cityscapes trainIds (0..18) -> labelIds (7..33) for the benchmark server, as uint8.

    Any other value (e.g. 255, ignore) becomes labelId 0, 'unlabeled'.
    """
    table = np.full(256, _UNLABELED_ID, dtype=np.uint8)
    table[: len(CITYSCAPES_TRAIN_ID_TO_ID)] = CITYSCAPES_TRAIN_ID_TO_ID
    return table[_check_mask(mask)]
