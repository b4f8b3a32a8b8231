"""Inference-only rewrites of a model: BatchNorm folded into the preceding convolution, and
the channels-last memory format.

A folded model computes the same function up to float rounding (the fold is computed in float64
and rounded once), but its state-dict keys differ (each folded ``bn`` disappears and its conv
gains a ``bias``): it is built for running, never for saving. Keep the original for checkpoints.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

# Attribute pairs whose conv feeds straight into the BN in our modules (ConvModule, BasicBlock,
# Bottleneck); inside an nn.Sequential, neighbours are the pairs (the stem, ``downsample``).
_NAMED_PAIRS = (("conv", "bn"), ("conv1", "bn1"), ("conv2", "bn2"), ("conv3", "bn3"))


def fuse_batchnorm(model: nn.Module) -> int:
    """Folds every eval-mode BatchNorm that directly follows a Conv2d into that conv, in place.

    ``y = gamma * (conv(x) - mean) / sqrt(var + eps) + beta`` becomes one conv with scaled
    weights and a bias; the BN is replaced by ``nn.Identity``.

    Args:
        model: a model in eval mode (folding uses the running statistics).

    Returns:
        The number of BatchNorm layers folded.

    Raises:
        ValueError: the model is in training mode.
    """
    if model.training:
        raise ValueError("fuse_batchnorm needs a model in eval mode (it uses running statistics)")
    folded = 0
    for module in list(model.modules()):
        if isinstance(module, nn.Sequential):
            names = list(module._modules)
            pairs = list(zip(names[:-1], names[1:], strict=True))
        else:
            pairs = [pair for pair in _NAMED_PAIRS if all(hasattr(module, name) for name in pair)]
        for conv_name, bn_name in pairs:
            conv, bn = getattr(module, conv_name), getattr(module, bn_name)
            if isinstance(conv, nn.Conv2d) and _is_foldable(bn):
                _fold(conv, bn)
                setattr(module, bn_name, nn.Identity())
                folded += 1
    return folded


@torch.no_grad()
def _fold(conv: nn.Conv2d, bn: _BatchNorm) -> None:
    """Rewrites ``conv`` in place as conv followed by ``bn`` (in float64, rounded once)."""
    mean, var = bn.running_mean.double(), bn.running_var.double()  # type: ignore[union-attr]
    gamma = bn.weight.double() if bn.weight is not None else torch.ones_like(mean)
    beta = bn.bias.double() if bn.bias is not None else torch.zeros_like(mean)
    bias = conv.bias.double() if conv.bias is not None else torch.zeros_like(mean)
    scale = gamma / torch.sqrt(var + bn.eps)  # per output channel
    weight = conv.weight.double() * scale.view(-1, 1, 1, 1)
    conv.weight = nn.Parameter(weight.to(conv.weight.dtype), conv.weight.requires_grad)
    conv.bias = nn.Parameter(((bias - mean) * scale + beta).to(conv.weight.dtype))


def _is_foldable(module: nn.Module) -> bool:
    return (
        isinstance(module, _BatchNorm)
        and module.track_running_stats
        and module.running_mean is not None
        and module.running_var is not None
    )


def to_channels_last(model: nn.Module) -> nn.Module:
    """Stores every 4-d parameter in NHWC order (in place), so cuDNN/oneDNN can pick their
    channels-last convolution kernels; feed the model channels-last inputs too."""
    return model.to(memory_format=torch.channels_last)
