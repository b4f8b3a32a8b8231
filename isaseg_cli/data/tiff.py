"""TIFF and BigTIFF images through ``tifffile`` (the ``tiff`` extra): no pixel limit of its own,
and the GeoTIFF tags of an input carried into the output mask so GIS tools place it."""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from isaseg_cli.errors import InputError

TIFF_SUFFIXES = (".tif", ".tiff")
# GeoTIFF (ModelPixelScale, ModelTiepoint, ModelTransformation, GeoKeyDirectory, GeoDoubleParams,
# GeoAsciiParams) and GDAL's metadata and nodata tags: what places a raster on the earth.
GEO_TAGS = (33550, 33922, 34264, 34735, 34736, 34737, 42112, 42113)
# Classic TIFF offsets are 32-bit: above this many bytes of pixels, write BigTIFF.
_BIGTIFF_BYTES = 2**32 - 2**25
_TILE = (256, 256)


class CodecMissingError(InputError):
    """The TIFF's compression (LZW, JPEG, ...) needs the ``imagecodecs`` package."""


GeoTags = tuple[
    tuple[int, int, int, Any], ...
]  # (code, dtype, count, value), as tifffile's extratags


def is_tiff(path: str | Path) -> bool:
    return Path(path).suffix.lower() in TIFF_SUFFIXES


def tifffile_available() -> bool:
    try:
        import tifffile  # noqa: F401
    except ImportError:
        return False
    return True


def _tifffile() -> Any:
    try:
        import tifffile
    except ImportError:
        raise InputError("TIFF masks need tifffile: pip install 'isaseg[tiff]'") from None
    return tifffile


def _page(tif: Any, path: str | Path) -> Any:
    if not tif.pages:
        raise InputError(f"cannot decode {path}: a TIFF without images")
    return tif.pages[0]


def read_tiff_bgr(path: str | Path, max_pixels: int) -> tuple[np.ndarray, GeoTags]:
    """The first image of a TIFF or BigTIFF as uint8 (H, W, 3) BGR, and its GeoTIFF tags.

    Gray, RGB and RGBA (contiguous or planar) are accepted; 16-bit samples become 8-bit as
    OpenCV's IMREAD_COLOR makes them. The size is read from the header and checked first.

    Raises:
        CodecMissingError: the compression needs ``imagecodecs`` (tifffile decodes only
            uncompressed, deflate and a few other schemes by itself).
        InputError: more than ``max_pixels`` pixels, or not a TIFF image this can turn into BGR.
    """
    tifffile = _tifffile()
    try:
        with tifffile.TiffFile(str(path)) as tif:
            page = _page(tif, path)
            height, width = int(page.imagelength), int(page.imagewidth)
            if height * width > max_pixels:
                raise InputError(
                    f"{path} is {width}x{height} ({width * height:,} pixels), which exceeds "
                    f"--max-pixels {max_pixels:,} (raise it; with --tile memory stays bounded)"
                )
            tags = _geo_tags(page)
            pixels = page.asarray()
            planar = page.planarconfig == 2 and pixels.ndim == 3
            unassociated = tuple(int(v) for v in page.extrasamples or ())[:1] == (2,)
    except InputError:
        raise
    except MemoryError:
        raise InputError(f"cannot decode {path}: out of memory") from None
    except Exception as exc:  # tifffile's own errors, a missing codec (imagecodecs), ...
        reason = str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__
        error = CodecMissingError if "imagecodecs" in reason else InputError
        raise error(f"cannot decode {path}: {reason}") from None
    if planar:
        pixels = np.moveaxis(pixels, 0, -1)  # (C, H, W) -> (H, W, C)
    return _to_bgr(pixels, path, premultiply=unassociated), tags


def _geo_tags(page: Any) -> GeoTags:
    found = []
    for code in GEO_TAGS:
        tag = page.tags.get(code)
        if tag is not None:
            found.append((code, int(tag.dtype), int(tag.count), tag.value))
    return tuple(found)


def read_geo_tags(path: str | Path) -> GeoTags:
    """The GeoTIFF tags of a TIFF's first image (headers only); none for other files."""
    if not is_tiff(path) or not tifffile_available():
        return ()
    import tifffile

    try:
        with tifffile.TiffFile(str(path)) as tif:
            return _geo_tags(tif.pages[0]) if tif.pages else ()
    except Exception:  # not a TIFF after all: no tags to keep
        return ()


def _to_bgr(pixels: np.ndarray, path: str | Path, *, premultiply: bool = False) -> np.ndarray:
    if pixels.dtype == np.uint16:  # as OpenCV's TIFF decoder: gray keeps the high byte, colour
        gray = pixels.ndim == 2 or pixels.shape[-1] == 1  # is divided by 257 and rounded
        pixels = (pixels >> 8) if gray else np.rint(pixels / np.float32(257))
        pixels = pixels.astype(np.uint8)
    if pixels.dtype != np.uint8 and pixels.dtype != np.bool_:
        raise InputError(f"cannot decode {path}: {pixels.dtype} samples (8 or 16 bits wanted)")
    pixels = pixels.astype(np.uint8, copy=False)
    if pixels.ndim == 2:
        pixels = pixels[..., None]
    channels = pixels.shape[-1] if pixels.ndim == 3 else 0
    if channels == 1:
        return np.repeat(pixels, 3, axis=2)
    if channels == 4 and premultiply:  # libtiff, under OpenCV, premultiplies unassociated alpha
        color = pixels[..., :3].astype(np.uint16) * pixels[..., 3:] + 127
        pixels = (color // 255).astype(np.uint8)
    if channels in (3, 4):
        return np.ascontiguousarray(pixels[..., 2::-1])  # RGB(A) -> BGR
    raise InputError(f"cannot decode {path}: a TIFF image of shape {pixels.shape}")


def save_tiff(
    path: str | Path,
    array: np.ndarray,
    *,
    palette: Sequence[Sequence[int]] | None = None,
    geo_tags: GeoTags = (),
) -> Path:
    """Writes ``encode_tiff``'s bytes atomically (see ``data.mask_io.atomic_write_bytes``)."""
    from isaseg_cli.data.mask_io import atomic_write_bytes

    return atomic_write_bytes(path, encode_tiff(array, palette=palette, geo_tags=geo_tags))


def encode_tiff(
    array: np.ndarray,
    *,
    palette: Sequence[Sequence[int]] | None = None,
    geo_tags: GeoTags = (),
) -> bytes:
    """A mask (H, W) or an RGB image (H, W, 3) as deflate-compressed tiled TIFF bytes (BigTIFF
    when classic offsets cannot address it), with ``palette`` as its colour map."""
    tifffile = _tifffile()
    options: dict[str, Any] = {"compression": "zlib", "extratags": list(geo_tags)}
    if min(array.shape[:2]) >= _TILE[0]:
        options["tile"] = _TILE
    if palette is not None and array.ndim == 2 and array.dtype == np.uint8:
        colormap = np.zeros((3, 256), np.uint16)
        colors = np.asarray(palette, dtype=np.uint16).reshape(-1, 3)[:256]
        colormap[:, : len(colors)] = colors.T * 257  # 8-bit -> 16-bit colour map entries
        options.update(photometric="palette", colormap=colormap)
    elif array.ndim == 2:
        options["photometric"] = "minisblack"
    else:
        options["photometric"] = "rgb"
    buffer = io.BytesIO()
    tifffile.imwrite(buffer, array, bigtiff=array.nbytes > _BIGTIFF_BYTES, **options)
    return buffer.getvalue()
