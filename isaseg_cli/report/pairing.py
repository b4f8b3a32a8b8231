"""Image/label pairing of a split that lists every unpaired file (the readers stop at the first).

The folder rules are the readers' own (``isaseg_cli.data``: the same folders, suffixes and the
``scan_pairs``/``stem_pairs`` helpers); a missing root or split folder is left to the reader, so
its message, with the expected layout, is the one shown.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from isaseg_cli.data import ade20k, cityscapes, custom, voc
from isaseg_cli.data.base import Sample, read_split_file, scan_pairs, stem_pairs
from isaseg_cli.data.datasets import list_samples
from isaseg_cli.errors import DatasetNotFoundError
from isaseg_cli.zoo.spec import DataSpec


@dataclass(frozen=True, slots=True)
class Finding:
    """One problem with one file: ``kind`` is a short tag, ``message`` names the file."""

    kind: str
    path: Path
    message: str

    def to_dict(self) -> dict[str, str]:
        return {"kind": self.kind, "file": str(self.path), "message": self.message}


@dataclass(frozen=True, slots=True)
class Pairing:
    """The complete (image, label) pairs of a split, and the files that have no partner."""

    samples: tuple[Sample, ...]
    findings: tuple[Finding, ...]


def pair_split(spec: DataSpec, root: Path, split: str) -> Pairing:
    """Pairs the images and labels of ``split`` as the dataset's reader does.

    Findings: an image without its label, a label without its image (folder layouts), and for
    VOC a split-file name whose image or label is missing.

    Raises:
        DatasetNotFoundError: the root, a split folder or split file is missing, or the split
            holds no image (the reader's message, with the expected layout).
        SpecError: an unknown dataset.
    """
    if spec.dataset == "voc12aug":
        pairing = _pair_voc(spec, root, split)
    else:
        folders = _folders(spec, root, split)
        pairing = _pair_folders(spec, *folders) if folders else None
    if pairing is None or not (pairing.samples or pairing.findings):
        list_samples(spec, root, split)  # raises the reader's message for what is missing
        raise DatasetNotFoundError(f"no images found for the {split} split under {root}")
    return pairing


def _folders(spec: DataSpec, root: Path, split: str) -> tuple[Path, Path, tuple[str, ...]] | None:
    """(image folder, label folder, image suffixes), or None when a folder is missing."""
    if spec.dataset == "cityscapes":
        image_dir, label_dir = root / "leftImg8bit" / split, root / "gtFine" / split
        suffixes: tuple[str, ...] = (spec.img_suffix or cityscapes.IMG_SUFFIX,)
    elif spec.dataset == "ade20k":
        folder = ade20k.SPLIT_FOLDERS.get(split, split)
        image_dir, label_dir = root / "images" / folder, root / "annotations" / folder
        suffixes = (spec.img_suffix or ade20k.IMG_SUFFIX,)
    elif spec.dataset == "custom":
        layouts = [(root / i / split, root / lb / split) for i, lb in custom.LAYOUTS]
        image_dir, label_dir = next((p for p in layouts if p[0].is_dir()), layouts[0])
        suffixes = (spec.img_suffix,) if spec.img_suffix else custom.IMAGE_SUFFIXES
    else:
        return None
    return (image_dir, label_dir, suffixes) if image_dir.is_dir() and label_dir.is_dir() else None


def _seg_map_suffix(spec: DataSpec) -> str:
    defaults = {"cityscapes": cityscapes.SEG_MAP_SUFFIX, "ade20k": ade20k.SEG_MAP_SUFFIX}
    return spec.seg_map_suffix or defaults.get(spec.dataset, custom.SEG_MAP_SUFFIX)


def _pair_folders(
    spec: DataSpec, image_dir: Path, label_dir: Path, suffixes: tuple[str, ...]
) -> Pairing:
    seg_suffix = _seg_map_suffix(spec)
    pairs = [p for suffix in suffixes for p in scan_pairs(image_dir, label_dir, suffix, seg_suffix)]
    pairs.sort(key=lambda sample: sample.image_path.relative_to(image_dir).as_posix())
    labels = {path for path in label_dir.rglob(f"*{seg_suffix}") if path.is_file()}
    findings = [_missing_label(s, seg_suffix) for s in pairs if s.label_path not in labels]
    for orphan in sorted(labels - {sample.label_path for sample in pairs}):
        stem = orphan.relative_to(label_dir).as_posix()[: -len(seg_suffix)]
        wanted = f"{image_dir / stem}{suffixes[0] if len(suffixes) == 1 else '.*'}"
        findings.append(Finding("orphan label", orphan, f"label {orphan} has no image {wanted}"))
    complete = tuple(sample for sample in pairs if sample.label_path in labels)
    return Pairing(complete, tuple(findings))


def _missing_label(sample: Sample, seg_suffix: str) -> Finding:
    message = f"image {sample.image_path} has no label {sample.label_path}"
    label_ids = sample.label_path.with_name(
        sample.label_path.name.removesuffix(seg_suffix) + cityscapes.LABEL_IDS_SUFFIX
    )
    if seg_suffix == cityscapes.SEG_MAP_SUFFIX and label_ids.is_file():
        message += (
            f" ({label_ids.name} is there: convert the *{cityscapes.LABEL_IDS_SUFFIX} files to "
            "train ids first with isaseg convert-cityscapes)"
        )
    return Finding("missing label", sample.image_path, message)


def _pair_voc(spec: DataSpec, root: Path, split: str) -> Pairing | None:
    """``voc.list_voc``'s split-file pairing; None when a folder or split file is missing."""
    image_dir, split_dir = root / "JPEGImages", root / "ImageSets" / "Segmentation"
    parts = [("train" if split in voc.TRAIN_SPLITS else split, "SegmentationClass")]
    if split in voc.TRAIN_SPLITS:
        parts.append(("aug", "SegmentationClassAug"))
    samples: list[Sample] = []
    findings: list[Finding] = []
    for split_name, label_folder in parts:
        split_file, label_dir = split_dir / f"{split_name}.txt", root / label_folder
        if not (image_dir.is_dir() and split_file.is_file() and label_dir.is_dir()):
            return None
        names = read_split_file(split_file)
        suffixes = (spec.img_suffix or voc.IMG_SUFFIX, spec.seg_map_suffix or voc.SEG_MAP_SUFFIX)
        for sample in stem_pairs(names, image_dir, label_dir, *suffixes):
            missing = [p for p in sample if not p.is_file()]
            for path in missing:
                kind = "image" if path == sample.image_path else "label"
                message = f"split file {split_file} lists {path.stem}, but {kind} {path} is missing"
                findings.append(Finding(f"missing {kind}", path, message))
            if not missing:
                samples.append(sample)
    return Pairing(tuple(samples), tuple(findings))
