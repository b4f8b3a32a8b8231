"""Inference-only rewrites of a model: BatchNorm folded into the preceding convolution, each
convolution fused with the bias, residual addition and ReLU that follow it, and the
channels-last memory format.

A folded model computes the same function up to float rounding (the fold is computed in float64
and rounded once), but its state-dict keys differ (each folded ``bn`` disappears and its conv
gains a ``bias``): it is built for running, never for saving. Keep the original for checkpoints.
"""

from __future__ import annotations

import itertools
import warnings
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _BatchNorm

from isaseg_cli.models.backbone import BasicBlock, Bottleneck, ResNetV1c
from isaseg_cli.models.heads import ISAHead, SelfAttentionBlock
from isaseg_cli.models.layers import ConvModule

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


class ConvReLU(nn.Module):
    """``relu(conv(x) + bias [+ residual])`` as one cuDNN call on CUDA.

    After BatchNorm folding, an eager model runs the convolution, then the bias addition, the
    residual addition and the ReLU as separate passes over the activation; on a GPU those
    passes cost more than the convolutions themselves (docs/PERFORMANCE.md).
    ``torch.cudnn_convolution_relu`` / ``cudnn_convolution_add_relu`` do all of it in the
    convolution's epilogue. Off CUDA, or if cuDNN has no fused kernel for this layer (then
    once, with a warning), the separate operations run instead: the same function.
    ``torch.compile`` cannot trace the fused operators; compiled models skip this rewrite.
    """

    def __init__(self, conv: nn.Conv2d) -> None:
        super().__init__()
        if not isinstance(conv.padding, tuple):
            raise ValueError("ConvReLU needs numeric padding")
        self.conv = conv
        self.fused = True

    def forward(self, x: Tensor, residual: Tensor | None = None) -> Tensor:
        conv = self.conv
        if self.fused and x.is_cuda:
            args = (conv.stride, conv.padding, conv.dilation, conv.groups)
            try:
                if residual is None:
                    return torch.cudnn_convolution_relu(x, conv.weight, conv.bias, *args)
                return torch.cudnn_convolution_add_relu(
                    x, conv.weight, residual, 1.0, conv.bias, *args
                )
            except RuntimeError as exc:  # no fused engine for this shape: run it unfused
                self.fused = False
                reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
                warnings.warn(
                    f"cuDNN fused conv+ReLU unavailable ({reason}); running unfused", stacklevel=2
                )
        out = conv(x)
        if residual is not None:
            out = out + residual
        return torch.relu_(out)


