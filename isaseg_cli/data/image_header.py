"""Image sizes from file headers, so an image too large to decode is refused before decoding.

Pillow is imported inside the functions: the CLI takes ``DEFAULT_MAX_PIXELS`` for its help text.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import BinaryIO

from isaseg_cli.errors import InputError

# 50 megapixels: a 48 MP photo or an 8K frame passes. Scores are kept at the input size (K float32
# per pixel), so 50 MP with 19 classes already needs ~4 GB; a decompression bomb needs far more.
DEFAULT_MAX_PIXELS = 50_000_000
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def read_image_size(path: str | Path | BinaryIO) -> tuple[int, int] | None:
    """(width, height) from the header (PNG, JPEG, BMP, TIFF, WebP, ...) without decoding pixels.

    ``path`` may also be a seekable binary file (e.g. ``io.BytesIO`` of a request body).

    Returns None when Pillow does not know the format (OpenCV may still decode it), and
    (-1, -1) when the header announces more than Pillow's decompression-bomb limit
    (``bomb_limit``), which hides the exact size of any format but PNG.
    """
    from PIL import Image

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as image:  # lazy: reads the header only
                return image.size
    except Image.DecompressionBombError:
        return _png_size(path) or (-1, -1)
    except Exception:  # unknown or broken header: leave the verdict to the decoder
        return None


def _png_size(path: str | Path | BinaryIO) -> tuple[int, int] | None:
    """A PNG's size from its IHDR chunk, which the format puts first, right after the signature."""
    if isinstance(path, (str, Path)):
        with open(path, "rb") as file:
            head = file.read(24)
    else:
        path.seek(0)
        head = path.read(24)
    if len(head) < 24 or head[:8] != _PNG_SIGNATURE or head[12:16] != b"IHDR":
        return None
    return int.from_bytes(head[16:20], "big"), int.from_bytes(head[20:24], "big")


def bomb_limit() -> int:
    """The pixel count above which Pillow refuses even to report an image's size."""
    from PIL import Image

    return 2 * (Image.MAX_IMAGE_PIXELS or 0)


def check_image_size(path: str | Path, max_pixels: int = DEFAULT_MAX_PIXELS) -> None:
    """Refuses an image whose header announces more than ``max_pixels`` pixels.

    Raises:
        InputError: the image is larger than ``max_pixels`` (or than Pillow's bomb limit).
    """
    size = read_image_size(path)
    if size is None:
        return
    advice = f"exceeds --max-pixels {max_pixels:,} (raise it; with --tile memory stays bounded)"
    if size == (-1, -1):
        limit = bomb_limit()
        if limit > max_pixels:
            raise InputError(f"{path} has more than {limit:,} pixels, which {advice}")
        raise InputError(
            f"{path} has more than {limit:,} pixels, beyond what Pillow reads: save it as a "
            f"(Big)TIFF (pip install 'isaseg[tiff]') and use --tile"
        )
    width, height = size
    if width * height > max_pixels:
        raise InputError(f"{path} is {width}x{height} ({width * height:,} pixels), which {advice}")
