"""Writes an R-50-D8 random-weight checkpoint whose test pipeline keeps a 512x1024 image at
512x1024 (test scale 1024x512), and a smooth 512x1024 test image, for benchmarks/onnx_cpu.sh."""

import dataclasses
import sys
from pathlib import Path

import cv2
import numpy as np
import torch

from isaseg_cli.engine.checkpoint import build_meta, model_state_dict, save_checkpoint
from isaseg_cli.engine.loading import entry_classes
from isaseg_cli.engine.random_weights import random_model
from isaseg_cli.zoo.catalog import resolve_entry

out = Path(sys.argv[1])
out.mkdir(parents=True, exist_ok=True)
entry = resolve_entry("isanet_r50-d8_4xb2-80k_cityscapes-512x1024")
test = dataclasses.replace(entry.test, scale=(1024, 512))
entry = dataclasses.replace(
    entry, name="r50-random-512x1024", weights=None, published=None, test=test
)
model = random_model(entry.model, torch.device("cpu"), with_aux=True)
classes, palette = entry_classes(entry)
meta = build_meta(entry, classes, palette)
save_checkpoint(out / "r50.pth", {"meta": meta, "state_dict": model_state_dict(model)})
y, x = np.mgrid[0:512, 0:1024]
image = np.stack([x * 255 / 1023, y * 255 / 511, (x + y) % 256], -1).astype(np.uint8)
noise = np.random.default_rng(0).integers(0, 40, image.shape, dtype=np.uint8)
cv2.imwrite(str(out / "street.png"), cv2.GaussianBlur(image + noise, (5, 5), 0))
