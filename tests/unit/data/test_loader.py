"""SegmentationDataset records and checks, and the seeded, resumable training loader."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from isaseg_cli.data.datasets import list_samples, load_label
from isaseg_cli.data.loader import (
    EvalRecord,
    SeededSampler,
    SegmentationDataset,
    build_train_loader,
    iterate_forever,
)
from isaseg_cli.data.synthetic import custom_classes, write_synthetic_dataset
from isaseg_cli.data.transforms import TrainTransform
from isaseg_cli.errors import DatasetNotFoundError, InputError
from isaseg_cli.zoo.spec import DataSpec

SPEC = DataSpec(
    dataset="custom",
    crop_size=(24, 32),
    train_scale=(48, 32),
    img_suffix=".png",
    classes=custom_classes(),
)


@pytest.fixture(scope="module")
def samples(tmp_path_factory: pytest.TempPathFactory) -> list:
    root = write_synthetic_dataset("custom", tmp_path_factory.mktemp("custom"), num_images=5)
    return list_samples(SPEC, root, "train")


def train_dataset(samples: list) -> SegmentationDataset:
    return SegmentationDataset(samples, TrainTransform(SPEC), num_classes=4)


def test_eval_records_hold_the_untransformed_image_and_label(samples: list) -> None:
    record = SegmentationDataset(samples, num_classes=4)[2]
    assert isinstance(record, EvalRecord)
    assert record.image_path == samples[2].image_path and record.label_path == samples[2].label_path
    assert record.image.dtype == np.uint8 and record.image.shape == (64, 96, 3)
    np.testing.assert_array_equal(record.label, load_label(samples[2].label_path))


def test_ade20k_labels_are_reduced_on_load(tmp_path: Path) -> None:
    root = write_synthetic_dataset("ade20k", tmp_path / "ade", num_images=1, num_classes=5)
    sample = list_samples(DataSpec(dataset="ade20k"), root, "val")[0]
    record = SegmentationDataset([sample], reduce_zero_label=True, num_classes=5)[0]
    raw = np.array(Image.open(sample.label_path))
    np.testing.assert_array_equal(record.label, np.where(raw == 0, 255, raw.astype(int) - 1))


def test_label_of_another_size_names_both_files(samples: list, tmp_path: Path) -> None:
    small = tmp_path / "small.png"
    Image.fromarray(np.zeros((10, 10), np.uint8)).save(small)
    dataset = SegmentationDataset([samples[0]._replace(label_path=small)])
    with pytest.raises(DatasetNotFoundError, match="small.png") as info:
        dataset[0]
    assert str(samples[0].image_path) in str(info.value)


def test_bad_label_value_is_caught_on_load(samples: list) -> None:
    with pytest.raises(DatasetNotFoundError, match="holds value 3"):
        SegmentationDataset(samples, num_classes=3)[0]


def test_training_items_are_reproducible_from_their_seed(samples: list) -> None:
    dataset = train_dataset(samples)
    image, mask = dataset[(1, 123)]
    assert image.shape == (3, 24, 32) and mask.shape == (24, 32) and mask.dtype == torch.int64
    again, other = dataset[(1, 123)], dataset[(1, 124)]
    assert torch.equal(image, again[0]) and torch.equal(mask, again[1])
    assert not torch.equal(image, other[0])


def batches(loader, count: int, start_iter: int = 0) -> list[tuple[torch.Tensor, torch.Tensor]]:
    iterator = iterate_forever(loader, start_iter)
    return [next(iterator) for _ in range(count)]


def same(first: list, second: list) -> bool:
    return len(first) == len(second) and all(
        torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
        for a, b in zip(first, second, strict=True)
    )


def test_loader_batches_are_reproducible_and_depend_on_the_seed(samples: list) -> None:
    dataset = train_dataset(samples)
    first = batches(build_train_loader(dataset, 2, 0, seed=1), 3)
    again = batches(build_train_loader(dataset, 2, 0, seed=1), 3)
    other = batches(build_train_loader(dataset, 2, 0, seed=2), 3)
    assert first[0][0].shape == (2, 3, 24, 32) and first[0][1].shape == (2, 24, 32)
    assert same(first, again)
    assert not any(torch.equal(a[0], b[0]) for a, b in zip(first, other, strict=True))


def test_worker_processes_give_the_same_batches_as_the_main_process(samples: list) -> None:
    dataset = train_dataset(samples)
    main = batches(build_train_loader(dataset, 2, 0, seed=5), 3)
    workers = batches(build_train_loader(dataset, 2, 2, seed=5), 3)
    assert same(main, workers)


def test_resuming_at_an_iteration_continues_the_same_sequence(samples: list) -> None:
    dataset = train_dataset(samples)
    loader = build_train_loader(dataset, 2, 0, seed=3)
    assert len(loader) == 2  # 5 images, batch 2, last incomplete batch dropped
    full = batches(loader, 7)
    resumed = batches(build_train_loader(dataset, 2, 0, seed=3), 4, 3)
    assert same(full[3:], resumed)
    # Epochs reshuffle: the two epochs' first batches differ.
    assert not torch.equal(full[0][0], full[2][0])


def test_sampler_shards_ranks_disjointly_with_distinct_seeds(samples: list) -> None:
    dataset = train_dataset(samples)
    ranks = [list(SeededSampler(dataset, num_replicas=2, rank=r, seed=0)) for r in range(2)]
    indices = [index for rank in ranks for index, _ in rank]
    assert sorted(indices)[:5] == list(range(5)) and len(indices) == 6  # padded to 2 x 3
    seeds = [seed for rank in ranks for _, seed in rank]
    assert len(set(seeds)) == len(seeds)


def test_a_split_smaller_than_the_batch_is_refused(samples: list) -> None:
    with pytest.raises(InputError, match="too few"):
        build_train_loader(train_dataset(samples), 6, 0, seed=0)
