"""Request bodies to BGR arrays: the size read from the header first, then OpenCV's decode.

The header is read as ``isaseg predict`` reads it (``data.image_header``), so a 60,000 x 60,000
PNG is refused before a single pixel is decoded; here each refusal gets its HTTP status.
"""

from __future__ import annotations

import io

import cv2
import numpy as np

from isaseg_cli.data.image_header import bomb_limit, read_image_size
from isaseg_cli.serve.api_error import ApiError


def image_size(data: bytes) -> tuple[int, int]:
    """(width, height) from the image header, without decoding the pixels.

    Raises:
        ApiError: 400 for an empty body, 415 when no known image format matches, 413 when
            Pillow's own decompression-bomb guard refuses the size.
    """
    if not data:
        raise ApiError(400, "empty body: send the image bytes")
    size = read_image_size(io.BytesIO(data))
    if size is None:
        raise ApiError(415, "not an image: no PNG, JPEG, BMP, TIFF or WebP header found")
    if size == (-1, -1):
        raise ApiError(413, f"image too large: more than {bomb_limit():,} pixels")
    return size


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
