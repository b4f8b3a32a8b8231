"""The confusion-matrix metric against an independent numpy transcription of the rules of
docs/FAITHFULNESS.md#metrics."""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from PIL import Image

from isaseg_cli.data.datasets import load_label
from isaseg_cli.engine.metrics import ConfusionMatrix, MetricsResult


def reference(pairs: list[tuple[np.ndarray, np.ndarray]], k: int) -> dict[str, np.ndarray]:
    """mmseg's intersect_and_union summed over images, then total_area_to_metrics (in percent)."""

    def hist(values: np.ndarray) -> np.ndarray:
        return np.bincount(values[(values >= 0) & (values < k)], minlength=k).astype(np.float64)

    total = {name: np.zeros(k) for name in ("intersect", "union", "pred", "label")}
    for pred, gt in pairs:
        keep = gt != 255
        pred, gt = pred[keep].astype(np.int64), gt[keep].astype(np.int64)
        intersect = pred[pred == gt]
        area_i, area_p, area_l = hist(intersect), hist(pred), hist(gt)
        total["intersect"] += area_i
        total["pred"] += area_p
        total["label"] += area_l
        total["union"] += area_p + area_l - area_i
    with np.errstate(invalid="ignore", divide="ignore"):
        iou = total["intersect"] / total["union"]
        acc = total["intersect"] / total["label"]
        return {
            "iou": iou * 100,
            "acc": acc * 100,
            "aacc": total["intersect"].sum() / total["label"].sum() * 100,
            "miou": np.nanmean(iou) * 100,
            "macc": np.nanmean(acc) * 100,
        }


def assert_matches(result: MetricsResult, expected: dict[str, np.ndarray]) -> None:
    np.testing.assert_allclose(result.iou, expected["iou"], rtol=1e-12, equal_nan=True)
    np.testing.assert_allclose(result.acc, expected["acc"], rtol=1e-12, equal_nan=True)
    for name in ("aacc", "miou", "macc"):
        assert getattr(result, name) == pytest.approx(float(expected[name]), rel=1e-12)


def random_pair(rng: np.random.Generator, k: int, shape: tuple[int, int]) -> tuple[np.ndarray, ...]:
    gt = rng.integers(0, k, size=shape).astype(np.uint8)
    gt[rng.random(shape) < 0.15] = 255
    # Predictions agree with the label about half the time.
    pred = np.where(rng.random(shape) < 0.5, gt, rng.integers(0, k, size=shape)).astype(np.int64)
    pred[gt == 255] = rng.integers(0, k, size=int((gt == 255).sum()))
    return pred, gt


@pytest.mark.parametrize("seed", range(5))
def test_random_pairs_match_the_reference(seed: int) -> None:
    rng = np.random.default_rng(seed)
    k = int(rng.integers(2, 30))
    pairs = [
        random_pair(rng, k, (int(rng.integers(5, 40)), int(rng.integers(5, 40)))) for _ in range(6)
    ]
    matrix = ConfusionMatrix(k)
    for pred, gt in pairs:
        matrix.update(torch.from_numpy(pred), torch.from_numpy(gt))
    assert_matches(matrix.compute(), reference(pairs, k))
    assert int(matrix.matrix.sum()) == sum(int((gt != 255).sum()) for _, gt in pairs)


def test_batching_does_not_change_the_result() -> None:
    rng = np.random.default_rng(7)
    pairs = [random_pair(rng, 6, (16, 16)) for _ in range(4)]
    one_by_one, batched = ConfusionMatrix(6), ConfusionMatrix(6)
    for pred, gt in pairs:
        one_by_one.update(torch.from_numpy(pred), torch.from_numpy(gt))
    batched.update(
        torch.from_numpy(np.stack([p for p, _ in pairs])),
        torch.from_numpy(np.stack([g for _, g in pairs])),
    )
    assert torch.equal(one_by_one.counts, batched.counts)


def test_absent_classes_are_nan_and_left_out_of_the_means() -> None:
    gt = np.array([[0, 0, 1, 1], [2, 2, 255, 255]], np.uint8)
    pred = np.array([[0, 1, 1, 1], [2, 0, 5, 5]], np.int64)  # 5 only at ignored pixels
    matrix = ConfusionMatrix(6)
    matrix.update(torch.from_numpy(pred), torch.from_numpy(gt))
    result = matrix.compute()
    assert all(math.isnan(v) for v in result.iou[3:]) and all(math.isnan(v) for v in result.acc[3:])
    # class 0: I 1, U 3; class 1: I 2, U 3; class 2: I 1, U 2.
    assert result.iou[:3] == pytest.approx((100 / 3, 200 / 3, 50.0))
    assert result.miou == pytest.approx((100 / 3 + 200 / 3 + 50) / 3)
    assert result.acc[:3] == pytest.approx((50.0, 100.0, 50.0))
    assert result.aacc == pytest.approx(4 / 6 * 100)
    assert_matches(result, reference([(pred, gt)], 6))


