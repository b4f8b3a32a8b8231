"""Random-weight checkpoints of zoo architectures, for trying eval, predict and train offline."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from isaseg_cli.data.synthetic import custom_classes
from isaseg_cli.errors import InputError
from isaseg_cli.zoo.spec import ZooEntry


def entry_for_synthetic(
    entry: ZooEntry, kind: str, size: tuple[int, int], num_classes: int | None = None
) -> ZooEntry:
    """``entry``'s architecture and recipe, fitted to a synthetic dataset of ``kind``.

    The test scale becomes the images' ``size`` (h, w), so eval and predict run at that size
    rather than upscaling to the published scale (1024x2048 for Cityscapes: minutes on a CPU).
    A zoo dataset keeps the rest of the entry (the synthetic data has its layout and classes);
    ``custom`` gets the custom layout and ``num_classes`` classes ``class0...``.

    Raises:
        InputError: ``kind`` is a zoo dataset other than the entry's.
    """
    test = dataclasses.replace(entry.test, scale=(size[1], size[0]))  # test.scale is (w, h)
    entry = dataclasses.replace(entry, test=test)
    if kind == entry.data.dataset:
        return entry
    if kind != "custom":
        raise InputError(
            f"{entry.name} is a {entry.data.dataset} model: for {kind} data name one of its "
            f"entries (`isaseg zoo --dataset {kind}`), or use --dataset custom"
        )
    classes = custom_classes(num_classes) if num_classes else custom_classes()
    data = dataclasses.replace(
        entry.data,
        dataset="custom",
        img_suffix=".png",
        seg_map_suffix=".png",
        classes=classes,
        reduce_zero_label=False,
    )
    model = dataclasses.replace(entry.model, num_classes=len(classes))
    return dataclasses.replace(entry, model=model, data=data, weights=None, published=None)


def save_random_checkpoint(entry: ZooEntry, path: Path) -> Path:
    """Writes ``entry``'s model with seeded random weights as an isaseg checkpoint at ``path``.

    The weights are ``benchmark.random_model``'s (calibrated BN, small residual gain, centred
    classifier), so masks are not one class everywhere. The file has mmsegmentation's layout and
    ``entry`` in its meta: ``--checkpoint FILE`` alone rebuilds the model. Nothing is downloaded.
    """
    import torch

    from isaseg_cli.bench.benchmark import random_model
    from isaseg_cli.engine.checkpoint import build_meta, model_state_dict, save_checkpoint
    from isaseg_cli.engine.loading import entry_classes

    model = random_model(entry.model, torch.device("cpu"), with_aux=True)  # zoo files hold it
    classes, palette = entry_classes(entry, {})
    meta = build_meta(entry, classes, palette, random_weights=True)
    return save_checkpoint(path, {"meta": meta, "state_dict": model_state_dict(model)})
