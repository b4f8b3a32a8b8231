"""FLOPs of a forward or a training step, counted on the meta device (no weights, no memory)."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch.utils.flop_counter import FlopCounterMode

from isaseg_cli.engine.infer.pipeline import forward_logits
from isaseg_cli.engine.train.loss import segmentation_losses
from isaseg_cli.models.build import build_model
from isaseg_cli.zoo.spec import TestSpec, ZooEntry


def count_flops(run: Callable[[], object]) -> int:
    """FLOPs (2 per multiply-add) of convolutions and matrix products in ``run``."""
    with FlopCounterMode(display=False) as counter:
        run()
    return counter.get_total_flops()


def inference_flops(entry: ZooEntry, shape: torch.Size | tuple[int, ...], test: TestSpec) -> int:
    """FLOPs of one inference forward of ``entry``'s network on ``shape`` images (windows one
    at a time, as the reference runs them)."""
    with torch.device("meta"):
        meta_model = build_model(entry.model, with_aux=False).eval()
    meta_images = torch.empty(shape, device="meta")
    return count_flops(lambda: forward_logits(meta_model, meta_images, test, window_batch=1))


def training_flops(entry: ZooEntry, shape: torch.Size | tuple[int, ...]) -> int:
    """FLOPs of one training step of ``entry`` on ``shape`` images: the forward with the
    auxiliary head, the decode + aux loss and the backward (the optimizer step is not
    counted: it has no matrix products)."""
    with torch.device("meta"):
        meta_model = build_model(entry.model).train()
        meta_images = torch.empty(shape)
        meta_labels = torch.zeros((shape[0], *shape[2:]), dtype=torch.int64)
    aux_weight = entry.model.aux_head.loss_weight if entry.model.aux_head else 0.0

    def meta_step() -> None:
        losses = segmentation_losses(meta_model(meta_images), meta_labels, aux_weight=aux_weight)
        losses["total"].backward()

    return count_flops(meta_step)