def test_a_class_predicted_but_absent_from_labels_scores_zero_iou() -> None:
    gt = np.array([[0, 0, 1, 1]], np.uint8)
    pred = np.array([[0, 3, 1, 1]], np.int64)
    matrix = ConfusionMatrix(4)
    matrix.update(torch.from_numpy(pred), torch.from_numpy(gt))
    result = matrix.compute()
    assert result.iou[3] == 0.0 and math.isnan(result.acc[3]) and math.isnan(result.iou[2])
    assert result.miou == pytest.approx((50 + 100 + 0) / 3)
    assert result.macc == pytest.approx((50 + 100) / 2)


def test_out_of_range_labels_count_only_in_the_prediction_area() -> None:
    gt = np.array([[0, 1, 200, 200]], np.uint8)
    pred = np.array([[0, 1, 1, 9]], np.int64)  # 9 is outside 0..2 as well
    matrix = ConfusionMatrix(3)
    matrix.update(torch.from_numpy(pred), torch.from_numpy(gt))
    result = matrix.compute()
    assert result.iou[1] == pytest.approx(50.0)  # union 2: its own pixel + the 200-labelled one
    assert_matches(result, reference([(pred, gt)], 3))


def test_perfect_prediction_scores_100() -> None:
    rng = np.random.default_rng(1)
    _, gt = random_pair(rng, 5, (20, 20))
    matrix = ConfusionMatrix(5)
    matrix.update(torch.from_numpy(gt.astype(np.int64)), torch.from_numpy(gt))
    result = matrix.compute()
    assert result.miou == result.macc == result.aacc == 100.0


def test_ade20k_reduce_zero_label_ground_truth(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    raw = rng.integers(0, 151, size=(30, 40)).astype(np.uint8)
    raw[:3] = 0  # unlabelled
    Image.fromarray(raw).save(tmp_path / "ade.png")
    gt = load_label(tmp_path / "ade.png", reduce_zero_label=True, num_classes=150)
    pred = rng.integers(0, 150, size=raw.shape)
    pred[5:] = np.where(rng.random((25, 40)) < 0.6, raw[5:].astype(int) - 1, pred[5:])
    matrix = ConfusionMatrix(150)
    matrix.update(torch.from_numpy(pred), torch.from_numpy(gt))
    # Independent reduction: 0 is ignored, every other id k becomes k - 1.
    reduced = np.where(raw == 0, 255, raw.astype(np.int64) - 1)
    assert_matches(matrix.compute(), reference([(pred, reduced)], 150))
    assert int(matrix.matrix.sum()) == int((raw != 0).sum())


def test_to_dict_is_json_ready() -> None:
    matrix = ConfusionMatrix(3)
    matrix.update(torch.tensor([[0, 1]]), torch.tensor([[0, 1]]))
    payload = matrix.compute(classes=("road", "car", "sky")).to_dict()
    assert payload["mIoU"] == 100.0 and payload["aAcc"] == 100.0
    assert payload["per_class"][2] == {"class": "sky", "IoU": None, "Acc": None}
    assert payload["per_class"][0]["class"] == "road"


def test_shape_mismatch_is_refused() -> None:
    with pytest.raises(ValueError, match="shape"):
        ConfusionMatrix(3).update(torch.zeros(2, 3), torch.zeros(3, 2))


def _all_reduce_worker(rank: int, world_size: int, init_file: str, queue: mp.Queue) -> None:
    dist.init_process_group(
        "gloo", init_method=f"file://{init_file}", rank=rank, world_size=world_size
    )
    try:
        rng = np.random.default_rng(rank)
        pred, gt = random_pair(rng, 4, (10, 10))
        matrix = ConfusionMatrix(4)
        matrix.update(torch.from_numpy(pred), torch.from_numpy(gt))
        matrix.all_reduce()
        queue.put((rank, matrix.counts.numpy()))
    finally:
        dist.destroy_process_group()


@pytest.mark.dist
def test_all_reduce_sums_the_matrices_of_all_ranks(tmp_path: Path) -> None:
    context = mp.get_context("spawn")
    queue = context.Queue()
    os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")
    mp.start_processes(
        _all_reduce_worker, args=(2, str(tmp_path / "init"), queue), nprocs=2, start_method="spawn"
    )
    results = dict(queue.get() for _ in range(2))
    expected = ConfusionMatrix(4)
    for rank in range(2):
        pred, gt = random_pair(np.random.default_rng(rank), 4, (10, 10))
        expected.update(torch.from_numpy(pred), torch.from_numpy(gt))
    for counts in results.values():
        np.testing.assert_array_equal(counts, expected.counts.numpy())
