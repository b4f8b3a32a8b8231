"""`isaseg make-synthetic`: a small dataset and random weights, to try isaseg offline."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

import typer

from isaseg_cli.cli import _render
from isaseg_cli.cli._options import ModelOpt, default_model, parse_size
from isaseg_cli.errors import InputError

# The model a synthetic zoo dataset gets when none is named: the default for Cityscapes, else
# the R-50 alias of that dataset.
_DATASET_MODEL = {"ade20k": "isanet_r50_ade20k", "voc12aug": "isanet_r50_voc12aug"}


def make_synthetic_cli(
    root: Annotated[
        Path,
        typer.Argument(
            metavar="DIR", help="New (or empty) folder for the dataset.", show_default=False
        ),
    ],
    dataset: Annotated[
        Literal["cityscapes", "ade20k", "voc12aug", "custom"],
        typer.Option(help="Folder layout and classes of a real release, or your own (custom)."),
    ] = "cityscapes",
    images: Annotated[
        int, typer.Option(min=1, max=1000, metavar="N", help="Images per split (train, val).")
    ] = 4,
    size: Annotated[str, typer.Option(metavar="HxW", help="Image size in pixels.")] = "128x256",
    num_classes: Annotated[
        int | None,
        typer.Option(min=2, metavar="N", help="Classes drawn (custom: its class count, 4)."),
    ] = None,
    seed: Annotated[int, typer.Option(metavar="N", help="Seed of the drawings.")] = 0,
    checkpoint: Annotated[
        Path | None,
        typer.Option(
            metavar="FILE",
            help="Also write a random-weight checkpoint of --model for this data (no download).",
        ),
    ] = None,
    model: ModelOpt = None,
) -> None:
    """Write a small synthetic dataset in a real release's layout, to try eval and train offline.

    Labels are a background class with rectangles and ellipses of other classes; images paint
    each class in its palette colour plus noise. With --checkpoint, also a model with random
    weights whose test scale is the images' size, so `isaseg eval --checkpoint FILE --data-root
    DIR` runs in seconds with no network.
    """
    shape = parse_size(size, "--size")
    assert shape is not None
    if root.exists() and (not root.is_dir() or any(root.iterdir())):
        raise InputError(f"{root} exists and is not an empty folder: name a new one")
    if checkpoint is not None and checkpoint.exists():
        raise InputError(f"{checkpoint} exists: name a new file (or delete it first)")
    if model is not None and checkpoint is None:
        raise InputError("--model names the checkpoint's architecture: add --checkpoint FILE")
    from isaseg_cli.data.synthetic import write_synthetic_dataset
    from isaseg_cli.zoo.catalog import resolve_entry

    entry = None
    if checkpoint is not None:
        from isaseg_cli.engine.random_weights import entry_for_synthetic

        name = model or _DATASET_MODEL.get(dataset) or default_model()
        entry = entry_for_synthetic(resolve_entry(name), dataset, shape, num_classes)
    try:
        write_synthetic_dataset(
            dataset, root, num_images=images, size=shape, num_classes=num_classes, seed=seed
        )
    except ValueError as exc:  # a class count the dataset does not have
        raise InputError(str(exc)) from None
    _render.info(
        f"Wrote {2 * images} images with labels ({dataset} layout, {images} per split, "
        f"{shape[0]}x{shape[1]}) under {root}"
    )
    if entry is None or checkpoint is None:
        return
    from isaseg_cli.engine.random_weights import save_random_checkpoint

    save_random_checkpoint(entry, checkpoint)
    megabytes = checkpoint.stat().st_size / 1e6
    _render.info(
        f"Wrote {checkpoint} ({megabytes:.0f} MB): {entry.name} with random weights, "
        f"tested at the images' {shape[0]}x{shape[1]}"
    )
    _render.info(f"Try: isaseg eval --checkpoint {checkpoint} --data-root {root}")
