"""One entry point to the dataset layouts: default roots, class lists and checked sample lists."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from isaseg_cli.data import ade20k, cityscapes, custom, voc
from isaseg_cli.data.base import Sample, load_label
from isaseg_cli.errors import DatasetNotFoundError, SpecError
from isaseg_cli.zoo.classes import DATASETS
from isaseg_cli.zoo.spec import DataSpec

__all__ = ["Sample", "dataset_classes", "default_data_root", "list_samples", "load_label"]

CUSTOM = "custom"
DATA_ENV = "ISASEG_DATA"

Lister = Callable[[Path, str, str, str], list[Sample]]

# dataset -> (folder under the data base, lister, default img_suffix, default seg_map_suffix,
# the layout shown when the root is missing).
_LAYOUTS: dict[str, tuple[str, Lister, str, str, str]] = {
    "cityscapes": (
        "cityscapes",
        cityscapes.list_cityscapes,
        cityscapes.IMG_SUFFIX,
        cityscapes.SEG_MAP_SUFFIX,
        "leftImg8bit/{split}/<city>/ and gtFine/{split}/<city>/",
    ),
    "ade20k": (
        "ade/ADEChallengeData2016",
        ade20k.list_ade20k,
        ade20k.IMG_SUFFIX,
        ade20k.SEG_MAP_SUFFIX,
        "images/{folder}/ and annotations/{folder}/",
    ),
    "voc12aug": (
        "VOCdevkit/VOC2012",
        voc.list_voc,
        voc.IMG_SUFFIX,
        voc.SEG_MAP_SUFFIX,
        "JPEGImages/, SegmentationClass/ and ImageSets/Segmentation/{split}.txt",
    ),
    CUSTOM: (
        "",
        custom.list_custom,
        custom.IMG_SUFFIX,
        custom.SEG_MAP_SUFFIX,
        "images/{split}/ and labels/{split}/",
    ),
}


def default_data_root(dataset: str) -> Path:
    """Where a dataset lives unless ``--data-root`` says otherwise (mmseg's config defaults).

    ``$ISASEG_DATA`` names a base folder holding ``cityscapes/``, ``ade/ADEChallengeData2016/`` and
    ``VOCdevkit/VOC2012/``; without it the base is ``data/`` in the current directory.

    Raises:
        DatasetNotFoundError: for the custom dataset, which has no default location.
        SpecError: for an unknown dataset name.
    """
    folder = _layout(dataset)[0]
    if not folder:
        raise DatasetNotFoundError("a custom dataset has no default location; pass its data root")
    return Path(os.environ.get(DATA_ENV) or "data") / folder


def dataset_classes(spec: DataSpec) -> tuple[str, ...]:
    """The class names: ``spec.classes`` when given, else the zoo dataset's.

    Raises:
        SpecError: a custom dataset without ``classes``, or an unknown dataset.
    """
    _layout(spec.dataset)
    if spec.classes:
        return spec.classes
    if spec.dataset == CUSTOM:
        raise SpecError("a custom dataset needs its class names (data.classes)")
    return DATASETS[spec.dataset].classes


def list_samples(spec: DataSpec, root: Path, split: str) -> list[Sample]:
    """The (image, label) pairs of ``split``, checked before any work starts.

    Args:
        spec: names the layout (``spec.dataset``: cityscapes, ade20k, voc12aug or custom) and
            the file suffixes (empty means the layout's usual ones).
        root: the dataset root, e.g. ``data/cityscapes``.
        split: ``train`` or ``val`` (ADE20K maps them to ``training``/``validation``; VOC's
            ``train``/``trainaug`` is train.txt + aug.txt,
            docs/FAITHFULNESS.md#datasets-and-labels).

    Returns:
        Samples sorted by relative path (folder layouts) or in split-file order (VOC).

    Raises:
        DatasetNotFoundError: the root or a split folder/file is missing (the message shows the
            expected layout), the split is empty, or an image or label is missing (the message names
            the first missing file and how many are missing).
        SpecError: an unknown dataset name.
    """
    _, lister, img_suffix, seg_map_suffix, layout = _layout(spec.dataset)
    if not root.is_dir():
        shown = layout.format(split=split, folder=ade20k.SPLIT_FOLDERS.get(split, split))
        raise DatasetNotFoundError(
            f"data root {root} not found; expected the {spec.dataset} layout: {root}/{shown}"
        )
    return lister(root, split, spec.img_suffix or img_suffix, spec.seg_map_suffix or seg_map_suffix)


def _layout(dataset: str) -> tuple[str, Lister, str, str, str]:
    try:
        return _LAYOUTS[dataset]
    except KeyError:
        known = ", ".join(_LAYOUTS)
        raise SpecError(f"unknown dataset {dataset!r}; known: {known}") from None
