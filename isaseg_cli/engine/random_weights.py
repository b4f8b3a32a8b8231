"""Random weights that behave like trained ones: for benchmarks, and for checkpoints of zoo
architectures to try eval, predict and train offline."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import torch
from torch import Tensor, nn

from isaseg_cli.data.synthetic import custom_classes
from isaseg_cli.errors import InputError
from isaseg_cli.models.backbone import BasicBlock, Bottleneck
from isaseg_cli.models.build import build_model
from isaseg_cli.models.segmentor import Segmentor
from isaseg_cli.zoo.spec import ModelSpec, ZooEntry


@torch.no_grad()
def calibrate_batchnorm(model: nn.Module, images: Tensor) -> None:
    """Sets every BN's running statistics to those of ``images`` (one forward in training
    mode, cumulative averages), so a random-weight model has unit-scale activations and
    meaningful logits instead of vanishing or exploding ones. Leaves the model in eval mode."""
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    momenta = [norm.momentum for norm in norms]
    for norm in norms:
        norm.reset_running_stats()
        norm.momentum = None
    model.train()
    model(images)
    for norm, momentum in zip(norms, momenta, strict=True):
        norm.momentum = momentum
    model.eval()


def random_model(
    spec: ModelSpec, device: torch.device, *, residual_gain: float = 0.1, with_aux: bool = False
) -> Segmentor:
    """A seeded random-weight model that behaves like a trained one, in eval mode on ``device``.

    BN statistics are calibrated on random images; the last BN of each residual branch gets
    weight ``residual_gain`` (mmseg's own random init, ``zero_init_residual``, sets it to 0);
    and the classifier bias centres every class's mean logit, so no class wins everywhere.
    Without the small gain, random BN networks are chaotic: bf16 rounding alone flips a large
    share of the pixels of an R-50 (docs/PERFORMANCE.md), which says nothing about the
    implementation. Speed does not depend on any of this.
    """
    torch.manual_seed(0)
    model = build_model(spec, with_aux=with_aux).to(device)
    with torch.no_grad():
        for block in model.backbone.modules():
            if isinstance(block, Bottleneck):
                block.bn3.weight.fill_(residual_gain)
            elif isinstance(block, BasicBlock):
                block.bn2.weight.fill_(residual_gain)
    calibration = torch.randn(2, 3, 128, 128, generator=torch.Generator().manual_seed(1))
    calibration = calibration.to(device)
    calibrate_batchnorm(model, calibration)
    with torch.no_grad():
        logits = model.decode_head(model.backbone(calibration))
        model.decode_head.conv_seg.bias -= logits.mean(dim=(0, 2, 3))
    return model


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

    The weights are ``random_model``'s (calibrated BN, small residual gain, centred
    classifier), so masks are not one class everywhere. The file has mmsegmentation's layout and
    ``entry`` in its meta: ``--checkpoint FILE`` alone rebuilds the model. Nothing is downloaded.
    """
    from isaseg_cli.engine.checkpoint import build_meta, model_state_dict, save_checkpoint
    from isaseg_cli.engine.loading import entry_classes

    model = random_model(entry.model, torch.device("cpu"), with_aux=True)  # zoo files hold it
    classes, palette = entry_classes(entry, {})
    meta = build_meta(entry, classes, palette, random_weights=True)
    return save_checkpoint(path, {"meta": meta, "state_dict": model_state_dict(model)})
