"""TIFF through tifffile: the same pixels OpenCV decodes, BigTIFF, GeoTIFF tags carried into the
written mask, sizes checked from the header; pixel-limit errors name the limit and --tile."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from isaseg_cli.data.image import OPENCV_MAX_PIXELS, read_image_bgr
from isaseg_cli.data.tiff import encode_tiff, read_geo_tags, read_tiff_bgr, save_tiff
from isaseg_cli.errors import InputError
from tests.helpers import huge_png_header

tifffile = pytest.importorskip("tifffile")

# A GeoTIFF's placement: pixel scale, one tie point, and a GeoKeyDirectory (WGS 84).
GEO = [
    (33550, 12, 3, (0.5, 0.5, 0.0), True),
    (33922, 12, 6, (0.0, 0.0, 0.0, 500000.0, 4649776.0, 0.0), True),
    (34735, 3, 8, (1, 1, 0, 1, 2048, 0, 1, 4326), True),
]


def _pixels(shape: tuple[int, ...], dtype=np.uint8) -> np.ndarray:
    high = 256 if dtype == np.uint8 else 65536
    return np.random.default_rng(0).integers(0, high, shape, dtype=dtype)


@pytest.mark.parametrize(
    ("shape", "dtype", "photometric"),
    [
        ((40, 50, 3), np.uint8, "rgb"),
        ((40, 50), np.uint8, "minisblack"),
        ((40, 50, 4), np.uint8, "rgb"),  # unassociated alpha: libtiff premultiplies it
        ((40, 50, 3), np.uint16, "rgb"),
        ((40, 50), np.uint16, "minisblack"),
    ],
)
def test_same_pixels_as_opencv(tmp_path, shape, dtype, photometric) -> None:
    path = tmp_path / "a.tif"
    extra = {"extrasamples": ["unassalpha"]} if shape[-1:] == (4,) else {}
    tifffile.imwrite(path, _pixels(shape, dtype), photometric=photometric, **extra)
    ours, tags = read_tiff_bgr(path, 10**6)
    assert tags == ()
    assert ours.dtype == np.uint8 and ours.shape == (40, 50, 3)
    assert np.array_equal(ours, cv2.imread(str(path), cv2.IMREAD_COLOR))
    assert np.array_equal(read_image_bgr(path), ours)


def test_planar_and_bigtiff(tmp_path) -> None:
    rgb = _pixels((30, 20, 3))
    tifffile.imwrite(
        tmp_path / "p.tif", np.moveaxis(rgb, -1, 0), photometric="rgb", planarconfig="separate"
    )
    tifffile.imwrite(tmp_path / "b.tif", rgb, photometric="rgb", bigtiff=True)
    for name in ("p.tif", "b.tif"):
        image, _ = read_tiff_bgr(tmp_path / name, 10**6)
        assert np.array_equal(image, rgb[..., ::-1])


def test_geo_tags_reach_the_written_mask(tmp_path) -> None:
    source = tmp_path / "scene.tif"
    tifffile.imwrite(source, _pixels((300, 260, 3)), photometric="rgb", extratags=GEO)
    _, tags = read_tiff_bgr(source, 10**6)
    assert [code for code, *_ in tags] == [33550, 33922, 34735]
    assert read_geo_tags(source) == tags
    mask = (np.arange(300 * 260) % 5).astype(np.uint8).reshape(300, 260)
    palette = [(10, 20, 30), (40, 50, 60), (70, 80, 90), (1, 2, 3), (255, 0, 0)]
    written = save_tiff(tmp_path / "mask.tif", mask, palette=palette, geo_tags=tags)
    with tifffile.TiffFile(written) as tif:
        page = tif.pages[0]
        assert np.array_equal(page.asarray(), mask)
        assert page.photometric == tifffile.PHOTOMETRIC.PALETTE and page.is_tiled
        assert tuple(page.colormap[:, 1] // 257) == (40, 50, 60)
        assert page.tags[33550].value == (0.5, 0.5, 0.0)
        assert page.tags[33922].value == GEO[1][3]
        assert page.tags[34735].value == GEO[2][3]
    assert read_geo_tags(tmp_path / "none.png") == ()


def test_size_is_checked_from_the_header(tmp_path) -> None:
    path = tmp_path / "big.tif"
    tifffile.imwrite(path, np.zeros((100, 100), np.uint8))
    with pytest.raises(
        InputError, match=r"100x100 \(10,000 pixels\), which exceeds --max-pixels 9,999"
    ):
        read_image_bgr(path, 9_999)
    (tmp_path / "bad.tif").write_bytes(b"II*\0 not a tiff")
    with pytest.raises(InputError, match="cannot decode"):
        read_image_bgr(tmp_path / "bad.tif")
    float_path = tmp_path / "f.tif"
    tifffile.imwrite(float_path, np.zeros((4, 4), np.float32))
    with pytest.raises(InputError, match="float32"):
        read_image_bgr(float_path)


def test_codecs_tifffile_lacks_fall_back_to_opencv(tmp_path) -> None:
    path = tmp_path / "lzw.tif"
    image = _pixels((30, 40, 3))
    cv2.imwrite(str(path), image)  # OpenCV writes LZW, which tifffile needs imagecodecs for
    assert np.array_equal(read_image_bgr(path), image)


def test_encode_rgb(tmp_path) -> None:
    rgb = _pixels((20, 30, 3))
    (tmp_path / "c.tif").write_bytes(encode_tiff(rgb))
    assert np.array_equal(tifffile.imread(tmp_path / "c.tif"), rgb)


def test_beyond_opencvs_limit_names_it_and_tile(tmp_path) -> None:
    path = tmp_path / "huge.png"
    path.write_bytes(huge_png_header(40_000, 40_000))  # 1.6e9 pixels: above OpenCV's 2^30
    with pytest.raises(InputError, match=f"OpenCV's limit of {OPENCV_MAX_PIXELS:,}.*--tile"):
        read_image_bgr(path, 10**10)
    with pytest.raises(InputError, match="exceeds --max-pixels .*--tile"):
        read_image_bgr(path)
