"""Times single operators of the bf16 R-50 forward at 1024x2048 against alternatives.

    python benchmarks/op_probe.py --out DIR      # on a CUDA machine; DIR/op_probe.json

Each row is the median of CUDA-event timings, after a warm-up, with cuDNN autotuning on, and
says whether the alternative's result equals the baseline's (bit for bit). It answers which
of the small remaining costs in the run-3 profile (docs/PERFORMANCE.md) are worth changing.
"""

from __future__ import annotations

import argparse
import json
import statistics
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F

from isaseg_cli.engine.device import inference_flags, set_process_flags
from isaseg_cli.models.fuse import SpaceToDepthConvReLU
from isaseg_cli.models.regroup import regroup


def _time(fn: Callable[[], torch.Tensor], iters: int = 50) -> tuple[float, torch.Tensor]:
    for _ in range(5):
        out = fn()
    times = []
    for _ in range(iters):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        out = fn()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end) * 1000)
    return statistics.median(times), out


def _maxpool_3d(x: torch.Tensor) -> torch.Tensor:
    """NHWC max-pool 3x3/2 as max_pool3d over the contiguous (N, 1, H, W, C) view."""
    pooled = F.max_pool3d(x.permute(0, 2, 3, 1).unsqueeze(1), (3, 3, 1), (2, 2, 1), (1, 1, 0))
    return pooled.squeeze(1).permute(0, 3, 1, 2)


