"""evaluate(): oracle predictions score 100 in every dataset layout, numbers match an independent
computation whatever the worker count, shards cover the split, ms+flip merges like infer_scores,
Ctrl-C returns the partial result, and predictions are saved in both formats. The two-process
run is in tests/e2e/test_cli_eval.py (torchrun)."""

from __future__ import annotations

import dataclasses
import hashlib
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from PIL import Image

from isaseg_cli.data.datasets import list_samples
from isaseg_cli.data.synthetic import write_synthetic_dataset
from isaseg_cli.engine import evaluate as evaluate_module
from isaseg_cli.engine.evaluate import evaluate, prediction_paths, shard
from isaseg_cli.engine.infer.pipeline import infer_scores
from isaseg_cli.engine.loading import load_model
from isaseg_cli.errors import DatasetNotFoundError, InputError
from isaseg_cli.zoo.classes import CITYSCAPES_TRAIN_ID_TO_ID
from isaseg_cli.zoo.spec import DataSpec, TestSpec, ZooEntry
from tests.helpers import (
    TINY,
    assert_masks_match_except_ties,
    make_tiny_entry,
    reference_tolerance,
    top2_margin,
)

CPU = torch.device("cpu")
# dataset -> the number of classes the model predicts (synthetic labels use the first 5 or 6)
LAYOUTS = {"cityscapes": 19, "ade20k": 150, "voc12aug": 21, "custom": 5}


def layout_entry(kind: str) -> ZooEntry:
    entry = make_tiny_entry()
    num_classes = LAYOUTS[kind]
    data = DataSpec(dataset=kind, reduce_zero_label=kind == "ade20k")
    if kind == "custom":
        data = entry.data
    return dataclasses.replace(
        entry, model=dataclasses.replace(entry.model, num_classes=num_classes), data=data
    )


def image_key(image: np.ndarray) -> str:
    return hashlib.sha1(image.tobytes()).hexdigest()


def truths(samples: list, kind: str) -> dict[str, np.ndarray]:
    """Image -> the true class map, from the raw files and each release's own convention."""
    table = {}
    for sample in samples:
        raw = np.array(Image.open(sample.label_path)).astype(np.int64)
        if kind == "ade20k":  # stored 0 = unlabelled, class c stored as c + 1
            truth = np.where(raw == 0, 0, raw - 1)
        else:
            truth = np.where(raw == 255, 0, raw)
        table[image_key(cv2.imread(str(sample.image_path), cv2.IMREAD_COLOR))] = truth
    return table


def oracle(table: dict[str, np.ndarray], num_classes: int, noise: float = 0.0):
    """A stand-in for infer_scores: one-hot scores of the truth, with a share of pixels changed
    (deterministically per image) when ``noise`` > 0."""

    def scores(model, image_bgr, test, **kwargs) -> torch.Tensor:
        truth = table[image_key(image_bgr)]
        if noise:
            rng = np.random.default_rng(int(image_key(image_bgr)[:8], 16))
            changed = rng.random(truth.shape) < noise
            truth = np.where(changed, rng.integers(0, num_classes, truth.shape), truth)
        one_hot = torch.nn.functional.one_hot(torch.from_numpy(truth), num_classes)
        return one_hot.permute(2, 0, 1).unsqueeze(0).float()  # (1, K, H, W)

    return scores


def reference_miou(pairs: list[tuple[np.ndarray, np.ndarray]], num_classes: int) -> float:
    """FAITHFULNESS.md#metrics computed directly with numpy: dataset-level intersections and
    unions."""
    intersect = np.zeros(num_classes)
    union = np.zeros(num_classes)
    for pred, label in pairs:
        kept = label != 255
        pred, label = pred[kept], label[kept]
        for c in range(num_classes):
            intersect[c] += np.sum((pred == c) & (label == c))
            union[c] += np.sum((pred == c) | (label == c))
    with np.errstate(invalid="ignore"):
        return float(np.nanmean(intersect / union) * 100)


@pytest.fixture(scope="module")
def datasets(tmp_path_factory: pytest.TempPathFactory) -> dict[str, list]:
    """Synthetic val splits (4 images of 64x96) in each real layout."""
    found = {}
    for kind in LAYOUTS:
        root = tmp_path_factory.mktemp(kind)
        write_synthetic_dataset(kind, root, num_classes=5 if kind == "custom" else 6)
        found[kind] = list_samples(layout_entry(kind).data, root, "val")
    return found


