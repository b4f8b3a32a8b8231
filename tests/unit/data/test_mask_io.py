"""Result writers: index PNGs read back as indices, colours, mmseg's overlay, Cityscapes ids."""

from __future__ import annotations

import errno
import os

import cv2
import numpy as np
import pytest
from PIL import Image

from isaseg_cli.data.mask_io import (
    atomic_write_bytes,
    check_writable,
    colorize,
    overlay,
    save_image_bgr,
    save_index_png,
    to_cityscapes_label_ids,
)
from isaseg_cli.errors import InputError, OutputError
from isaseg_cli.zoo.classes import CITYSCAPES

PALETTE = ((128, 64, 128), (244, 35, 232), (70, 70, 70), (0, 0, 142), (255, 255, 0))


@pytest.fixture
def mask() -> np.ndarray:
    return np.random.default_rng(0).integers(0, len(PALETTE), (24, 40), dtype=np.uint8)


def test_index_png_reads_back_as_indices_with_pillow_and_shows_the_palette(tmp_path, mask) -> None:
    path = save_index_png(tmp_path / "m.png", mask, PALETTE)
    with Image.open(path) as image:
        assert image.mode == "P"
        assert np.array_equal(np.array(image), mask)
        assert image.getpalette()[: 3 * len(PALETTE)] == [v for color in PALETTE for v in color]
    # OpenCV expands any PNG palette: it sees the colours (BGR) that viewers show.
    colors = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    assert np.array_equal(colors, np.array(PALETTE, dtype=np.uint8)[mask][..., ::-1])


def test_index_png_without_palette_reads_back_as_indices_everywhere(tmp_path, mask) -> None:
    path = save_index_png(tmp_path / "m.png", mask)
    assert np.array_equal(cv2.imread(str(path), cv2.IMREAD_UNCHANGED), mask)
    with Image.open(path) as image:
        assert image.mode == "L"
        assert np.array_equal(np.array(image), mask)


def test_index_png_accepts_int64_masks_and_rejects_values_beyond_a_byte(tmp_path, mask) -> None:
    save_index_png(tmp_path / "a.png", mask.astype(np.int64), PALETTE)
    with Image.open(tmp_path / "a.png") as image:
        assert np.array_equal(np.array(image), mask)
    with pytest.raises(InputError, match="0..255"):
        save_index_png(tmp_path / "b.png", np.full((2, 2), 300, dtype=np.int64), PALETTE)
    with pytest.raises(InputError, match="2-D"):
        save_index_png(tmp_path / "c.png", np.zeros((2, 2, 1), dtype=np.uint8), PALETTE)
    assert not (tmp_path / "b.png").exists() and not (tmp_path / "c.png").exists()


def test_atomic_write_keeps_the_old_file_when_the_replace_fails(tmp_path, monkeypatch) -> None:
    target = tmp_path / "out.png"
    target.write_bytes(b"old")

    def broken_replace(src, dst):
        raise OSError(errno.ENOSPC, "No space left on device", str(src))

    monkeypatch.setattr(os, "replace", broken_replace)
    with pytest.raises(OutputError, match="No space left") as caught:
        atomic_write_bytes(target, b"new contents")
    assert (
        str(caught.value)
        == f"cannot write {target}: No space left on device; free some space or write elsewhere"
    )
    assert target.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.png"]  # no temporary left


def test_writes_create_folders_and_leave_no_temporaries(tmp_path, mask) -> None:
    save_index_png(tmp_path / "a" / "b" / "m.png", mask, PALETTE)
    assert [p.name for p in (tmp_path / "a" / "b").iterdir()] == ["m.png"]


def test_colorize_looks_up_the_palette_and_paints_unknown_indices_black() -> None:
    mask = np.array([[0, 1], [4, 7]], dtype=np.uint8)
    rgb = colorize(mask, PALETTE)
    assert rgb.dtype == np.uint8 and rgb.shape == (2, 2, 3)
    assert rgb[0, 0].tolist() == list(PALETTE[0])
    assert rgb[0, 1].tolist() == list(PALETTE[1])
    assert rgb[1, 0].tolist() == list(PALETTE[4])
    assert rgb[1, 1].tolist() == [0, 0, 0]


