"""Checks an exported file against the PyTorch model at several input sizes.

"Float rounding" is measured, not assumed: at each size the PyTorch model also runs in float64,
and the exported file passes when it is as close to that float64 result as PyTorch's own
float32 is, within a margin (``ROUNDING_MARGIN``, ``RELATIVE_FLOOR``). A wrong head padding or
a shape frozen at the export size moves logits by orders of magnitude more.
"""

from __future__ import annotations

import copy
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from isaseg_cli.engine.infer.ort_session import onnxruntime_session
from isaseg_cli.models.segmentor import Segmentor
from isaseg_cli.zoo.spec import ModelSpec

# The exported file's distance to float64 may be this many times PyTorch float32's distance:
# other kernels (ORT's fused convs, another summation order) round differently, but alike.
ROUNDING_MARGIN = 4.0
# ... and never less than this fraction of the largest |logit|: a max over pixels is a noisy
# estimate of rounding in chaotic (random-weight) networks, while a wrong padding, resize or
# layout moves logits by 1e-2 of their range or more.
RELATIVE_FLOOR = 1e-3
# fp16 files are judged by their masks: at least this fraction of pixels as in float32.
FP16_AGREEMENT = 0.995


@dataclass(frozen=True, slots=True)
class SizeCheck:
    """One verified input size. ``max_abs_diff`` is against PyTorch float32 (None for argmax
    files); ``tolerance``
    bounds the distance to PyTorch float64 (None for fp16 files, judged by ``agreement``, the
    fraction of pixels whose class matches PyTorch float32)."""

    label: str
    size: tuple[int, int]
    batch: int
    head_padding: tuple[int, int]
    max_abs_diff: float | None
    tolerance: float | None
    agreement: float
    passed: bool

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def feature_length(length: int, output_stride: int) -> int:
    """The backbone's output length for an input ``length``: each stride-2 stage rounds up."""
    while output_stride > 1:
        length, output_stride = -(-length // 2), output_stride // 2
    return length


def output_stride(spec: ModelSpec) -> int:
    """Input pixels per head-feature pixel: the stem and max-pool (4), then the stage strides."""
    return 4 * math.prod(spec.backbone.strides[: spec.head.feature_index + 1])


def head_padding(size: tuple[int, int], spec: ModelSpec) -> tuple[int, int]:
    """The ISA head's zero padding (rows, columns) of the feature map for an input ``size``."""
    stride = output_stride(spec)
    group_h, group_w = spec.head.group_size
    return (
        -feature_length(size[0], stride) % group_h,
        -feature_length(size[1], stride) % group_w,
    )


def verification_sizes(
    size: tuple[int, int], dynamic: bool, spec: ModelSpec
) -> list[tuple[str, tuple[int, int], int]]:
    """(label, (h, w), batch) to check: the export size, and for a dynamic file also a size
    whose head padding differs from the export size's on both axes (batch 2), a tall and a wide
    one; these are about half the export size, so checking costs less than exporting."""
    checks = [("export size", size, 1)]
    if not dynamic:
        return checks
    height, width = size
    small, large = max(min(height, width) // 4, 32), max(max(height, width) // 2, 64)
    export_pad = head_padding(size, spec)

    def other_padding(base: tuple[int, int]) -> tuple[int, int]:
        for offset in range(0, 8 * output_stride(spec) * max(spec.head.group_size)):
            candidate = (base[0] + offset, base[1] + offset)
            pad = head_padding(candidate, spec)
            if all(p > 0 and p != e for p, e in zip(pad, export_pad, strict=True)):
                return candidate
        return base

    checks.append(("other head padding", other_padding((height // 2, width // 2)), 2))
    checks.append(("tall", other_padding((large, small)), 1))
    checks.append(("wide", other_padding((small, large)), 1))
    return checks


def _shaped(logits: Tensor, output: str) -> Tensor:
    if output == "probs":
        return logits.softmax(dim=1)
    return logits


def verify_export(
    path: Path,
    model: Segmentor,
    spec: ModelSpec,
    sizes: list[tuple[str, tuple[int, int], int]],
    *,
    output: str = "logits",
    precision: str = "fp32",
) -> tuple[SizeCheck, ...]:
    """Runs ``path`` in onnxruntime and ``model`` (eval mode, float32 and a float64 copy) on
    the same random images at each of ``sizes``; see the module docstring for the rule."""
    session = onnxruntime_session(path)
    input_name = session.get_inputs()[0].name
    model64 = copy.deepcopy(model).double().eval()
    generator = torch.Generator().manual_seed(0)
    checks = []
    for label, (height, width), batch in sizes:
        images = torch.randn(batch, 3, height, width, generator=generator)
        with torch.no_grad():
            logits32 = model(images)["out"].float()
            logits64 = model64(images.double())["out"]
        ours = torch.from_numpy(session.run(None, {input_name: images.numpy()})[0])
        reference32 = _shaped(logits32, output).double()
        reference64 = _shaped(logits64, output)
        rounding = (reference32 - reference64).abs().max().item()
        tolerance: float | None = max(
            ROUNDING_MARGIN * rounding, RELATIVE_FLOOR * reference64.abs().max().item(), 1e-6
        )
        ours_mask = ours if output == "argmax" else ours.argmax(dim=1)
        agreement = (ours_mask == logits32.argmax(dim=1)).double().mean().item()
        if output == "argmax":
            # Only pixels whose two best classes are closer than float rounding may differ.
            top2 = logits64.topk(2, dim=1).values
            tied = (top2[:, 0] - top2[:, 1]) <= tolerance
            diff = None
            passed = bool(((ours_mask == logits64.argmax(dim=1)) | tied).all())
        else:
            diff = (ours.double() - reference32).abs().max().item()
            distance = (ours.double() - reference64).abs().max().item()
            passed = bool(np.isfinite(distance)) and distance <= tolerance
        if precision == "fp16":
            tolerance, passed = None, agreement >= FP16_AGREEMENT
        checks.append(
            SizeCheck(
                label=label,
                size=(height, width),
                batch=batch,
                head_padding=head_padding((height, width), spec),
                max_abs_diff=diff,
                tolerance=tolerance,
                agreement=agreement,
                passed=passed,
            )
        )
    return tuple(checks)
