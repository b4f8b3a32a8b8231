"""Peak memory of `isaseg predict` against image size, for whole, slide and --tile (issue 17).

Each run is a fresh `python -m isaseg_cli predict` process; its peak RSS comes from the kernel
(os.wait4's rusage), so start-up, the model and every buffer count. On a CUDA device the CLI's
peak is the process RSS too; the script also reports torch.cuda.max_memory_allocated by running
the same segmentation in-process (--cuda-inprocess).

    python benchmarks/memory_predict.py --work /tmp/mem --runs tile:10000x10000 slide:1025x2049

With --cheap, the tiny test architecture with the same 19 classes stands in for R-50-D8 (the band
of logits is the same, the compute a fraction), to measure how memory grows with the image.

A run is MODE:HxW with MODE whole, slide (the full-canvas slide, 769x769 windows every 513) or
tile (--tile 769x769, stride 513x513). All runs use R-50-D8 Cityscapes with random weights at
native scale. Results are appended as JSON lines to WORK/results.jsonl and printed as a table.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np

MODEL = "isanet_r50-d8_4xb2-80k_cityscapes-769x769"
MODE_ARGS = {
    "whole": ["--mode", "whole"],
    "slide": ["--crop-size", "769x769", "--stride", "513x513"],
    "tile": ["--tile", "769x769", "--tile-stride", "513x513"],
}


def write_checkpoint(path: Path) -> Path:
    """R-50-D8 (Cityscapes classes) with random weights, no download."""
    import torch

    from isaseg_cli.engine.checkpoint import build_meta, model_state_dict, save_checkpoint
    from isaseg_cli.engine.loading import entry_classes
    from isaseg_cli.engine.random_weights import random_model
    from isaseg_cli.zoo.catalog import resolve_entry

    if path.is_file():
        return path
    entry = resolve_entry(MODEL)
    entry = dataclasses.replace(entry, name="r50-random-769", weights=None, published=None)
    model = random_model(entry.model, torch.device("cpu"), with_aux=True)
    classes, palette = entry_classes(entry)
    meta = build_meta(entry, classes, palette)
    return save_checkpoint(path, {"meta": meta, "state_dict": model_state_dict(model)})


def write_cheap_checkpoint(path: Path) -> Path:
    """The test suite's tiny architecture with the 19 Cityscapes classes and random weights: the
    same band of K logits as R-50 at a fraction of the compute, to measure how memory grows with
    the image's height (run from the repository root: it uses tests/helpers.py)."""
    import torch

    from isaseg_cli.engine.checkpoint import build_meta, model_state_dict, save_checkpoint
    from isaseg_cli.engine.random_weights import random_model
    from isaseg_cli.zoo.classes import CITYSCAPES
    from tests.helpers import make_tiny_entry

    if path.is_file():
        return path
    entry = make_tiny_entry(num_classes=19, classes=CITYSCAPES.classes)
    model = random_model(entry.model, torch.device("cpu"), with_aux=True)
    meta = build_meta(entry, CITYSCAPES.classes, CITYSCAPES.palette)
    return save_checkpoint(path, {"meta": meta, "state_dict": model_state_dict(model)})


def write_image(path: Path, height: int, width: int) -> Path:
    """A smooth gradient with mild noise (compresses well, so the PNG bytes stay small), built
    row band by row band."""
    if path.is_file():
        return path
    image = np.empty((height, width, 3), np.uint8)
    x = (np.arange(width) * 255 // max(width - 1, 1)).astype(np.uint8)
    rng = np.random.default_rng(0)
    for top in range(0, height, 1024):
        rows = np.arange(top, min(top + 1024, height))
        y = (rows * 255 // max(height - 1, 1)).astype(np.uint8)[:, None]
        band = image[top : top + len(rows)]
        band[..., 0], band[..., 1] = x[None, :], y
        band[..., 2] = (x[None, :] // 2 + y // 2) + rng.integers(0, 8, (len(rows), width), np.uint8)
    cv2.imwrite(str(path), image)
    return path


def measure(
    mode: str, height: int, width: int, work: Path, device: str, checkpoint: Path | None = None
) -> dict:
    """One `isaseg predict` process: its peak RSS (kernel rusage) and wall time."""
    checkpoint = checkpoint or write_checkpoint(work / "r50-random.pth")
    image = write_image(work / f"image_{height}x{width}.png", height, width)
    out = work / f"mask_{mode}_{height}x{width}.png"
    argv = [sys.executable, "-m", "isaseg_cli", "predict", str(image), "--out", str(out)]
    argv += ["--checkpoint", str(checkpoint), "--device", device, "--scale", "native"]
    argv += ["--overwrite", "--max-pixels", str(2 * height * width), *MODE_ARGS[mode]]
    start = time.perf_counter()
    process = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    _, status, usage = os.wait4(process.pid, 0)
    output = process.stdout.read().decode(errors="replace") if process.stdout else ""
    return {
        "mode": mode,
        "height": height,
        "width": width,
        "device": device,
        "checkpoint": checkpoint.name,
        "peak_rss_mib": round(usage.ru_maxrss / 1024, 1),  # Linux: KiB
        "seconds": round(time.perf_counter() - start, 1),
        "exit": os.waitstatus_to_exitcode(status),
        "tail": output.strip().splitlines()[-1:] if os.waitstatus_to_exitcode(status) else [],
    }


def cuda_peak(mode: str, height: int, width: int, work: Path) -> dict:
    """torch.cuda.max_memory_allocated of one segmentation, in this process."""
    import torch

    from isaseg_cli.data.image import read_image_bgr
    from isaseg_cli.engine.infer.segmenter import Segmenter

    checkpoint = write_checkpoint(work / "r50-random.pth")
    image = read_image_bgr(
        write_image(work / f"image_{height}x{width}.png", height, width), 1 << 34
    )
    options: dict = {"scale": "native"}
    if mode == "tile":
        options.update(tile=(769, 769), tile_stride=(513, 513))
    else:
        options.update(
            mode=mode, **({"crop": (769, 769), "stride": (513, 513)} if mode == "slide" else {})
        )
    segmenter = Segmenter.from_checkpoint(checkpoint, device="cuda", **options)
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    segmenter(image)
    torch.cuda.synchronize()
    return {
        "mode": mode,
        "height": height,
        "width": width,
        "device": "cuda",
        "cuda_max_allocated_mib": round(torch.cuda.max_memory_allocated() / 2**20, 1),
        "seconds": round(time.perf_counter() - start, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, required=True, help="folder for inputs and results")
    parser.add_argument("--runs", nargs="+", required=True, metavar="MODE:HxW")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--cuda-inprocess", action="store_true")
    parser.add_argument(
        "--cheap",
        action="store_true",
        help="the tiny test architecture with 19 classes instead of R-50-D8 (how memory grows "
        "with the image, where R-50 would take hours on a CPU)",
    )
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    checkpoint = write_cheap_checkpoint(args.work / "tiny19.pth") if args.cheap else None
    for run in args.runs:
        mode, size = run.split(":")
        height, width = (int(side) for side in size.lower().split("x"))
        if args.cuda_inprocess:
            record = cuda_peak(mode, height, width, args.work)
        else:
            record = measure(mode, height, width, args.work, args.device, checkpoint)
        with open(args.work / "results.jsonl", "a") as file:
            file.write(json.dumps(record) + "\n")
        print(json.dumps(record), flush=True)


if __name__ == "__main__":
    main()