def _mmseg_show_result(image: np.ndarray, seg: np.ndarray, palette, opacity: float) -> np.ndarray:
    """mmseg 0.x ``BaseSegmentor.show_result``, line for line."""
    color_seg = np.zeros((seg.shape[0], seg.shape[1], 3), dtype=np.uint8)
    for label, color in enumerate(palette):
        color_seg[seg == label, :] = color
    color_seg = color_seg[..., ::-1]
    blended = image * (1 - opacity) + color_seg * opacity
    return blended.astype(np.uint8)


@pytest.mark.parametrize("opacity", [0.5, 0.3, 1.0])
def test_overlay_blends_like_mmseg(mask, opacity) -> None:
    image = np.random.default_rng(1).integers(0, 256, (*mask.shape, 3), dtype=np.uint8)
    ours = overlay(image, mask, PALETTE, opacity)
    assert ours.dtype == np.uint8
    assert np.array_equal(ours, _mmseg_show_result(image, mask, PALETTE, opacity))


def test_overlay_rejects_bad_opacity_and_mismatched_sizes(mask) -> None:
    image = np.zeros((*mask.shape, 3), dtype=np.uint8)
    with pytest.raises(InputError, match="opacity"):
        overlay(image, mask, PALETTE, 0.0)
    with pytest.raises(InputError, match="sizes"):
        overlay(image[:-1], mask, PALETTE)


# Cityscapes labels.py: the labelId of each of the 19 evaluated classes
# (docs/FAITHFULNESS.md#datasets-and-labels).
LABEL_IDS = {
    "road": 7, "sidewalk": 8, "building": 11, "wall": 12, "fence": 13, "pole": 17,
    "traffic light": 19, "traffic sign": 20, "vegetation": 21, "terrain": 22, "sky": 23,
    "person": 24, "rider": 25, "car": 26, "truck": 27, "bus": 28, "train": 31,
    "motorcycle": 32, "bicycle": 33,
}  # fmt: skip


def test_label_ids_follow_the_cityscapes_table() -> None:
    train_ids = np.arange(19, dtype=np.uint8).reshape(1, 19)
    label_ids = to_cityscapes_label_ids(train_ids)
    assert label_ids.dtype == np.uint8
    assert label_ids[0].tolist() == [LABEL_IDS[name] for name in CITYSCAPES.classes]
    assert to_cityscapes_label_ids(np.array([[255, 19]], dtype=np.uint8)).tolist() == [[0, 0]]


def test_save_image_bgr_writes_by_suffix_and_refuses_unknown_ones(tmp_path) -> None:
    image = np.random.default_rng(2).integers(0, 256, (8, 12, 3), dtype=np.uint8)
    save_image_bgr(tmp_path / "x.png", image)
    assert np.array_equal(cv2.imread(str(tmp_path / "x.png")), image)
    save_image_bgr(tmp_path / "x.jpg", image)
    assert cv2.imread(str(tmp_path / "x.jpg")).shape == image.shape
    with pytest.raises(InputError, match="format"):
        save_image_bgr(tmp_path / "x.nope", image)
    assert not (tmp_path / "x.nope").exists()


def test_check_writable_probes_without_leaving_anything(tmp_path) -> None:
    check_writable(tmp_path / "new" / "deeper" / "m.png", "--out")
    check_writable(tmp_path / "folder", "--out", folder=True)
    assert list(tmp_path.iterdir()) == []
    (tmp_path / "file").write_text("x")
    with pytest.raises(OutputError, match="--out .*file is a file; give a folder"):
        check_writable(tmp_path / "file", "--out", folder=True)
    with pytest.raises(OutputError, match="is not a folder"):
        check_writable(tmp_path / "file" / "m.png", "--out")
    with pytest.raises(OutputError, match="is a folder; give a file name"):
        check_writable(tmp_path, "--json-out")