@pytest.mark.parametrize("kind", list(LAYOUTS))
def test_oracle_scores_100_in_every_layout(kind, datasets, monkeypatch) -> None:
    samples = datasets[kind]
    monkeypatch.setattr(
        evaluate_module, "infer_scores", oracle(truths(samples, kind), LAYOUTS[kind])
    )
    result = evaluate(torch.nn.Identity(), layout_entry(kind), samples, device=CPU)
    assert result.images == 4 and not result.interrupted
    assert result.metrics.miou == 100.0 and result.metrics.aacc == 100.0


def test_ade20k_labels_are_reduced_exactly_once(datasets, monkeypatch) -> None:
    samples = datasets["ade20k"]
    monkeypatch.setattr(evaluate_module, "infer_scores", oracle(truths(samples, "ade20k"), 150))
    entry = layout_entry("ade20k")
    unreduced = dataclasses.replace(
        entry, data=dataclasses.replace(entry.data, reduce_zero_label=False)
    )
    result = evaluate(torch.nn.Identity(), unreduced, samples, device=CPU)
    # Unreduced, every class pixel is one above the oracle's class; only stored zeros still agree.
    raw = np.concatenate([np.array(Image.open(s.label_path)).ravel() for s in samples])
    assert result.metrics.aacc == pytest.approx(100 * np.mean(raw == 0))
    assert result.metrics.aacc < 5


def test_metrics_match_numpy_and_do_not_depend_on_workers(datasets, monkeypatch) -> None:
    samples = datasets["custom"]
    table = truths(samples, "custom")
    scores = oracle(table, 5, noise=0.3)
    monkeypatch.setattr(evaluate_module, "infer_scores", scores)
    pairs = []
    for sample in samples:
        image = cv2.imread(str(sample.image_path), cv2.IMREAD_COLOR)
        pred = scores(None, image, None).argmax(1)[0].numpy()
        pairs.append((pred, np.array(Image.open(sample.label_path))))
    entry = layout_entry("custom")
    serial = evaluate(torch.nn.Identity(), entry, samples, device=CPU, workers=0)
    parallel = evaluate(torch.nn.Identity(), entry, samples, device=CPU, workers=2)
    assert serial.metrics == parallel.metrics
    assert 20 < serial.metrics.miou < 95
    assert serial.metrics.miou == pytest.approx(reference_miou(pairs, 5), abs=1e-9)


def test_shards_cover_every_sample_once(datasets) -> None:
    samples = datasets["custom"] * 3  # 12
    for world_size in (1, 2, 3, 5):
        parts = [shard(samples, rank, world_size) for rank in range(world_size)]
        assert sorted(sum(parts, []), key=str) == sorted(samples, key=str)
        assert max(map(len, parts)) - min(map(len, parts)) <= 1


