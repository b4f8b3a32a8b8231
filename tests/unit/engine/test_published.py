"""When eval may put its mIoU next to the published one: zoo weights, whole val, own settings."""

from __future__ import annotations

import dataclasses
import hashlib
from pathlib import Path

import pytest

from isaseg_cli.engine.infer.protocol import resolve_test_spec
from isaseg_cli.engine.published import compare_with_published
from isaseg_cli.zoo.spec import PublishedSpec, WeightsSpec
from tests.helpers import make_tiny_cityscapes_entry

FIGURES = PublishedSpec(miou=70.0, miou_ms_flip=72.5, train_mem_gb=1.0, inference_ms=1.0, fps=1.0)


@pytest.fixture
def weights(tmp_path: Path) -> Path:
    path = tmp_path / "weights.pth"
    path.write_bytes(b"not really a checkpoint, only its bytes count here")
    return path


@pytest.fixture
def entry(weights: Path, tiny_zoo):
    prefix = hashlib.sha256(weights.read_bytes()).hexdigest()[:8]
    entry = make_tiny_cityscapes_entry(
        weights=WeightsSpec(url=f"http://127.0.0.1:9/w-{prefix}.pth", sha256=prefix),
        published=FIGURES,
    )
    tiny_zoo(entry)
    return dataclasses.replace(entry, test=resolve_test_spec(entry))


def compare(entry, weights, **changes):
    options = {"ms_flip": False, "ratios": None, "split": "val", "images": 4, "split_images": 4}
    return compare_with_published(entry, weights, **(options | changes))


def test_the_zoo_weights_on_the_whole_val_split_compare(entry, weights) -> None:
    assert compare(entry, weights).published == 70.0 and compare(entry, weights).reason is None
    assert compare(entry, weights, ms_flip=True).published == 72.5
    same_ratios = compare(entry, weights, ms_flip=True, ratios=entry.test.ms_ratios)
    assert same_ratios.published == 72.5


@pytest.mark.parametrize(
    "changes, reason",
    [
        ({"split": "train"}, "it is for val, not 'train'"),
        ({"images": 3}, "3 of 4 val images (--limit)"),
        ({"interrupted": True}, "interrupted"),
        ({"ms_flip": True, "ratios": (1.0,)}, "test settings differ"),
    ],
)
def test_a_partial_or_different_run_says_why_not(entry, weights, changes, reason) -> None:
    comparison = compare(entry, weights, **changes)
    assert comparison.published is None and reason in (comparison.reason or "")


@pytest.mark.parametrize(
    "test_changes",
    [{"mode": "slide", "crop_size": (32, 32), "stride": (16, 16)}, {"scale": (256, 128)}],
)
def test_other_test_settings_do_not_compare(entry, weights, test_changes) -> None:
    changed = dataclasses.replace(entry, test=dataclasses.replace(entry.test, **test_changes))
    comparison = compare(changed, weights)
    assert comparison.published is None and "test settings differ" in (comparison.reason or "")


def test_other_weights_do_not_compare(entry, weights, tmp_path) -> None:
    other = tmp_path / "retrained.pth"
    other.write_bytes(weights.read_bytes() + b"!")
    comparison = compare(entry, other)
    assert comparison.published is None
    assert f"does not start with {entry.weights.sha256}" in (comparison.reason or "")


def test_an_entry_outside_the_zoo_has_nothing_to_compare(entry, weights) -> None:
    renamed = dataclasses.replace(entry, name="my-run")
    assert "not a zoo entry" in (compare(renamed, weights).reason or "")