class SpaceToDepthConvReLU(nn.Module):
    """The stem's first conv-ReLU (3x3, stride 2, padding 1 on the 3-channel image) as a
    2x2 stride-1 conv over 2x2 pixel blocks.

    cuDNN has no tensor-core kernel for a 3-channel NHWC input: it runs a generic one, after
    its own padding and layout passes over the image (``benchmarks/op_probe.py``; the figures
    are in docs/PERFORMANCE.md). Stacking each 2x2 block's 3x4 values as channels (zero-padded to
    16) gives a half-size map on which the stride-2 window of every output pixel spans 2x2
    blocks: the same conv, its weight rearranged, zeros where the blocks overhang the 3x3
    window. One copy builds the block map from the image as it comes (float32 NCHW, cast on
    the way), with the conv's zero padding as a leading row and column, so this module also
    replaces the fast path's cast of the input.
    """

    def __init__(self, conv: nn.Conv2d) -> None:
        super().__init__()
        if not self.applies_to(conv):
            raise ValueError("SpaceToDepthConvReLU takes a 3x3, stride-2, padding-1 conv")
        width = -(-4 * conv.in_channels // 8) * 8  # a multiple of 8 for the tensor cores
        block_conv = nn.Conv2d(width, conv.out_channels, 2, bias=conv.bias is not None)
        block_conv = block_conv.to(device=conv.weight.device, dtype=conv.weight.dtype)
        with torch.no_grad():
            weight = torch.zeros_like(block_conv.weight)
            # Block offset (a, b), in-block offset (dy, dx): output row i reads image row
            # 2(i - 1 + a) + dy = 2i - 1 + ky, so ky = 2a + dy - 1 (and kx alike).
            for a, b, dy, dx in itertools.product(range(2), repeat=4):
                ky, kx = 2 * a + dy - 1, 2 * b + dx - 1
                if 0 <= ky <= 2 and 0 <= kx <= 2:
                    channels = slice(2 * dy + dx, 4 * conv.in_channels, 4)  # (c, dy, dx) order
                    weight[:, channels, a, b] = conv.weight[:, :, ky, kx]
            block_conv.weight.copy_(weight)
            if conv.bias is not None:
                block_conv.bias.copy_(conv.bias)
        self.conv = ConvReLU(block_conv)

    @staticmethod
    def applies_to(conv: nn.Module) -> bool:
        """Whether ``conv`` is a stem conv this rewrite reproduces."""
        return (
            isinstance(conv, nn.Conv2d)
            and conv.kernel_size == (3, 3)
            and conv.stride == (2, 2)
            and conv.padding == (1, 1)
            and conv.dilation == (1, 1)
            and conv.groups == 1
            and conv.in_channels <= 4
        )

    def forward(self, images: Tensor) -> Tensor:
        n, channels, height, width = images.shape
        if height % 2 or width % 2:  # the extra zero row/column is the conv's bottom padding
            images = F.pad(images, (0, width % 2, 0, height % 2))
        rows, cols = (height + 1) // 2, (width + 1) // 2
        weight = self.conv.conv.weight
        blocks = torch.zeros(
            (n, rows + 1, cols + 1, weight.shape[1]), dtype=weight.dtype, device=images.device
        )
        inner = blocks[:, 1:, 1:, : 4 * channels].unflatten(3, (channels, 2, 2))
        pixels = images.unflatten(3, (cols, 2)).unflatten(2, (rows, 2))  # (n, c, i, dy, j, dx)
        inner.copy_(pixels.permute(0, 2, 4, 1, 3, 5))
        return self.conv(blocks.permute(0, 3, 1, 2))


class ConcatConvReLU(nn.Module):
    """``relu(conv(cat([a, b])) + bias)`` without the concatenation copy.

    A convolution of concatenated channels is the sum of convolutions of the parts with the
    matching slices of its weight: ``b``'s bare convolution is added by ``a``'s in its fused
    epilogue (``ConvReLU`` with a residual). For ISA's ``out_conv`` on a 128x256 map this
    spares writing and reading a 1024-channel tensor. ``forward_parts((a, b))`` is what
    ``ISAHead`` calls (as on the ``ConvModule`` it replaces); ``forward`` takes the
    concatenated input too.
    """

    def __init__(self, conv: nn.Conv2d, first_width: int) -> None:
        super().__init__()
        if conv.groups != 1 or not 0 < first_width < conv.in_channels:
            raise ValueError("ConcatConvReLU splits an ungrouped conv inside its input width")
        self.first_width = first_width
        self.first = ConvReLU(_conv_slice(conv, 0, first_width, with_bias=True))
        self.second = _conv_slice(conv, first_width, conv.in_channels, with_bias=False)

    def forward_parts(self, parts: Sequence[Tensor]) -> Tensor:
        first, second = parts
        return self.first(first, self.second(second))

    def forward(self, x: Tensor) -> Tensor:
        first, second = x.split([self.first_width, x.shape[1] - self.first_width], dim=1)
        return self.forward_parts((first, second))


@torch.no_grad()
def _conv_slice(conv: nn.Conv2d, start: int, stop: int, *, with_bias: bool) -> nn.Conv2d:
    """A copy of ``conv`` reading only its input channels ``start:stop``."""
    kwargs = {"stride": conv.stride, "padding": conv.padding, "dilation": conv.dilation}
    bias = with_bias and conv.bias is not None
    part = nn.Conv2d(stop - start, conv.out_channels, conv.kernel_size, bias=bias, **kwargs)
    part = part.to(device=conv.weight.device, dtype=conv.weight.dtype)
    part.weight.copy_(conv.weight[:, start:stop])
    if bias:
        part.bias.copy_(conv.bias)
    return part


class FusedBottleneck(nn.Module):
    """A folded ``Bottleneck``: three fused convolutions, the last adding the shortcut."""

    def __init__(self, block: Bottleneck) -> None:
        super().__init__()
        self.conv1, self.conv2 = ConvReLU(block.conv1), ConvReLU(block.conv2)
        self.conv3 = ConvReLU(block.conv3)
        self.downsample = _move_shortcut_bias(block.downsample, block.conv3)

    def forward(self, x: Tensor) -> Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        return self.conv3(self.conv2(self.conv1(x)), identity)


class FusedBasicBlock(nn.Module):
    """A folded ``BasicBlock``: two fused convolutions, the second adding the shortcut."""

    def __init__(self, block: BasicBlock) -> None:
        super().__init__()
        self.conv1, self.conv2 = ConvReLU(block.conv1), ConvReLU(block.conv2)
        self.downsample = _move_shortcut_bias(block.downsample, block.conv2)

    def forward(self, x: Tensor) -> Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        return self.conv2(self.conv1(x), identity)


@torch.no_grad()
def _move_shortcut_bias(downsample: nn.Module | None, last: nn.Conv2d) -> nn.Module | None:
    """``relu(last(x) + b + shortcut(y) + c) == relu(last(x) + (b + c) + shortcut(y))``: the
    folded shortcut conv's bias ``c`` joins the last conv's, so the shortcut is a bare cuDNN
    convolution instead of a convolution plus a broadcast addition over its whole output."""
    if not isinstance(downsample, nn.Sequential):
        return downsample
    conv = downsample[0]
    if isinstance(conv, nn.Conv2d) and conv.bias is not None and last.bias is not None:
        last.bias.add_(conv.bias)
        conv.bias = None
    return downsample


def fuse_conv_relu(model: nn.Module) -> int:
    """Replaces, in place, every conv followed (after BN folding) by ReLU with ``ConvReLU``:
    ``ConvModule``s, conv-ReLU neighbours in an ``nn.Sequential`` (the stem) and whole residual
    blocks (``FusedBottleneck``, ``FusedBasicBlock``); the ISA head's ``out_conv`` then takes
    its two inputs without concatenating them (``ConcatConvReLU``) and the stem's first conv
    reads 2x2 pixel blocks (``SpaceToDepthConvReLU``); the biases of the shortcut convs and of
    the attention values move into the convs after them, which add them for free. Run
    ``fuse_batchnorm`` first: a conv still followed by a BatchNorm is left alone. Inference
    only, like BN folding.

    Returns:
        The number of convolutions fused.
    """
    fused = 0
    for module in list(model.modules()):
        if isinstance(module, SelfAttentionBlock):
            _move_value_bias(module)
        if isinstance(module, ConvModule):
            if isinstance(module.conv, nn.Conv2d) and isinstance(module.bn, nn.Identity):
                module.conv, module.activate = ConvReLU(module.conv), nn.Identity()
                fused += 1
        elif isinstance(module, nn.Sequential):
            fused += _fuse_sequential(module)
    for module in list(model.modules()):
        if isinstance(module, ISAHead):
            _split_out_conv(module)
        elif isinstance(module, ResNetV1c) and isinstance(module.stem[0], ConvReLU):
            if SpaceToDepthConvReLU.applies_to(module.stem[0].conv):
                module.stem[0] = SpaceToDepthConvReLU(module.stem[0].conv)
    return fused


def _split_out_conv(head: ISAHead) -> None:
    """The head's fused ``out_conv`` (on the attention output and the map concatenated)
    becomes a ``ConcatConvReLU``."""
    out_conv = head.out_conv
    if isinstance(out_conv, ConvModule) and isinstance(out_conv.conv, ConvReLU):
        conv = out_conv.conv.conv
        head.out_conv = ConcatConvReLU(conv, conv.in_channels // 2)


@torch.no_grad()
def _move_value_bias(block: SelfAttentionBlock) -> None:
    """Each attention row sums to one, so a bias added to every value comes out unchanged:
    ``attend(q, k, v + b) == attend(q, k, v) + b``, and the output projection (a folded 1x1
    conv ``W``) turns it into ``W @ b``, which joins its own bias. The value projection is then
    a bare convolution (no broadcast addition over the 512-channel map)."""
    value, output = block.value_project, block.output_project.conv
    if not isinstance(output, nn.Conv2d) or output.kernel_size != (1, 1):
        return
    if value.bias is None or output.bias is None:
        return
    weight = output.weight.double().flatten(1)  # (out, in)
    output.bias.add_((weight @ value.bias.double()).to(output.bias.dtype))
    value.bias = None


def _fuse_sequential(sequence: nn.Sequential) -> int:
    fused = 0
    names = list(sequence._modules)
    for index, name in enumerate(names):
        child = sequence._modules[name]
        if isinstance(child, Bottleneck | BasicBlock) and _all_folded(child):
            replacement = FusedBottleneck if isinstance(child, Bottleneck) else FusedBasicBlock
            sequence._modules[name] = replacement(child)  # type: ignore[arg-type]
            fused += 3 if isinstance(child, Bottleneck) else 2
        elif isinstance(child, nn.Conv2d) and isinstance(child.padding, tuple):
            # conv, Identity (a folded BN), ReLU
            following = [sequence._modules[n] for n in names[index + 1 : index + 3]]
            if (
                len(following) == 2
                and isinstance(following[0], nn.Identity)
                and isinstance(following[1], nn.ReLU)
            ):
                sequence._modules[name] = ConvReLU(child)
                sequence._modules[names[index + 2]] = nn.Identity()
                fused += 1
    return fused


def _all_folded(block: nn.Module) -> bool:
    norms = [getattr(block, name) for name in ("bn1", "bn2", "bn3") if hasattr(block, name)]
    return all(isinstance(norm, nn.Identity) for norm in norms)
