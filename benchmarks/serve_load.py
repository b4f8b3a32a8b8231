"""Load test of `isaseg serve` against the bare Segmenter on the same images, in one process.

Before each concurrency level the bare Segmenter runs the same number of images, so both see the
same machine load. The server runs in a background thread on 127.0.0.1 (never another host);
clients are threads with one keep-alive connection each. Every level is bounded by a request
count and a time limit.

    python benchmarks/serve_load.py --model isanet_r50_cityscapes --size 128x256 \
        --test-scale 256x128
    python benchmarks/serve_load.py --checkpoint tiny.pth --size 192x256
"""

from __future__ import annotations

import argparse
import dataclasses
import http.client
import json
import os
import threading
import time
from pathlib import Path
from urllib.parse import urlsplit

import cv2
import numpy as np
import torch

from isaseg_cli.engine.infer.segmenter import Segmenter
from isaseg_cli.engine.loading import LoadedModel, entry_classes
from isaseg_cli.engine.random_weights import random_model
from isaseg_cli.serve.app import build_app, serving_in_thread
from isaseg_cli.serve.settings import ServeSettings
from isaseg_cli.zoo.catalog import resolve_entry


def _segmenter(args: argparse.Namespace) -> Segmenter:
    if args.checkpoint:
        return Segmenter.from_checkpoint(args.checkpoint, device=args.device)
    entry = resolve_entry(args.model)
    if args.test_scale:  # a smaller test resize keeps a CPU run within minutes
        width, height = (int(part) for part in args.test_scale.lower().split("x"))
        entry = dataclasses.replace(
            entry, test=dataclasses.replace(entry.test, scale=(width, height))
        )
    device = torch.device(args.device)
    classes, palette = entry_classes(entry)
    model = random_model(entry.model, device)
    return Segmenter(LoadedModel(model, entry, classes, palette, Path("random")), device=device)


def _percentile(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else float("nan")


def bare_throughput(segmenter: Segmenter, images: list[np.ndarray], count: int) -> float:
    """Images per second of ``segmenter(image)`` in a loop, one image at a time."""
    start = time.perf_counter()
    for index in range(count):
        segmenter(images[index % len(images)])
    return count / (time.perf_counter() - start)


def load_level(url: str, bodies: list[bytes], concurrency: int, count: int, limit_s: float) -> dict:
    """``count`` requests (fewer if ``limit_s`` runs out) from ``concurrency`` connections."""
    parts = urlsplit(url)
    latencies: list[float] = []
    errors: dict[str, int] = {}
    lock = threading.Lock()
    issued = [0]
    deadline = time.perf_counter() + limit_s

    def client() -> None:
        connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=limit_s + 60)
        while time.perf_counter() < deadline:
            with lock:
                if issued[0] >= count:
                    break
                index = issued[0]
                issued[0] += 1
            started = time.perf_counter()
            try:
                connection.request(
                    "POST",
                    "/v1/segment",
                    bodies[index % len(bodies)],
                    {"Content-Type": "image/png"},
                )
                response = connection.getresponse()
                response.read()
                status = str(response.status)
            except (OSError, http.client.HTTPException) as exc:
                status = type(exc).__name__
                connection.close()
                connection = http.client.HTTPConnection(parts.hostname, parts.port)
            with lock:
                if status == "200":
                    latencies.append(time.perf_counter() - started)
                else:
                    errors[status] = errors.get(status, 0) + 1
        connection.close()

    threads = [threading.Thread(target=client) for _ in range(concurrency)]
    start = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    seconds = time.perf_counter() - start
    return {
        "concurrency": concurrency,
        "requests": len(latencies) + sum(errors.values()),
        "ok": len(latencies),
        "errors": errors,
        "seconds": round(seconds, 3),
        "images_per_s": round(len(latencies) / seconds, 3),
        "p50_ms": round(_percentile(latencies, 50) * 1000, 1),
        "p90_ms": round(_percentile(latencies, 90) * 1000, 1),
        "p99_ms": round(_percentile(latencies, 99) * 1000, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--model", help="zoo model, random weights")
    source.add_argument("--checkpoint", help="a local checkpoint with its spec in meta")
    parser.add_argument("--size", default="256x512", help="HEIGHTxWIDTH of the test images")
    parser.add_argument("--test-scale", help="WIDTHxHEIGHT: replace the entry's test resize")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--requests", type=int, default=48, help="requests per level")
    parser.add_argument("--time-limit", type=float, default=120, help="seconds per level")
    parser.add_argument("--concurrency", default="1,4,16")
    parser.add_argument("--max-batch", type=int, default=4)
    parser.add_argument("--max-wait-ms", type=float, default=5)
    parser.add_argument("--json-out", type=Path)
    args = parser.parse_args()
    height, width = (int(part) for part in args.size.lower().split("x"))
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (height, width, 3), dtype=np.uint8) for _ in range(4)]
    bodies = [cv2.imencode(".png", image)[1].tobytes() for image in images]

    segmenter = _segmenter(args)
    settings = ServeSettings(
        max_batch=args.max_batch, max_wait_ms=args.max_wait_ms, max_queue=256, timeout_s=600
    )
    levels = []
    with serving_in_thread(build_app(segmenter, settings)) as url:
        load_level(url, bodies, 1, 2, args.time_limit)  # warm-up: the server's own first call
        for concurrency in (int(c) for c in args.concurrency.split(",")):
            # The bare run right before each level, so both see the same machine load.
            bare = bare_throughput(segmenter, images, args.requests)
            level = load_level(url, bodies, concurrency, args.requests, args.time_limit)
            level["bare_images_per_s"] = round(bare, 3)
            level["vs_bare"] = round(level["images_per_s"] / bare, 3)
            levels.append(level)
    result = {
        "model": segmenter.loaded.entry.name,
        "size": [height, width],
        "test_scale": list(segmenter.test.scale) if segmenter.test.scale else None,
        "device": str(segmenter.device),
        "torch_threads": torch.get_num_threads(),
        "load_average": list(os.getloadavg()),
        "levels": levels,
    }
    print("conc  ok  errors  images/s  bare/s  vs bare  p50 ms  p90 ms  p99 ms")
    for level in levels:
        print(
            f"{level['concurrency']:>4} {level['ok']:>3} {sum(level['errors'].values()):>7} "
            f"{level['images_per_s']:>9.2f} {level['bare_images_per_s']:>7.2f} "
            f"{level['vs_bare']:>8.3f} {level['p50_ms']:>7.1f} "
            f"{level['p90_ms']:>7.1f} {level['p99_ms']:>7.1f}"
        )
    if args.json_out:
        args.json_out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
