"""Small synthetic datasets in the exact folder layouts of the real releases, for tests and demos.

Each label map is a background class with a few rectangles and ellipses of other classes; the image
paints every pixel with its class's palette colour plus noise, so images and labels agree.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np

from isaseg_cli.data.base import IGNORE_INDEX
from isaseg_cli.data.mask_io import save_image_bgr, save_index_png
from isaseg_cli.zoo.classes import CITYSCAPES_TRAIN_ID_TO_ID, DATASETS

KINDS = ("cityscapes", "ade20k", "voc12aug", "custom")
CUSTOM_NUM_CLASSES = 4
IGNORE_COLOUR = (128, 128, 128)

Palette = tuple[tuple[int, int, int], ...]


def custom_classes(num_classes: int = CUSTOM_NUM_CLASSES) -> tuple[str, ...]:
    """The class names of a synthetic custom dataset: ``class0``, ``class1``, ..."""
    return tuple(f"class{i}" for i in range(num_classes))


def write_synthetic_dataset(
    kind: str,
    root: Path,
    *,
    num_images: int = 4,
    size: tuple[int, int] = (64, 96),
    num_classes: int | None = None,
    seed: int = 0,
) -> Path:
    """Writes a dataset of ``kind`` directly under ``root`` and returns ``root``.

    Layouts (``num_images`` per split; ``size`` is (h, w)):
    * cityscapes: ``leftImg8bit/{train,val}/<city>/*_leftImg8bit.png`` with ``gtFine`` holding both
      ``*_gtFine_labelIds.png`` and ``*_gtFine_labelTrainIds.png``;
    * ade20k: ``images/{training,validation}/*.jpg``, ``annotations/.../*.png`` (0 = unlabelled,
      class c stored as c + 1);
    * voc12aug: ``JPEGImages``, palette-PNG ``SegmentationClass`` (train, val; 255 borders),
      grayscale ``SegmentationClassAug`` (train, aug) and ``ImageSets/Segmentation`` train/val/aug/
      trainaug.txt;
    * custom: lossless ``images/{train,val}/*.png`` (so read it with ``img_suffix=".png"``) with
      ``labels/{train,val}/*.png``, classes ``custom_classes(num_classes)`` (default 4).

    Args:
        num_classes: draw classes from the first ``num_classes`` only (default: all of the dataset).

    Raises:
        ValueError: an unknown kind or a class count the dataset does not have.
    """
    if kind not in KINDS:
        raise ValueError(f"unknown synthetic dataset kind {kind!r}; known: {', '.join(KINDS)}")
    limit = DATASETS[kind].num_classes if kind in DATASETS else 255
    count = num_classes or (CUSTOM_NUM_CLASSES if kind == "custom" else limit)
    if not 2 <= count <= limit:
        raise ValueError(f"{kind} synthetic data needs 2..{limit} classes, not {count}")
    palette = DATASETS[kind].palette if kind in DATASETS else tuple(_voc_colormap()[1 : count + 1])
    rng = np.random.default_rng(seed)
    writers: dict[str, Callable[..., None]] = {
        "cityscapes": _write_cityscapes,
        "ade20k": _write_ade20k,
        "voc12aug": _write_voc,
        "custom": _write_custom,
    }
    writers[kind](root, rng, num_images, size, count, palette)
    return root


def draw_label(rng: np.random.Generator, size: tuple[int, int], num_classes: int) -> np.ndarray:
    """A uint8 (h, w) map: a background class, 2-3 shapes of other classes and an ignored patch."""
    height, width = size
    classes = rng.choice(num_classes, size=min(num_classes, 4), replace=False)
    label = np.full(size, classes[0], dtype=np.uint8)
    for class_id in classes[1:]:
        x1, y1 = int(rng.integers(0, width // 2)), int(rng.integers(0, height // 2))
        w, h = (
            int(rng.integers(width // 4, width // 2)),
            int(rng.integers(height // 4, height // 2)),
        )
        if rng.integers(2):
            cv2.rectangle(label, (x1, y1), (x1 + w, y1 + h), int(class_id), thickness=-1)
        else:
            center = (x1 + w // 2, y1 + h // 2)
            cv2.ellipse(label, center, (w // 2, h // 2), 0, 0, 360, int(class_id), thickness=-1)
    corner = int(rng.integers(0, width - width // 8))
    label[height - height // 8 :, corner : corner + width // 8] = IGNORE_INDEX
    return label


def paint_image(label: np.ndarray, palette: Palette, rng: np.random.Generator) -> np.ndarray:
    """A BGR uint8 image: each pixel is its class's RGB palette colour (gray if ignored) + noise."""
    colours = np.array(list(palette) + [IGNORE_COLOUR] * (256 - len(palette)), dtype=np.float32)
    rgb = colours[label] + rng.normal(0.0, 6.0, size=(*label.shape, 3))
    return np.clip(rgb, 0, 255).astype(np.uint8)[:, :, ::-1].copy()


def _write_cityscapes(
    root: Path,
    rng: np.random.Generator,
    num_images: int,
    size: tuple[int, int],
    num_classes: int,
    palette: Palette,
) -> None:
    cities = {"train": ("aachen", "bochum"), "val": ("frankfurt", "lindau")}
    id_of_train_id = np.full(256, 0, dtype=np.uint8)  # ignored -> 0 'unlabeled'
    id_of_train_id[: len(CITYSCAPES_TRAIN_ID_TO_ID)] = CITYSCAPES_TRAIN_ID_TO_ID
    for split, names in cities.items():
        for i in range(num_images):
            city = names[i % len(names)]
            stem = f"{city}_{i:06d}_{19 + i:06d}"
            train_ids = draw_label(rng, size, num_classes)
            image = paint_image(train_ids, palette, rng)
            save_image_bgr(root / "leftImg8bit" / split / city / f"{stem}_leftImg8bit.png", image)
            gt_dir = root / "gtFine" / split / city
            save_index_png(gt_dir / f"{stem}_gtFine_labelIds.png", id_of_train_id[train_ids])
            save_index_png(gt_dir / f"{stem}_gtFine_labelTrainIds.png", train_ids)


def _write_ade20k(
    root: Path,
    rng: np.random.Generator,
    num_images: int,
    size: tuple[int, int],
    num_classes: int,
    palette: Palette,
) -> None:
    for folder, prefix in (("training", "ADE_train"), ("validation", "ADE_val")):
        for i in range(num_images):
            stem = f"{prefix}_{i + 1:08d}"
            reduced = draw_label(rng, size, num_classes)
            image = paint_image(reduced, palette, rng)
            save_image_bgr(root / "images" / folder / f"{stem}.jpg", image)
            # Stored ids: 0 = unlabelled (ignored after reduce_zero_label), class c as c + 1.
            stored = np.where(reduced == IGNORE_INDEX, 0, reduced + 1).astype(np.uint8)
            save_index_png(root / "annotations" / folder / f"{stem}.png", stored)


def _write_voc(
    root: Path,
    rng: np.random.Generator,
    num_images: int,
    size: tuple[int, int],
    num_classes: int,
    palette: Palette,
) -> None:
    colormap = _voc_colormap()
    names = {
        "train": [f"2007_{i:06d}" for i in range(num_images)],
        "val": [f"2008_{i:06d}" for i in range(num_images)],
        "aug": [f"2009_{i:06d}" for i in range(num_images)],
    }
    for split, stems in names.items():
        for stem in stems:
            label = draw_label(rng, size, num_classes)
            save_image_bgr(root / "JPEGImages" / f"{stem}.jpg", paint_image(label, palette, rng))
            if split != "val":  # SBD covers train and aug names; its labels have no void border
                save_index_png(root / "SegmentationClassAug" / f"{stem}.png", label)
            if split != "aug":  # official labels: palette PNG with 255 borders around objects
                edges = cv2.morphologyEx(label, cv2.MORPH_GRADIENT, np.ones((3, 3), np.uint8)) > 0
                bordered = np.where(edges, IGNORE_INDEX, label).astype(np.uint8)
                save_index_png(root / "SegmentationClass" / f"{stem}.png", bordered, colormap)
    split_dir = root / "ImageSets" / "Segmentation"
    split_dir.mkdir(parents=True, exist_ok=True)
    names["trainaug"] = names["train"] + names["aug"]
    for split, stems in names.items():
        (split_dir / f"{split}.txt").write_text("".join(f"{s}\n" for s in stems))


def _write_custom(
    root: Path,
    rng: np.random.Generator,
    num_images: int,
    size: tuple[int, int],
    num_classes: int,
    palette: Palette,
) -> None:
    for split in ("train", "val"):
        for i in range(num_images):
            label = draw_label(rng, size, num_classes)
            image = paint_image(label, palette, rng)
            save_image_bgr(root / "images" / split / f"img_{i:03d}.png", image)
            save_index_png(root / "labels" / split / f"img_{i:03d}.png", label)


def _voc_colormap() -> list[tuple[int, int, int]]:
    """The 256-entry PASCAL VOC colour map (bit-interleaved; index 255 = (224, 224, 192))."""
    colours = []
    for index in range(256):
        r = g = b = 0
        value = index
        for shift in range(7, -1, -1):
            r |= (value & 1) << shift
            g |= ((value >> 1) & 1) << shift
            b |= ((value >> 2) & 1) << shift
            value >>= 3
        colours.append((r, g, b))
    return colours
