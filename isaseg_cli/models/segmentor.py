"""Encoder-decoder: backbone features -> decode head -> logits at the input size."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from isaseg_cli.models.interpolate import bilinear_resize


class Segmentor(nn.Module):
    """The backbone, the ISA decode head and (for training) the auxiliary head.

    ``forward`` returns ``{"out": logits}`` resized bilinearly to the input size with the model's
    ``align_corners``, plus ``"aux"`` in training mode when there is an auxiliary head.
    Attribute names (``backbone``, ``decode_head``, ``auxiliary_head``) are the checkpoint prefixes.
    With ``matmul_resize``, while autograd records, the logits are resized by matrix products
    (models/interpolate.py: float32 logits, a fast backward on CUDA). Off by default: the
    reference resizes with interpolate.
    """

    def __init__(
        self,
        backbone: nn.Module,
        decode_head: nn.Module,
        auxiliary_head: nn.Module | None = None,
        *,
        align_corners: bool = False,
        matmul_resize: bool = False,
    ) -> None:
        super().__init__()
        self.backbone = backbone
        self.decode_head = decode_head
        self.auxiliary_head = auxiliary_head
        self.align_corners = align_corners
        self.matmul_resize = matmul_resize

    def forward(self, images: Tensor) -> dict[str, Tensor]:
        size = images.shape[-2:]
        features = self.backbone(images)
        outputs = {"out": self.resize(self.decode_head(features), size)}
        if self.training and self.auxiliary_head is not None:
            outputs["aux"] = self.resize(self.auxiliary_head(features), size)
        return outputs

    def resize(self, logits: Tensor, size: tuple[int, int] | list[int]) -> Tensor:
        """Bilinear resize with this model's ``align_corners`` (mmseg's ``resize``).

        Channels-last logits (a channels-last model) are made contiguous first: a few classes
        per pixel make the NHWC resize kernels slow on CUDA, and the full-size logits are
        read per class afterwards (argmax, losses). A no-op for the reference layout.
        """
        if self.matmul_resize and torch.is_grad_enabled():
            return bilinear_resize(logits, (size[0], size[1]), self.align_corners)
        return F.interpolate(
            logits.contiguous(), size=tuple(size), mode="bilinear", align_corners=self.align_corners
        )
