"""The fast inference path: a model rebuilt for speed from a plain one, with the same masks.

BatchNorm folded into the convolutions, channels-last memory, bf16/fp16 weights and inputs,
fused scaled-dot-product attention, the copy-saving ISA interlacing, optional ``torch.compile``.
The plain float32 model stays untouched (and bit-faithful to mmsegmentation).

The fast model is rebuilt, not copied and reconfigured: ``models.build.rebuild`` makes a new
network with the fast ``ExecutionSpec`` (an empty one, on the meta device, then materialised
where the plain model lives), the plain model's state dict is loaded into it, and the
inference-only rewrites (``models.fuse``: BN folding, fused conv+ReLU) then transform that
private copy before anyone else holds it. So every execution choice is a constructor
argument, and the plain model is never touched.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from isaseg_cli.engine.device import PRECISIONS, check_precision
from isaseg_cli.engine.infer.cuda_graphs import GraphedInference, use_cuda_graphs
from isaseg_cli.engine.infer.protocol import slide_windows
from isaseg_cli.errors import InputError
from isaseg_cli.models.build import rebuild
from isaseg_cli.models.execution import ATTENTION_KINDS, ExecutionSpec
from isaseg_cli.models.fuse import (
    SpaceToDepthConvReLU,
    fuse_batchnorm,
    fuse_conv_relu,
    to_channels_last,
)
from isaseg_cli.models.segmentor import Segmentor
from isaseg_cli.zoo.spec import ModelSpec, TestSpec

COMPILE_MODES = ("default", "max-autotune-no-cudagraphs", "max-autotune", "reduce-overhead")


@dataclass(frozen=True, kw_only=True, slots=True)
class FastOptions:
    """What a command asks of the fast path; ``None`` leaves the choice to the device
    (``resolve_fast_settings``)."""

    precision: str = "fp32"
    fuse_bn: bool | None = None
    fuse_relu: bool | None = None
    channels_last: bool | None = None
    attention: str | None = None
    compile: bool = False
    compile_mode: str = "default"
    cuda_graphs: bool | None = None


AUTOMATIC = FastOptions()  # float32, every other choice left to the device


@dataclass(frozen=True, kw_only=True, slots=True)
class FastSettings:
    """The fast path resolved for one device: what ``optimize_for_inference`` applies."""

    precision: str = "fp32"
    fuse_bn: bool = False
    fuse_relu: bool = False
    channels_last: bool = False
    attention: str = "matmul"
    compile: bool = False
    compile_mode: str = "default"
    cuda_graphs: bool = False

    @property
    def is_noop(self) -> bool:
        """Nothing to change: the plain model is already this path."""
        changes = (self.fuse_bn, self.fuse_relu, self.channels_last, self.compile)
        changes += (self.attention != "matmul", self.cuda_graphs)
        return self.precision == "fp32" and not any(changes)

    @property
    def execution(self) -> ExecutionSpec:
        """How the rebuilt network runs: ``inference_execution(attention)``."""
        return inference_execution(self.attention)


def check_attention(attention: str | None) -> None:
    """Raises ``InputError`` for an attention kernel that is neither ``None`` (automatic) nor
    one of ``ATTENTION_KINDS``."""
    if attention is not None and attention not in ATTENTION_KINDS:
        raise InputError(f"unknown attention {attention!r}: use {', '.join(ATTENTION_KINDS)}")


def inference_execution(attention: str) -> ExecutionSpec:
    """The fast path's ISA head: ``attention`` for both relations, and always the copy-saving
    interlace (the same maths whatever the kernel, with fewer copies)."""
    return ExecutionSpec(attention=attention, fast_interlace=True)


class InferenceSegmentor(Segmentor):
    """A Segmentor for inference only: casts the input to its weights' dtype and memory
    format (unless its stem reads the image as it comes: ``SpaceToDepthConvReLU``), and
    returns float32 logits resized to the input size (in float32)."""

    def __init__(self, source: Segmentor, settings: FastSettings) -> None:
        super().__init__(
            source.backbone, source.decode_head, None, align_corners=source.align_corners
        )
        self.settings = settings
        self.dtype = PRECISIONS[settings.precision]
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
    device: torch.device | str, options: FastOptions = AUTOMATIC
) -> FastSettings:
    """Fills the automatic (``None``) choices of ``options`` for ``device``.

    Automatic: on CUDA everything (fold BN, fused conv+ReLU and CUDA graphs unless compiling,
    channels-last, SDPA attention); on the CPU, float32 changes nothing (the exact reference
    path) and bf16 folds BN and runs channels-last but keeps matmul attention, which SDPA's
    CPU kernels do not beat (docs/PERFORMANCE.md has the figures).

    Raises:
        InputError: unknown precision, attention or compile mode, fp16 on the CPU, or fused
            conv+ReLU without folded BN or with compile, CUDA graphs off CUDA or with compile.
    """
    device = torch.device(device)
    check_precision(options.precision, device)
    attention = options.attention
    check_attention(attention)
    compile = options.compile
    if options.compile_mode not in COMPILE_MODES:
        mode = options.compile_mode
        raise InputError(f"unknown compile mode {mode!r}: use {', '.join(COMPILE_MODES)}")
    cuda = device.type == "cuda"
    reduced = options.precision != "fp32"
    fuse = (cuda or reduced or compile) if options.fuse_bn is None else options.fuse_bn
    if options.fuse_relu and (not fuse or compile):
        raise InputError("fused conv+ReLU needs folded BatchNorm and no --compile")
    fuse_relu = cuda and fuse and not compile if options.fuse_relu is None else options.fuse_relu
    channels_last = options.channels_last
    return FastSettings(
        precision=options.precision,
        fuse_bn=fuse,
        fuse_relu=fuse_relu,
        channels_last=(cuda or reduced) if channels_last is None else channels_last,
        attention=attention or ("sdpa" if cuda else "matmul"),
        compile=compile,
        compile_mode=options.compile_mode,
        cuda_graphs=use_cuda_graphs(options.cuda_graphs, device, compile=compile),
    )


def optimize_for_inference(model: Segmentor, spec: ModelSpec, settings: FastSettings) -> Segmentor:
    """A model rebuilt from ``model`` for fast inference as ``settings`` say (or ``model``
    itself when they change nothing: float32 on the CPU with every option automatic).

    Run the result under ``torch.no_grad()`` / ``torch.inference_mode()``; it returns
    ``{"out": float32 logits}`` at the input size, like ``Segmentor`` in eval mode, whatever
    the precision, so ``forward_logits``/``infer_scores`` take it as they are. It must not be
    trained or saved (folded BN changes its state-dict keys). Process-wide torch flags are
    the command's business (``engine.device.set_process_flags``), not this function's.

    Args:
        model: an eval-mode model of ``spec``, already on the device ``settings`` are for.
        spec: ``model``'s architecture (the rebuild's).
        settings: from ``resolve_fast_settings``.
    """
    if settings.is_noop:
        return model
    fast = rebuild(model, spec, settings.execution)
    if settings.fuse_bn:
        fuse_batchnorm(fast)
    if settings.fuse_relu:
        fuse_conv_relu(fast)
    fast = fast.to(dtype=PRECISIONS[settings.precision])
    if settings.channels_last:
        to_channels_last(fast)
    result = InferenceSegmentor(fast, settings)
    if settings.compile:
        result.compile(dynamic=False, options=compile_options(settings.compile_mode))
    return result


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
