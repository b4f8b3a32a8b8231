"""Throughput of `isaseg predict`'s run loop over a folder against the bare forward, per --workers.

For each worker count the whole loop runs (`plan_predict` + `run_plan`: decoding, the resize and
normalisation, batching, the forward, PNG encoding, atomic writes) on a folder of generated PNGs;
"bare" is `Segmenter.segment_prepared` on the same images already decoded and resized, as
`isaseg benchmark` measures compute alone. With workers, each count runs twice:
the workers also resize to the test scale ("workers"), or they only decode and the main thread
resizes ("main", the loop before `segment_prepared`). `--mock-forward-ms` replaces the forward
(only it) by a wait of that many ms per batch that releases the GIL, as a CUDA forward does, to
show on a CPU whether decoding, resizing and writing hide behind a device's compute; everything
else stays real.

    python benchmarks/predict_throughput.py --model isanet_r50-d8_4xb2-80k_cityscapes-512x1024 \
        --size 256x512 --test-scale 512x256 --images 12 --workers 0,2
    python benchmarks/predict_throughput.py --checkpoint tiny.pth --size 512x1024 --images 32 \
        --test-scale 2048x1024 --mock-forward-ms 40 --workers 0,1,2 --device cpu
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import torch

from isaseg_cli.data.image import normalize_bgr
from isaseg_cli.engine.infer.confidence import SegmentationResult, from_prediction
from isaseg_cli.engine.infer.predict import run_plan
from isaseg_cli.engine.infer.predict_io import decode_images
from isaseg_cli.engine.infer.predict_plan import plan_predict
from isaseg_cli.engine.infer.protocol import prepare_image
from isaseg_cli.engine.infer.segmenter import Segmenter
from isaseg_cli.engine.loading import LoadedModel, entry_classes, load_model
from isaseg_cli.engine.random_weights import random_model
from isaseg_cli.zoo.catalog import resolve_entry
from isaseg_cli.zoo.spec import TestSpec


def _segmenter(args: argparse.Namespace) -> Segmenter:
    device = torch.device(args.device)
    if args.checkpoint:
        loaded = load_model(checkpoint=args.checkpoint)
    else:
        entry = resolve_entry(args.model)
        classes, palette = entry_classes(entry)
        model = random_model(entry.model, device)
        loaded = LoadedModel(model, entry, classes, palette, Path("random"))
    if args.test_scale:  # a smaller test resize keeps a CPU run within minutes
        width, height = (int(part) for part in args.test_scale.lower().split("x"))
        test = dataclasses.replace(loaded.entry.test, scale=(width, height))
        loaded = dataclasses.replace(loaded, entry=dataclasses.replace(loaded.entry, test=test))
    return Segmenter(loaded, device=device, precision=args.precision)


class MockForward:
    """A segmenter whose forward is a GIL-free wait of ``ms`` per batch (a stand-in for a GPU);
    the host work around it is real: ``segment_batch`` resizes, normalises and stacks in this
    thread as ``Segmenter.segment_batch`` does, ``segment_prepared`` only stacks the resized
    uint8 inputs from the workers (on a GPU their normalisation is device time: in the wait).
    Its masks are a cheap function of the image, so PNG encoding has real content."""

    def __init__(self, real: Segmenter, ms: float) -> None:
        self.real, self.seconds = real, ms / 1000
        self.classes, self.palette = real.classes, real.palette
        self.num_classes = real.num_classes

    def prepared_test(self) -> TestSpec | None:
        return self.real.prepared_test()

    def segment_batch(self, images: list[np.ndarray], **_: object) -> list[SegmentationResult]:
        normalized = [normalize_bgr(prepare_image(image, self.real.test)) for image in images]
        torch.cat(normalized)
        time.sleep(self.seconds)
        return self._results(images)

    def segment_prepared(
        self, images: list[np.ndarray], inputs: list[np.ndarray], **_: object
    ) -> list[SegmentationResult]:
        torch.stack([torch.from_numpy(one) for one in inputs])
        time.sleep(self.seconds)
        return self._results(images)

    def _results(self, images: list[np.ndarray]) -> list[SegmentationResult]:
        masks = [(image[..., 1] // 64).astype(np.uint8) for image in images]
        return [from_prediction(mask, self.num_classes) for mask in masks]


class MainThreadPrepare:
    """``segmenter`` without ``prepared_test``: workers only decode, as before segment_prepared."""

    def __init__(self, segmenter: Segmenter | MockForward) -> None:
        self.segment_batch = segmenter.segment_batch
        self.confidence = getattr(segmenter, "confidence", None)
        self.classes, self.palette = segmenter.classes, segmenter.palette
        self.num_classes = segmenter.num_classes


def _write_folder(folder: Path, count: int, height: int, width: int) -> list[np.ndarray]:
    """Smooth random street-like images: PNG decode and encode cost about what photos cost."""
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    images = []
    for index in range(count):
        small = rng.integers(0, 256, (height // 16, width // 16, 3), dtype=np.uint8)
        image = cv2.resize(small, (width, height), interpolation=cv2.INTER_CUBIC)
        image = cv2.add(image, rng.integers(0, 12, image.shape, dtype=np.uint8))
        cv2.imwrite(str(folder / f"{index:05d}.png"), image)
        images.append(image)
    return images


def _bare(segmenter: Segmenter | MockForward, images: list[np.ndarray], batch: int) -> float:
    test = segmenter.prepared_test()
    assert test is not None, "the benchmark runs single-scale inference"
    inputs = [prepare_image(image, test) for image in images]
    segmenter.segment_prepared(images[:batch], inputs[:batch])  # warm-up
    start = time.perf_counter()
    for first in range(0, len(images), batch):
        segmenter.segment_prepared(images[first : first + batch], inputs[first : first + batch])
    return len(images) / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="isanet_r50-d8_4xb2-80k_cityscapes-512x1024")
    parser.add_argument("--checkpoint", type=Path)
    parser.add_argument("--test-scale", help="override the entry's test scale, WxH")
    parser.add_argument("--size", default="256x512", help="image size, HxW")
    parser.add_argument("--images", type=int, default=12)
    parser.add_argument("--batch-size", type=int, default=1)
    parser.add_argument("--workers", default="0,2", help="comma-separated worker counts")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--precision", default="fp32")
    parser.add_argument("--mock-forward-ms", type=float)
    parser.add_argument("--json-out", type=Path)
    args = parser.parse_args()
    height, width = (int(part) for part in args.size.lower().split("x"))
    segmenter: Segmenter | MockForward = _segmenter(args)
    if args.mock_forward_ms is not None:
        segmenter = MockForward(segmenter, args.mock_forward_ms)
    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(scratch) / "in"
        images = _write_folder(folder, args.images, height, width)
        bare = _bare(segmenter, images, args.batch_size)
        # The worker processes come from a fork server, started once per process (it imports
        # torch): timed apart, so the rows compare the steady state.
        start = time.perf_counter()
        list(decode_images(sorted(folder.iterdir())[:1], workers=1, max_pixels=10**9))
        print(f"worker start-up, once per process: {time.perf_counter() - start:.1f} s")
        counts = [int(part) for part in args.workers.split(",")]
        runs = [(n, where) for n in counts for where in (("workers", "main") if n else ("main",))]
        for row, (workers, where) in enumerate(runs):
            plan = plan_predict([folder], out=Path(scratch) / f"out{row}")
            result = run_plan(
                segmenter if where == "workers" else MainThreadPrepare(segmenter),  # type: ignore[arg-type]
                plan,
                batch_size=args.batch_size,
                workers=workers,
            )
            assert not result.failures and result.images == args.images, result.failures
            rows.append(
                {
                    "workers": workers,
                    "prepared_in": where,
                    "images_per_s": round(result.images_per_s, 3),
                    "bare_images_per_s": round(bare, 3),
                    "of_bare": round(result.images_per_s / bare, 3),
                    "input_wait": round(result.input_wait, 3),
                }
            )
            print(rows[-1], flush=True)  # each row as it comes: a long run keeps what it measured
    print("| workers | prepared in | images/s | bare images/s | predict / bare | model waited |")
    print("|---|---|---|---|---|---|")
    for row in rows:
        print(
            f"| {row['workers']} | {row['prepared_in']} | {row['images_per_s']:.2f} "
            f"| {row['bare_images_per_s']:.2f} "
            f"| {row['of_bare']:.2f} | {row['input_wait']:.0%} |"
        )
    if args.json_out:
        payload = {"args": {k: str(v) for k, v in vars(args).items()}, "rows": rows}
        args.json_out.write_text(json.dumps(payload, indent=2))


if __name__ == "__main__":
    main()