def _window_max_pool(x: torch.Tensor) -> torch.Tensor:
    """max_pool2d(x, 3, 2, 1) without its index output: one strided-window reduction over the
    interior, thin max-pools for the first (and an odd last) row and column."""
    n, c, h, w = x.shape
    rows, cols = (h - 1) // 2 + 1 - h % 2, (w - 1) // 2 + 1 - w % 2
    out = torch.empty_like(x[:, :, : (h - 1) // 2 + 1, : (w - 1) // 2 + 1])
    sn, sc, sh, sw = x.stride()
    shape, strides = (n, c, rows - 1, cols - 1, 3, 3), (sn, sc, 2 * sh, 2 * sw, sh, sw)
    torch.amax(x[:, :, 1:, 1:].as_strided(shape, strides), (-2, -1), out=out[:, :, 1:rows, 1:cols])
    out[:, :, :1] = F.max_pool2d(x[:, :, :2], 3, 2, 1)
    out[:, :, :, :1] = F.max_pool2d(x[:, :, :, :2], 3, 2, 1)
    if h % 2:
        out[:, :, -1:] = F.max_pool2d(x[:, :, -2:], 3, 2, 1)
    if w % 2:
        out[:, :, :, -1:] = F.max_pool2d(x[:, :, :, -2:], 3, 2, 1)
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", type=Path, default=Path("bench-out"))
    args = parser.parse_args()
    cuda = torch.device("cuda")
    set_process_flags(inference_flags(cuda))
    bf16 = torch.bfloat16
    cl = torch.channels_last
    rows: list[dict[str, object]] = []

    def row(name: str, fn: Callable[[], torch.Tensor], baseline: torch.Tensor | None = None):
        us, out = _time(fn)
        record: dict[str, object] = {"op": name, "us": round(us, 1)}
        if baseline is not None:
            record["equal"] = bool(torch.equal(out, baseline))
        rows.append(record)
        print(json.dumps(record), flush=True)
        return out

    stem = torch.relu(torch.randn(1, 64, 512, 1024, device=cuda)).to(bf16, memory_format=cl)
    base = row("maxpool2d nhwc", lambda: F.max_pool2d(stem, 3, 2, 1))
    row("maxpool3d on nhwc view", lambda: _maxpool_3d(stem), base)
    row("maxpool as window amax + border pools", lambda: _window_max_pool(stem), base)
    stem_nchw = stem.contiguous()
    row("maxpool2d nchw (input already nchw)", lambda: F.max_pool2d(stem_nchw, 3, 2, 1), base)

    image = torch.randn(1, 3, 1024, 2048, device=cuda)
    weight3 = torch.randn(32, 3, 3, 3, device=cuda).to(bf16, memory_format=cl)
    weight8 = F.pad(weight3, (0, 0, 0, 0, 0, 5)).contiguous(memory_format=cl)
    x3 = image.to(bf16, memory_format=cl)
    row("image fp32 nchw -> bf16 nhwc, 3 ch", lambda: image.to(bf16, memory_format=cl))

    def pad8() -> torch.Tensor:
        padded = torch.zeros(1, 8, 1024, 2048, device=cuda, dtype=bf16).to(memory_format=cl)
        padded[:, :3] = image
        return padded

    x8 = row("image fp32 nchw -> bf16 nhwc, padded to 8 ch", pad8)
    conv3 = row("stem conv 3->32 s2, 3 ch", lambda: F.conv2d(x3, weight3, None, 2, 1))
    row("stem conv 3->32 s2, padded to 8 ch", lambda: F.conv2d(x8, weight8, None, 2, 1), conv3)
    weight_nchw, bias = weight3.contiguous(), torch.randn(32, device=cuda, dtype=bf16)
    row("image fp32 nchw -> bf16 nchw", lambda: image.to(bf16))
    x_nchw = image.to(bf16)
    row(
        "stem conv+bias+relu nhwc (fused, as the fast path)",
        lambda: torch.cudnn_convolution_relu(x3, weight3, bias, (2, 2), (1, 1), (1, 1), 1),
    )
    stem_conv = torch.nn.Conv2d(3, 32, 3, 2, 1).to(cuda, bf16, memory_format=cl)
    blocks = SpaceToDepthConvReLU(stem_conv).to(memory_format=cl)
    with torch.no_grad():
        row("stem as 2x2 conv on pixel blocks, from the fp32 image", lambda: blocks(image))
    row(
        "stem conv+bias+relu nchw in, then to nhwc",
        lambda: torch.cudnn_convolution_relu(
            x_nchw, weight_nchw, bias, (2, 2), (1, 1), (1, 1), 1
        ).contiguous(memory_format=cl),
    )

    feature = torch.randn(1, 512, 128, 256, device=cuda).to(bf16, memory_format=cl)
    grid = feature.permute(0, 2, 3, 1).view(1, 16, 8, 32, 8, 512)
    order = (0, 2, 4, 1, 3, 5)
    plain = row("regroup 512 ch, element copy", lambda: grid.permute(*order).contiguous())
    row("regroup 512 ch, int64 words", lambda: regroup(grid, order), plain)
    other = torch.randn_like(feature).contiguous(memory_format=cl)
    row("cat 2x512 ch nhwc", lambda: torch.cat([feature, other], dim=1))
    weight = (torch.randn(512, 1024, 1, 1, device=cuda) / 32).to(bf16, memory_format=cl)
    bias512 = torch.randn(512, device=cuda, dtype=bf16)
    args1 = ((1, 1), (0, 0), (1, 1), 1)
    joined = row(
        "out_conv: cat + conv 1024->512 (+bias, relu)",
        lambda: torch.cudnn_convolution_relu(
            torch.cat([feature, other], dim=1), weight, bias512, *args1
        ),
    )
    first, second = (
        weight[:, :512].contiguous(memory_format=cl),
        weight[:, 512:].contiguous(memory_format=cl),
    )
    row(
        "out_conv: conv 512->512, then conv 512->512 + add + bias + relu",
        lambda: torch.cudnn_convolution_add_relu(
            feature, first, F.conv2d(other, second), 1.0, bias512, *args1
        ),
        joined,
    )

    logits = torch.randn(1, 19, 128, 256, device=cuda)
    row(
        "resize logits to 1024x2048 fp32",
        lambda: F.interpolate(logits, (1024, 2048), mode="bilinear", align_corners=False),
    )
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "op_probe.json").write_text(json.dumps(rows, indent=1) + "\n")


if __name__ == "__main__":
    main()
