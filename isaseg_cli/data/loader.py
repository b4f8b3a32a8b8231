"""The torch Dataset over checked samples, and the iteration-based training loader
(docs/FAITHFULNESS.md#training-schedule).

Reproducibility: the sampler hands every index out with its own seed, derived from (run seed,
epoch, rank, position). A sample's augmentation therefore depends neither on the number of workers
nor on which worker loads it, and a resumed run can skip straight to its iteration.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from isaseg_cli.data.base import Sample, load_label
from isaseg_cli.data.image import read_image_bgr
from isaseg_cli.data.image_header import DEFAULT_MAX_PIXELS
from isaseg_cli.errors import DatasetNotFoundError, InputError

Transform = Callable[
    [np.ndarray, np.ndarray, np.random.Generator], tuple[torch.Tensor, torch.Tensor]
]


@dataclass(frozen=True, slots=True)
class EvalRecord:
    """An untransformed sample for evaluation: BGR uint8 HxWx3 image, uint8 HxW label."""

    image: np.ndarray
    label: np.ndarray
    image_path: Path
    label_path: Path


class SegmentationDataset(Dataset):
    """Loads samples; with a ``transform`` it yields training pairs, without one ``EvalRecord``s.

    Training items are addressed by ``(index, seed)`` pairs from ``SeededSampler``; the seed makes
    the augmentation of that draw reproducible. A plain ``int`` index draws a fresh seed.

    Args:
        samples: from ``list_samples``.
        transform: e.g. ``TrainTransform(spec)``.
        reduce_zero_label: ADE20K's label rule, applied on load (once, for training and evaluation).
        num_classes: when given, labels are checked to hold only 0..num_classes-1 and 255.
        max_pixels: images whose header announces more pixels are refused before decoding.
    """

    def __init__(
        self,
        samples: Sequence[Sample],
        transform: Transform | None = None,
        reduce_zero_label: bool = False,
        num_classes: int | None = None,
        max_pixels: int = DEFAULT_MAX_PIXELS,
    ) -> None:
        self.samples = list(samples)
        self.max_pixels = max_pixels
        self.transform = transform
        self.reduce_zero_label = reduce_zero_label
        self.num_classes = num_classes

    def __len__(self) -> int:
        return len(self.samples)

    def load(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """The BGR image and the uint8 label of sample ``index``, checked to have the same size.

        Raises:
            InputError: the image is too large or cannot be decoded.
            DatasetNotFoundError: the label cannot be read, holds a bad value or has another size.
        """
        sample = self.samples[index]
        image = read_image_bgr(sample.image_path, self.max_pixels)
        label = load_label(sample.label_path, self.reduce_zero_label, self.num_classes)
        if image.shape[:2] != label.shape:
            raise DatasetNotFoundError(
                f"label {sample.label_path} is {label.shape[1]}x{label.shape[0]} but image "
                f"{sample.image_path} is {image.shape[1]}x{image.shape[0]}"
            )
        return image, label

    def __getitem__(self, key: int | tuple[int, int]) -> Any:
        index, seed = key if isinstance(key, tuple) else (key, None)
        image, label = self.load(index)
        if self.transform is None:
            sample = self.samples[index]
            return EvalRecord(image, label, sample.image_path, sample.label_path)
        return self.transform(image, label, np.random.default_rng(seed))


def collate_records(batch: list[EvalRecord]) -> list[EvalRecord]:
    """A DataLoader ``collate_fn`` for evaluation: keeps the records (sizes differ) as a list."""
    return batch


class SeededSampler(DistributedSampler):
    """torch's DistributedSampler (shuffled per epoch from ``seed``) that yields ``(index, seed)``.

    ``skip`` positions at the start of the current epoch are left out, so a resumed run continues
    the same sequence without loading the skipped samples.
    """

    def __init__(self, dataset: Dataset, num_replicas: int, rank: int, seed: int) -> None:
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=True, seed=seed)
        self.skip = 0

    def __iter__(self) -> Iterator[tuple[int, int]]:  # type: ignore[override]
        for position, index in enumerate(super().__iter__()):
            if position >= self.skip:
                # SeedSequence wants non-negative entropy; the mask keeps any int seed usable.
                entropy = (self.seed & 0xFFFFFFFFFFFFFFFF, self.epoch, self.rank, position)
                yield index, int(np.random.SeedSequence(entropy).generate_state(1)[0])


def build_train_loader(
    dataset: SegmentationDataset,
    batch_size: int,
    workers: int,
    seed: int,
    *,
    rank: int = 0,
    world_size: int = 1,
    pin_memory: bool = False,
) -> DataLoader:
    """A shuffled loader that drops the last incomplete batch, as mmseg 0.x
    (docs/FAITHFULNESS.md#training-schedule).

    Args:
        dataset: a ``SegmentationDataset`` with a transform.
        batch_size: images per process (not the total over all processes).
        workers: loader worker processes per process (0 = load in the main process).
        seed: the run seed; samples get their augmentation seeds from it.
        rank, world_size: this process's shard of the samples (``DistInfo`` under torchrun).
        pin_memory: pin batches for faster host-to-GPU copies.

    Raises:
        InputError: the split has fewer images per process than ``batch_size``.
    """
    sampler = SeededSampler(dataset, num_replicas=world_size, rank=rank, seed=seed)
    if sampler.num_samples < batch_size:
        raise InputError(
            f"the split has {len(dataset)} images, too few for {batch_size} images per batch on "
            f"each of {world_size} process(es)"
        )
    return DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=sampler,
        num_workers=workers,
        pin_memory=pin_memory,
        drop_last=True,
        persistent_workers=workers > 0,
        worker_init_fn=_limit_worker_threads,
    )


def iterate_forever(loader: DataLoader, start_iter: int = 0) -> Iterator[Any]:
    """Batches from ``loader`` endlessly, epoch after epoch, starting at iteration ``start_iter``.

    The epoch and the position in it follow from ``start_iter``, so a run resumed at iteration k
    sees the same batches as an uninterrupted run from iteration k on.
    """
    sampler = loader.sampler
    if not isinstance(sampler, SeededSampler):
        raise TypeError("iterate_forever needs a loader from build_train_loader")
    epoch, offset = divmod(start_iter, len(loader))
    sampler.skip = offset * loader.batch_size  # type: ignore[operator]
    while True:
        sampler.set_epoch(epoch)
        yield from loader
        sampler.skip = 0
        epoch += 1


def _limit_worker_threads(worker_id: int) -> None:
    # Each worker already is one of several processes: OpenCV's own thread pool would oversubscribe
    # the cores (mmengine disables it for the same reason).
    cv2.setNumThreads(0)
