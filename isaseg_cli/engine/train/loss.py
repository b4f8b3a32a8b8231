"""mmsegmentation's ISANet training loss: cross-entropy on the decode and auxiliary logits."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def cross_entropy(logits: Tensor, labels: Tensor, ignore_index: int = 255) -> Tensor:
    """Per-pixel cross-entropy summed over non-ignored pixels and divided by ALL pixels.

    This is mmseg's default (``avg_non_ignore=False``, docs/FAITHFULNESS.md#loss), not the mean
    over valid pixels: crops with much ignored area weigh less.
    """
    return F.cross_entropy(
        logits.float(), labels, ignore_index=ignore_index, reduction="none"
    ).mean()


def pixel_accuracy(logits: Tensor, labels: Tensor, ignore_index: int = 255) -> Tensor:
    """Top-1 accuracy in percent over non-ignored pixels (logged as ``acc_seg``)."""
    valid = labels != ignore_index
    correct = (logits.argmax(dim=1) == labels) & valid
    # A Python-float factor, as mmseg computes it, so logged values agree to the last digit.
    return correct.sum().float() * (100.0 / max(int(valid.sum()), 1))


def segmentation_losses(
    outputs: dict[str, Tensor], labels: Tensor, *, aux_weight: float = 0.4, ignore_index: int = 255
) -> dict[str, Tensor]:
    """``decode`` and weighted ``aux`` losses and their ``total``, for logits already at label size.

    Args:
        outputs: the segmentor's training outputs ``{"out": (N,K,H,W), "aux": (N,K,H,W)}``.
        labels: (N, H, W) int64 class indices, ``ignore_index`` where unlabelled.
    """
    losses = {"decode": cross_entropy(outputs["out"], labels, ignore_index)}
    if "aux" in outputs:
        losses["aux"] = aux_weight * cross_entropy(outputs["aux"], labels, ignore_index)
    losses["total"] = torch.stack(list(losses.values())).sum()
    return losses
