"""engine/infer/prepared: uint8 inputs at the test scale become the normalised batch the network
takes, the same bits as the per-image normalisation of the main-thread path."""

from __future__ import annotations

import numpy as np
import torch

from isaseg_cli.data.image import normalize_bgr
from isaseg_cli.engine.infer.prepared import normalize_batch, to_device


def _images(count: int, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, (21, 34, 3), dtype=np.uint8) for _ in range(count)]


def test_normalize_batch_equals_normalize_bgr_bit_for_bit() -> None:
    images = _images(3)
    batch = normalize_batch(torch.from_numpy(np.stack(images)))
    assert batch.shape == (3, 3, 21, 34) and batch.dtype == torch.float32
    assert batch.is_contiguous()
    for one, image in zip(batch, images, strict=True):
        assert torch.equal(one, normalize_bgr(image)[0])


def test_channels_are_flipped_to_rgb_before_the_mean_is_taken() -> None:
    blue = np.zeros((2, 2, 3), dtype=np.uint8)
    blue[..., 0] = 255  # BGR: pure blue
    batch = normalize_batch(torch.from_numpy(blue[None]))
    assert batch[0, 2].min() > 0 > batch[0, 0].max()  # RGB order: blue is the last channel


def test_to_device_on_the_cpu_takes_arrays_of_any_layout() -> None:
    images = _images(2, seed=1)
    strided = [image[:, ::-1] for image in images]  # not contiguous: copied, not refused
    batch = to_device(strided, torch.device("cpu"))
    expected = torch.cat([normalize_bgr(np.ascontiguousarray(image)) for image in strided])
    assert batch.device.type == "cpu" and torch.equal(batch, expected)
