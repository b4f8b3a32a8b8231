"""A bottleneck tail that recomputes its inner activations in the backward pass.

The tail of a ResNet bottleneck, ``relu(bn3(conv3(relu(bn2(x)))) + identity)``, keeps three
full-size tensors for its backward pass under plain autograd (bn2's output, conv3's output
and the sum), 42 % of the block's saved activations. Here it keeps only its input ``x``
(which bn2 keeps anyway), its output (which the next block's conv keeps anyway) and the two
BatchNorms' batch statistics (a few floats per channel); the backward pass recomputes
``relu(bn2(x))`` from the saved statistics (one elementwise pass, no statistics kernel) and
the 1x1 conv3 (8 % of the block's FLOPs), then runs the same backward kernels autograd would.

``torch.utils.checkpoint`` would recompute the whole tail, statistics included, and record
the BatchNorm running statistics a second time; this runs each forward kernel once, so the
running statistics and ``num_batches_tracked`` advance exactly as in the plain forward.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

_aten = torch.ops.aten


def _train_batch_norm(
    norm: nn.BatchNorm2d, x: Tensor, weight: Tensor, bias: Tensor
) -> tuple[Tensor, Tensor, Tensor]:
    """``norm(x)`` in training mode, as ``_BatchNorm.forward`` runs it, plus the batch mean and
    inverse standard deviation the backward pass needs."""
    momentum = 0.0 if norm.momentum is None else norm.momentum
    if norm.track_running_stats and norm.num_batches_tracked is not None:
        norm.num_batches_tracked.add_(1)
        if norm.momentum is None:  # a cumulative average
            momentum = 1.0 / float(norm.num_batches_tracked)
    return torch.native_batch_norm(
        x, weight, bias, norm.running_mean, norm.running_var, True, momentum, norm.eps
    )


def _normalize(
    x: Tensor, weight: Tensor, bias: Tensor, mean: Tensor, invstd: Tensor, eps: float
) -> Tensor:
    """The BatchNorm output for known batch statistics (what the forward pass computed)."""
    if x.is_cuda:
        return torch.batch_norm_elemt(x, weight, bias, mean, invstd, eps)
    # No elementwise-only kernel on the CPU: recompute the statistics (no running update).
    return torch.native_batch_norm(x, weight, bias, None, None, True, 0.0, eps)[0]


class _BottleneckTail(torch.autograd.Function):
    @staticmethod
    def forward(  # type: ignore[override]
        ctx,
        x: Tensor,
        identity: Tensor,
        block: nn.Module,
        conv3_weight: Tensor,
        bn2_weight: Tensor,
        bn2_bias: Tensor,
        bn3_weight: Tensor,
        bn3_bias: Tensor,
    ) -> Tensor:
        conv3, bn2, bn3 = block.conv3, block.bn2, block.bn3
        inner, mean2, invstd2 = _train_batch_norm(bn2, x, bn2_weight, bn2_bias)
        inner = F.conv2d(  # under the caller's autocast, as the module would run
            inner.relu_(), conv3_weight, None, conv3.stride, conv3.padding, conv3.dilation
        )
        out, mean3, invstd3 = _train_batch_norm(bn3, inner, bn3_weight, bn3_bias)
        out = out.add_(identity).relu_()
        ctx.block = block
        ctx.identity_dtype = identity.dtype
        ctx.save_for_backward(
            x, out, mean2, invstd2, mean3, invstd3, conv3_weight, bn2_weight, bn2_bias, bn3_weight
        )
        return out

    @staticmethod
    def backward(ctx, grad_out: Tensor):  # type: ignore[override]
        x, out, mean2, invstd2, mean3, invstd3 = ctx.saved_tensors[:6]
        conv3_weight, bn2_weight, bn2_bias, bn3_weight = ctx.saved_tensors[6:]
        conv3, bn2, bn3 = ctx.block.conv3, ctx.block.bn2, ctx.block.bn3
        grad_sum = _aten.threshold_backward(grad_out, out, 0)
        inner = _normalize(x, bn2_weight, bn2_bias, mean2, invstd2, bn2.eps).relu_()
        weight = conv3_weight.to(inner.dtype)  # the cast autocast made in the forward pass
        conv_out = F.conv2d(inner, weight, None, conv3.stride, conv3.padding, conv3.dilation)
        grad_conv, grad_bn3_weight, grad_bn3_bias = _aten.native_batch_norm_backward(
            grad_sum, conv_out, bn3_weight, bn3.running_mean, bn3.running_var,
            mean3, invstd3, True, bn3.eps, [True, True, True],
        )  # fmt: skip
        del conv_out
        grad_inner, grad_conv3_weight, _ = _aten.convolution_backward(
            grad_conv, inner, weight, None, list(conv3.stride), list(conv3.padding),
            list(conv3.dilation), False, [0, 0], 1, [True, True, False],
        )  # fmt: skip
        grad_inner = _aten.threshold_backward(grad_inner, inner, 0)
        grad_x, grad_bn2_weight, grad_bn2_bias = _aten.native_batch_norm_backward(
            grad_inner, x, bn2_weight, bn2.running_mean, bn2.running_var,
            mean2, invstd2, True, bn2.eps, [True, True, True],
        )  # fmt: skip
        return (
            grad_x,
            grad_sum.to(ctx.identity_dtype),
            None,
            grad_conv3_weight.to(conv3_weight.dtype),
            grad_bn2_weight,
            grad_bn2_bias,
            grad_bn3_weight,
            grad_bn3_bias,
        )


def recomputed_tail(block: nn.Module, x: Tensor, identity: Tensor) -> Tensor:
    """``relu(bn3(conv3(relu(bn2(x)))) + identity)`` for a bottleneck ``block`` in training
    mode, keeping only ``x``, the result and the batch statistics for the backward pass.

    The BatchNorms must be plain ``BatchNorm2d`` (SyncBatchNorm's statistics are all-reduced,
    which this does not do) and conv3 a bias-free, ungrouped conv, as in ResNet.
    """
    bn2, bn3, conv3 = block.bn2, block.bn3, block.conv3
    if isinstance(bn2, nn.SyncBatchNorm) or isinstance(bn3, nn.SyncBatchNorm):
        raise ValueError("the recomputed tail does not support SyncBatchNorm")
    if conv3.bias is not None or conv3.groups != 1:
        raise ValueError("the recomputed tail needs a bias-free, ungrouped conv3")
    return _BottleneckTail.apply(
        x, identity, block, conv3.weight, bn2.weight, bn2.bias, bn3.weight, bn3.bias
    )