def test_interrupt_returns_the_images_done_so_far(datasets, monkeypatch) -> None:
    samples = datasets["custom"]
    scores = oracle(truths(samples, "custom"), 5, noise=0.3)
    calls = []

    def interrupted_on_third(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return scores(*args, **kwargs)

    monkeypatch.setattr(evaluate_module, "infer_scores", interrupted_on_third)
    entry = layout_entry("custom")
    result = evaluate(torch.nn.Identity(), entry, samples, device=CPU)
    monkeypatch.setattr(evaluate_module, "infer_scores", scores)
    first_two = evaluate(torch.nn.Identity(), entry, samples[:2], device=CPU)
    assert result.interrupted and result.images == 2
    assert result.metrics == first_two.metrics


def test_progress_reports_each_image_with_the_running_miou(datasets, monkeypatch) -> None:
    samples = datasets["custom"]
    monkeypatch.setattr(evaluate_module, "infer_scores", oracle(truths(samples, "custom"), 5, 0.3))
    events = []
    result = evaluate(
        torch.nn.Identity(), layout_entry("custom"), samples, device=CPU, on_progress=events.append
    )
    assert [(e.task, e.completed, e.total) for e in events] == [("eval", i, 4) for i in range(5)]
    assert events[-1].info["mIoU"] == result.metrics.miou and events[-1].info["img/s"] > 0


def test_ms_flip_merge_equals_infer_scores_and_the_fixture(
    tiny_checkpoint, expected, tmp_path
) -> None:
    """A one-image dataset: the fixture image labelled with mmseg's ms+flip mask (1.x view rule),
    its near-tied pixels (which another CPU may decide either way) marked ignore."""
    for folder in ("images/val", "labels/val"):
        (tmp_path / folder).mkdir(parents=True)
    (tmp_path / "images/val/tiny.png").write_bytes((TINY / "image.png").read_bytes())
    probs = expected["tta_prob"]
    tied = (top2_margin(probs) <= reference_tolerance(probs))[0]
    label = np.where(tied, 255, expected["tta_pred"][0]).astype(np.uint8)
    Image.fromarray(label).save(tmp_path / "labels/val/tiny.png")
    loaded = load_model(checkpoint=tiny_checkpoint)
    entry = dataclasses.replace(loaded.entry, test=TestSpec(ms_rule="image"))
    samples = list_samples(entry.data, tmp_path, "val")
    result = evaluate(
        loaded.model, entry, samples, device=CPU, ms_flip=True, save_dir=tmp_path / "out"
    )
    assert result.metrics.miou == 100.0
    saved = np.array(Image.open(tmp_path / "out/tiny.png"))
    assert_masks_match_except_ties(saved[None], expected["tta_pred"], probs)
    # Two ratios: the saved mask is the argmax of infer_scores' merge, not the single-scale one.
    evaluate(
        loaded.model,
        entry,
        samples,
        device=CPU,
        ms_flip=True,
        ratios=(0.5, 1.5),
        save_dir=tmp_path / "two",
    )
    image = cv2.imread(str(TINY / "image.png"), cv2.IMREAD_COLOR)
    merged = infer_scores(loaded.model, image, entry.test, ms_flip=True, ratios=(0.5, 1.5))
    np.testing.assert_array_equal(
        np.array(Image.open(tmp_path / "two/tiny.png")), merged.argmax(1)[0].numpy()
    )


def test_cityscapes_predictions_saved_as_label_ids(datasets, monkeypatch, tmp_path) -> None:
    samples = datasets["cityscapes"]
    monkeypatch.setattr(evaluate_module, "infer_scores", oracle(truths(samples, "cityscapes"), 19))
    evaluate(
        torch.nn.Identity(),
        layout_entry("cityscapes"),
        samples,
        device=CPU,
        save_dir=tmp_path,
        save_format="labelids",
    )
    for sample in samples:
        city = sample.image_path.parent.name
        saved = np.array(Image.open(tmp_path / city / sample.image_path.name))
        stem = sample.image_path.name.removesuffix("_leftImg8bit.png")
        gt_ids = np.array(Image.open(sample.label_path.with_name(f"{stem}_gtFine_labelIds.png")))
        train_ids = np.array(Image.open(sample.label_path))
        labelled = train_ids != 255
        np.testing.assert_array_equal(saved[labelled], gt_ids[labelled])
        assert set(np.unique(saved)) <= set(CITYSCAPES_TRAIN_ID_TO_ID)


def test_index_predictions_keep_relative_names_and_palette(datasets, monkeypatch, tmp_path) -> None:
    samples = datasets["custom"]
    table = truths(samples, "custom")
    monkeypatch.setattr(evaluate_module, "infer_scores", oracle(table, 5))
    palette = [(10 * i, 20 * i, 30 * i) for i in range(5)]
    evaluate(
        torch.nn.Identity(),
        layout_entry("custom"),
        samples,
        device=CPU,
        save_dir=tmp_path,
        palette=palette,
    )
    assert prediction_paths(samples, tmp_path) == [tmp_path / s.image_path.name for s in samples]
    for sample in samples:
        with Image.open(tmp_path / sample.image_path.name) as saved:
            assert saved.mode == "P" and saved.getpalette()[:15] == list(sum(palette, ()))
            label = np.array(Image.open(sample.label_path))
            kept = label != 255
            np.testing.assert_array_equal(np.array(saved)[kept], label[kept])


def test_label_ids_refused_for_other_datasets(datasets) -> None:
    with pytest.raises(InputError, match="labelids"):
        evaluate(
            torch.nn.Identity(),
            layout_entry("custom"),
            datasets["custom"],
            device=CPU,
            save_dir=Path("unused"),
            save_format="labelids",
        )


def test_worker_errors_keep_their_one_line_message(datasets, tmp_path) -> None:
    sample = datasets["custom"][0]
    bad_label = tmp_path / "bad.png"
    Image.fromarray(np.full((64, 96), 7, np.uint8)).save(bad_label)
    bad_image = tmp_path / "bad_image.png"
    bad_image.write_bytes(b"not an image")
    entry = layout_entry("custom")
    with pytest.raises(DatasetNotFoundError, match="bad.png holds value 7") as label_error:
        evaluate(
            torch.nn.Identity(),
            entry,
            [sample._replace(label_path=bad_label)],
            device=CPU,
            workers=1,
        )
    with pytest.raises(InputError, match="bad_image.png") as image_error:
        evaluate(
            torch.nn.Identity(),
            entry,
            [sample._replace(image_path=bad_image)],
            device=CPU,
            workers=1,
        )
    assert "Traceback" not in str(label_error.value) + str(image_error.value)
