"""Whether an eval result can stand next to the mIoU mmsegmentation published, and if not, why."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

from isaseg_cli.errors import IsasegError
from isaseg_cli.zoo.spec import ZooEntry


@dataclass(frozen=True, slots=True)
class Comparison:
    """The published mIoU to compare with, or ``None`` and the one-line reason there is none."""

    published: float | None
    reason: str | None = None


def compare_with_published(
    entry: ZooEntry,
    checkpoint: Path,
    *,
    ms_flip: bool,
    ratios: tuple[float, ...] | None,
    split: str,
    images: int,
    split_images: int,
    interrupted: bool = False,
) -> Comparison:
    """The published figure only when the run reproduces its protocol.

    That is: a zoo entry's own weights (the file's SHA-256 starts with the prefix in the entry's
    file name), the whole ``val`` split, and the entry's model, data and test settings unchanged
    (no --mode, --crop-size, --stride, --scales or --set).

    Args:
        entry: the entry the run used, overrides applied.
        checkpoint: the weights file that was evaluated.
        images: images evaluated; ``split_images``: images in the split.
    """
    from isaseg_cli.engine.infer.protocol import resolve_test_spec
    from isaseg_cli.zoo.catalog import resolve_entry

    figures = entry.published
    try:
        zoo = resolve_entry(entry.name)
    except IsasegError:
        return Comparison(None, f"no published mIoU: {entry.name} is not a zoo entry")
    if figures is None or zoo.published is None or zoo.weights is None:
        return Comparison(None, f"no published mIoU: {entry.name} has none, or not for this data")
    if interrupted:
        return Comparison(None, "published mIoU not compared: the run was interrupted")
    if split != "val":
        return Comparison(None, f"published mIoU not compared: it is for val, not {split!r}")
    if images < split_images:
        return Comparison(
            None, f"published mIoU not compared: {images} of {split_images} val images (--limit)"
        )
    same_ratios = not ms_flip or ratios is None or tuple(ratios) == zoo.test.ms_ratios
    same = (entry.model, entry.data) == (zoo.model, zoo.data)
    if not (same and same_ratios and entry.test == resolve_test_spec(zoo)):
        return Comparison(
            None,
            "published mIoU not compared: the test settings differ from the entry's "
            "(--mode, --crop-size, --stride, --scales or --set)",
        )
    prefix = zoo.weights.sha256.lower()
    if not _sha256(checkpoint).startswith(prefix):
        return Comparison(
            None,
            f"published mIoU not compared: {checkpoint.name} is not {zoo.name}'s published "
            f"weights (its SHA-256 does not start with {prefix})",
        )
    return Comparison(zoo.published.miou_ms_flip if ms_flip else zoo.published.miou)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
