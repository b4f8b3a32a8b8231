"""The fast inference path: a copy of a model prepared for speed, with the same masks.

BatchNorm folded into the convolutions, channels-last memory, bf16/fp16 weights and inputs,
fused scaled-dot-product attention, the copy-saving ISA interlacing, optional ``torch.compile``.
The plain float32 model stays untouched (and bit-faithful to mmsegmentation).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
from torch import Tensor

from isaseg_cli.engine.device import PRECISIONS, check_precision
from isaseg_cli.engine.infer.cuda_graphs import GraphedInference
from isaseg_cli.engine.infer.pipeline import slide_windows
from isaseg_cli.errors import InputError
from isaseg_cli.models.backbone import Bottleneck
from isaseg_cli.models.fuse import (
    SpaceToDepthConvReLU,
    fuse_batchnorm,
    fuse_conv_relu,
    to_channels_last,
)
from isaseg_cli.models.heads import ATTENTION_KINDS, ISAHead, SelfAttentionBlock
from isaseg_cli.models.segmentor import Segmentor
from isaseg_cli.zoo.spec import TestSpec

COMPILE_MODES = ("default", "max-autotune-no-cudagraphs", "max-autotune", "reduce-overhead")


@dataclass(frozen=True, slots=True)
class FastSettings:
    """What ``optimize_for_inference`` applied (resolved from its ``None`` = automatic choices)."""

    precision: str = "fp32"
    fuse_bn: bool = False
    fuse_relu: bool = False
    channels_last: bool = False
    attention: str = "matmul"
    fast_interlace: bool = True
    compile: bool = False
    compile_mode: str = "default"
    cuda_graphs: bool = False

    @property
    def is_noop(self) -> bool:
        """Nothing to change: the plain model is already this path."""
        changes = (self.fuse_bn, self.fuse_relu, self.channels_last, self.compile)
        changes += (self.attention != "matmul", self.cuda_graphs)
        return self.precision == "fp32" and not any(changes)


class InferenceSegmentor(Segmentor):
    """A Segmentor for inference only: casts the input to its weights' dtype and memory
    format (unless its stem reads the image as it comes: ``SpaceToDepthConvReLU``), and
    returns float32 logits resized to the input size (in float32)."""

    def __init__(self, source: Segmentor, settings: FastSettings, dtype: torch.dtype) -> None:
        super().__init__(
            source.backbone, source.decode_head, None, align_corners=source.align_corners
        )
        self.settings = settings
        self.dtype = dtype
        self.memory_format = (
            torch.channels_last if settings.channels_last else torch.preserve_format
        )
        self.graphed = GraphedInference(self.run) if settings.cuda_graphs else None
        modules = source.backbone.modules()
        self.cast_input = not any(isinstance(m, SpaceToDepthConvReLU) for m in modules)

    def forward(self, images: Tensor) -> dict[str, Tensor]:
        logits = self.run(images) if self.graphed is None else self.graphed(images)
        return {"out": self.resize(logits, images.shape[-2:])}

    def run(self, images: Tensor) -> Tensor:
        """Backbone and head: float32 logits at the feature resolution (what
        ``GraphedInference`` captures; the resize to the input size stays outside, so the graph
        replay need not copy full-size logits out of its pool)."""
        if self.cast_input:
            images = images.to(dtype=self.dtype, memory_format=self.memory_format)
        return self.decode_head(self.backbone(images)).float()


def resolve_fast_settings(
    device: torch.device,
    precision: str = "fp32",
    *,
    fuse_bn: bool | None = None,
    fuse_relu: bool | None = None,
    channels_last: bool | None = None,
    attention: str | None = None,
    compile: bool = False,
    compile_mode: str = "default",
    cuda_graphs: bool | None = None,
) -> FastSettings:
    """Fills the automatic (``None``) choices for ``device`` and ``precision``.

    Automatic: on CUDA everything (fold BN, fused conv+ReLU and CUDA graphs unless compiling,
    channels-last, SDPA attention, copy-saving interlace); on the CPU, float32 changes nothing
    (the exact reference path) and bf16 folds BN and runs channels-last (1.36x faster than
    NCHW there) but keeps matmul attention, which SDPA's CPU kernels do not beat
    (docs/PERFORMANCE.md).

    Raises:
        InputError: unknown precision, attention or compile mode, fp16 on the CPU, or fused
            conv+ReLU without folded BN or with compile, CUDA graphs off CUDA or with compile.
    """
    check_precision(precision, device)
    if attention is not None and attention not in ATTENTION_KINDS:
        raise InputError(f"unknown attention {attention!r}: use {', '.join(ATTENTION_KINDS)}")
    if compile_mode not in COMPILE_MODES:
        raise InputError(f"unknown compile mode {compile_mode!r}: use {', '.join(COMPILE_MODES)}")
    cuda = device.type == "cuda"
    reduced = precision != "fp32"
    fuse = (cuda or reduced or compile) if fuse_bn is None else fuse_bn
    if fuse_relu and (not fuse or compile):
        raise InputError("fused conv+ReLU needs folded BatchNorm and no --compile")
    if cuda_graphs and (not cuda or compile):
        raise InputError("CUDA graphs need a CUDA device and no --compile")
    attention = attention or ("sdpa" if cuda else "matmul")
    return FastSettings(
        precision=precision,
        fuse_bn=fuse,
        fuse_relu=(cuda and fuse and not compile) if fuse_relu is None else fuse_relu,
        channels_last=(cuda or reduced) if channels_last is None else channels_last,
        attention=attention,
        compile=compile,
        compile_mode=compile_mode,
        cuda_graphs=(cuda and not compile) if cuda_graphs is None else cuda_graphs,
    )


def optimize_for_inference(
    model: Segmentor,
    *,
    device: torch.device | str,
    precision: str = "fp32",
    fuse_bn: bool | None = None,
    fuse_relu: bool | None = None,
    channels_last: bool | None = None,
    attention: str | None = None,
    compile: bool = False,
    compile_mode: str = "default",
    cuda_graphs: bool | None = None,
) -> Segmentor:
    """A copy of ``model`` prepared for fast inference on ``device`` (or ``model`` itself when
    nothing applies: float32 on the CPU with every option left automatic).

    Run the result under ``torch.no_grad()`` / ``torch.inference_mode()``; it returns
    ``{"out": float32 logits}`` at the input size, like ``Segmentor`` in eval mode, whatever
    ``precision`` is, so ``forward_logits``/``infer_scores`` take it as they are. It must not be
    trained or saved (folded BN changes its state-dict keys). On CUDA this also turns on
    ``torch.backends.cudnn.benchmark`` (process-wide).

    Args:
        model: an eval-mode model already on ``device``.
        device: where it runs.
        precision: ``fp32``, ``bf16`` or ``fp16`` (weights and activations cast; logits float32).
        fuse_bn: fold BatchNorm into the convolutions (``None``: automatic, see
            ``resolve_fast_settings``).
        fuse_relu: run each conv with its bias, residual addition and ReLU as one cuDNN call
            (``models.fuse.ConvReLU``; ``None``: on CUDA with folded BN, without compile).
        channels_last: NHWC memory format (``None``: on CUDA, or with bf16/fp16).
        attention: ``matmul`` or ``sdpa`` for both ISA relations (``None``: sdpa on CUDA).
        compile: ``torch.compile`` the model (inductor, with freezing, so BN folding and
            weight casts become constants); the first call per input shape pays the compile.
        compile_mode: inductor mode; ``default`` compiles fastest.
        cuda_graphs: replay a CUDA graph per input shape once the shape repeats
            (``engine.cuda_graphs.GraphedInference``; ``None``: on CUDA without compile).

    Raises:
        InputError: an unknown or unsupported option value.
    """
    device = torch.device(device)
    settings = resolve_fast_settings(
        device,
        precision,
        fuse_bn=fuse_bn,
        fuse_relu=fuse_relu,
        channels_last=channels_last,
        attention=attention,
        compile=compile,
        compile_mode=compile_mode,
        cuda_graphs=cuda_graphs,
    )
    if settings.is_noop:
        return model
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    return apply_fast_settings(model, settings)


def apply_fast_settings(model: Segmentor, settings: FastSettings) -> InferenceSegmentor:
    """Builds the ``InferenceSegmentor`` for already-resolved ``settings`` (no device policy:
    tests use it to check fp16 numerics on the CPU)."""
    fast = copy.deepcopy(model).eval()
    if settings.fuse_bn:
        fuse_batchnorm(fast)
    if settings.fuse_relu:
        fuse_conv_relu(fast)
    set_attention(fast, settings.attention, fast_interlace=settings.fast_interlace)
    dtype = PRECISIONS[settings.precision]
    fast = fast.to(dtype=dtype)
    if settings.channels_last:
        to_channels_last(fast)
    result = InferenceSegmentor(fast, settings, dtype)
    if settings.compile:
        result.compile(dynamic=False, options=compile_options(settings.compile_mode))
    return result


def set_attention(model: torch.nn.Module, attention: str, *, fast_interlace: bool) -> None:
    """Selects the attention kernel and the interlacing of every ISA head in ``model`` (in place;
    valid for training too: the projections' BN statistics cover the same pixels)."""
    if attention not in ATTENTION_KINDS:
        raise InputError(f"unknown attention {attention!r}: use {', '.join(ATTENTION_KINDS)}")
    for module in model.modules():
        if isinstance(module, SelfAttentionBlock):
            module.attention = attention
        elif isinstance(module, ISAHead):
            module.fast_interlace = fast_interlace


def prepare_for_training(
    model: torch.nn.Module, device: torch.device, *, recompute: bool | None = None
) -> dict[str, object]:
    """Sets up ``model`` (in place) for fast training on ``device``; returns what it applied.

    On CUDA: channels-last parameters, SDPA for both ISA relations, the copy-saving interlace
    and the logits resized for the loss by matrix products (``Segmentor.matmul_resize``),
    which keep the maths and the state dict (keys and values) of the reference model; and
    ``recompute`` (``None``: on CUDA without SyncBatchNorm) has every bottleneck recompute
    its tail in the backward pass instead of keeping it (``Bottleneck.recompute_tail``: the
    same gradients; R-101 bf16 on an H200: 5.65 to 4.21 GiB per step, for 1.5 ms). Elsewhere,
    unless ``recompute`` asks for it, nothing changes: CPU training stays the reference code
    path.

    Raises:
        InputError: ``recompute`` with SyncBatchNorm.
    """
    cuda = device.type == "cuda"
    sync_bn = any(isinstance(m, torch.nn.SyncBatchNorm) for m in model.modules())
    if recompute is None:
        recompute = cuda and not sync_bn
    elif recompute and sync_bn:  # its recomputation would all-reduce the statistics again
        raise InputError("--recompute does not combine with SyncBatchNorm (multi-GPU training)")
    for module in model.modules():
        if isinstance(module, Bottleneck):
            module.recompute_tail = recompute
    applied: dict[str, object] = {"recompute": recompute}
    if not cuda:
        return applied | {
            "channels_last": False,
            "attention": "matmul",
            "fast_interlace": False,
            "matmul_resize": False,
        }
    set_attention(model, "sdpa", fast_interlace=True)
    to_channels_last(model)
    if isinstance(model, Segmentor):
        model.matmul_resize = True
    return applied | {
        "channels_last": True,
        "attention": "sdpa",
        "fast_interlace": True,
        "matmul_resize": isinstance(model, Segmentor),
    }


def compile_options(mode: str) -> dict[str, object]:
    """Inductor options of ``mode`` plus freezing (weights as constants, folded at compile
    time; it applies to graphs run without gradients)."""
    from torch._inductor import list_mode_options

    return {**list_mode_options(mode), "freezing": True}


def recommended_window_batch(
    device: torch.device | str, test: TestSpec, image_size: tuple[int, int] | None = None
) -> int:
    """How many slide windows to run as one batch: all of them on CUDA (8 for a 1025x2049
    Cityscapes test image with 769 crops; a few GB at most), one at a time elsewhere, where
    batching saves nothing and raises peak memory.

    Args:
        image_size: (h, w) of the network input; defaults to the test scale (w, h) of ``test``.
    """
    if torch.device(device).type != "cuda" or test.mode != "slide":
        return 1
    assert test.crop_size is not None and test.stride is not None  # TestSpec guarantees it
    if image_size is None:
        if test.scale is None:
            return 8
        image_size = (test.scale[1], test.scale[0])
    return len(slide_windows(*image_size, test.crop_size, test.stride))
