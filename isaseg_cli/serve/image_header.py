"""Request bodies to BGR arrays: the size read from the header first, then OpenCV's decode.

Pillow's ``Image.open`` parses only the header, so a 60,000 x 60,000 PNG is refused before a
single pixel is decoded. (A shared header check for predict is on its way in ``data/``.)
"""

from __future__ import annotations

import io
import warnings

import cv2
import numpy as np
from PIL import Image, UnidentifiedImageError

from isaseg_cli.serve.api_error import ApiError


def image_size(data: bytes) -> tuple[int, int]:
    """(width, height) from the image header, without decoding the pixels.

    Raises:
        ApiError: 400 for an empty body, 415 when no known image format matches, 413 when
            Pillow's own decompression-bomb guard refuses the size.
    """
    if not data:
        raise ApiError(400, "empty body: send the image bytes")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as image:
                return image.size
    except Image.DecompressionBombError as exc:
        raise ApiError(413, f"image too large: {exc}") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError):
        raise ApiError(415, "not an image: no PNG, JPEG, BMP, TIFF or WebP header found") from None


def decode_image(data: bytes, max_pixels: int) -> np.ndarray:
    """The body as a (H, W, 3) uint8 BGR array, decoded as ``isaseg predict`` decodes files.

    Raises:
        ApiError: see ``image_size``; 413 above ``max_pixels``; 400 when the header is fine
            but the pixels cannot be decoded (a truncated file).
    """
    width, height = image_size(data)
    if width * height > max_pixels:
        raise ApiError(
            413, f"image is {width}x{height} = {width * height} pixels; the limit is {max_pixels}"
        )
    image = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), cv2.IMREAD_COLOR)
    if image is None:
        raise ApiError(400, f"cannot decode the {width}x{height} image: truncated or corrupt")
    return image
