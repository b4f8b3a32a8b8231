"""Helpers shared by tests (imported as ``tests.helpers``; conftest.py holds fixtures only).

The tiny architecture of the mmseg_tiny fixture and the test-only zoo entries built on it live
here, so that test modules import them from one place rather than from conftest or each other.

The tolerance rule for comparing with mmsegmentation's reference arrays: the same mmseg gives
slightly different float32 results on AVX2, AVX-512 and ARM CPUs (oneDNN picks other kernels, and
large inputs accumulate more rounding; tests/fixtures/mmseg_tiny/README.md gives the measured
figures, up to 1.1e-3 on logits of magnitude 17.5). So a tolerance scales with the reference: a
fraction ``rel`` of its largest absolute value, never below ``floor``. A wrong resize, padding or
permute moves logits by 1e-2 or more, far beyond it.
"""

from __future__ import annotations

import dataclasses
import struct
import zlib
from pathlib import Path

import numpy as np
import torch

from isaseg_cli.data.synthetic import custom_classes
from isaseg_cli.zoo.spec import (
    AuxHeadSpec,
    BackboneSpec,
    DataSpec,
    HeadSpec,
    ModelSpec,
    TestSpec,
    TrainSpec,
    ZooEntry,
)

REL = 1e-4
FLOOR = 1e-5

FIXTURES = Path(__file__).parent / "fixtures"
TINY = FIXTURES / "mmseg_tiny"
# The slide settings the fixture's slide arrays were made with (its README), and each inference
# mode's test settings, ms_flip and the fixture's (scores, mask) keys.
FIXTURE_SLIDE = TestSpec(mode="slide", crop_size=(64, 64), stride=(43, 43))
FIXTURE_CASES = {
    "whole": (TestSpec(), False, "whole_logits", "whole_pred"),
    "slide": (FIXTURE_SLIDE, False, "slide_logits", "slide_pred"),
    "ms_flip": (TestSpec(ms_rule="image"), True, "tta_prob", "tta_pred"),
}
TINY_CLASSES = ("c0", "c1", "c2", "c3", "c4")

# A zoo recipe shrunk to the tiny test architecture and 64x64 crops, as `isaseg train` options.
TINY_TRAIN_OPTIONS = [
    "--crop-size", "64x64",
    "--device", "cpu",
    "--workers", "0",
    "--set", "model.backbone.depth=18",
    "--set", "model.backbone.stem_channels=16",
    "--set", "model.backbone.base_channels=8",
    "--set", "model.head.channels=32",
    "--set", "model.head.attn_channels=16",
    "--set", "model.aux_head.channels=16",
    "--set", "data.train_scale=128,64",
    "--set", "test.scale=128,64",
]  # fmt: skip

# Every command of the CLI, as `isaseg NAME`.
COMMANDS = (
    "zoo", "download", "predict", "eval", "train", "benchmark", "convert-cityscapes",
    "make-synthetic",
)  # fmt: skip


# The data spec of each dataset layout, as the synthetic datasets (data/synthetic.py) write them.
DATASET_SPECS = {
    "cityscapes": DataSpec(dataset="cityscapes"),
    "ade20k": DataSpec(dataset="ade20k", reduce_zero_label=True),
    "voc12aug": DataSpec(dataset="voc12aug"),
    "custom": DataSpec(dataset="custom", img_suffix=".png", classes=custom_classes()),
}
DATASET_NUM_CLASSES = {"cityscapes": 19, "ade20k": 150, "voc12aug": 21, "custom": 4}


def tiny_model_spec(num_classes: int = 5, **changes: object) -> ModelSpec:
    """The mmseg_tiny architecture: ResNetV1c-18 with 8 base channels, ISA head 32/16."""
    spec = ModelSpec(
        backbone=BackboneSpec(depth=18, stem_channels=16, base_channels=8),
        head=HeadSpec(channels=32, attn_channels=16),
        aux_head=AuxHeadSpec(channels=16),
        num_classes=num_classes,
    )
    return dataclasses.replace(spec, **changes)


def make_tiny_entry(num_classes: int = 5, classes: tuple[str, ...] = TINY_CLASSES) -> ZooEntry:
    """A test-only entry (not in model_zoo.yaml): the tiny model on a custom dataset."""
    return ZooEntry(
        name="tiny-test",
        model=tiny_model_spec(num_classes),
        data=DataSpec(
            dataset="custom",
            crop_size=(64, 64),
            train_scale=(128, 64),
            img_suffix=".png",
            seg_map_suffix=".png",
            classes=classes,
        ),
        test=TestSpec(),
        train=TrainSpec(iters=4, batch_size=2, eval_interval=2, checkpoint_interval=2, workers=0),
    )


def make_tiny_cityscapes_entry(name: str = "tiny-cityscapes", **changes: object) -> ZooEntry:
    """A test-only entry (not in model_zoo.yaml): the tiny model on the Cityscapes layout."""
    entry = ZooEntry(
        name=name,
        model=tiny_model_spec(19),
        data=DataSpec(
            crop_size=(64, 64),
            train_scale=(128, 64),
            img_suffix="_leftImg8bit.png",
            seg_map_suffix="_gtFine_labelTrainIds.png",
        ),
        test=TestSpec(scale=(128, 64)),
        train=TrainSpec(iters=4, batch_size=2, eval_interval=2, checkpoint_interval=2, workers=0),
    )
    return dataclasses.replace(entry, **changes)


def tiny_reference_model(
    align_corners: bool = False, dropout: float | None = None, train: bool = False
) -> torch.nn.Module:
    """The tiny architecture with the mmseg_tiny fixture's weights (mmseg's own checkpoint)."""
    from isaseg_cli.models.build import build_model

    spec = tiny_model_spec(align_corners=align_corners)
    if dropout is not None:
        spec = dataclasses.replace(
            spec,
            head=dataclasses.replace(spec.head, dropout=dropout),
            aux_head=dataclasses.replace(spec.aux_head, dropout=dropout),
        )
    model = build_model(spec)
    model.load_state_dict(torch.load(TINY / "checkpoint.pth", weights_only=True)["state_dict"])
    return model.train(train)


def reference_tolerance(reference: np.ndarray, rel: float = REL, floor: float = FLOOR) -> float:
    """``rel`` times the largest absolute value of ``reference``, at least ``floor``."""
    return max(rel * float(np.abs(reference).max(initial=0.0)), floor)


def assert_close_to_reference(
    ours: torch.Tensor | np.ndarray,
    reference: np.ndarray,
    rel: float = REL,
    floor: float = FLOOR,
) -> float:
    """Asserts equal shapes and ``max |ours - reference| <= reference_tolerance``.

    Returns the largest difference, so a caller can record it.
    """
    ours_array = ours.detach().cpu().numpy() if isinstance(ours, torch.Tensor) else ours
    assert ours_array.shape == reference.shape, (ours_array.shape, reference.shape)
    difference = float(np.abs(ours_array.astype(np.float64) - reference).max(initial=0.0))
    tolerance = reference_tolerance(reference, rel, floor)
    assert difference <= tolerance, f"max |difference| {difference:.3g} > tolerance {tolerance:.3g}"
    return difference


def top2_margin(scores: np.ndarray, axis: int = 1) -> np.ndarray:
    """The best minus the second-best score along the class axis."""
    top2 = -np.partition(-scores, 1, axis=axis).take([0, 1], axis=axis)
    return np.abs(top2.take(0, axis=axis) - top2.take(1, axis=axis))


def assert_masks_match_except_ties(
    mask: torch.Tensor | np.ndarray,
    reference_mask: np.ndarray,
    reference_scores: np.ndarray,
    rel: float = REL,
    floor: float = FLOOR,
) -> int:
    """Asserts the masks are equal wherever the reference's top-2 margin exceeds the tolerance.

    ``reference_scores`` are the reference's (N, K, H, W) logits or probabilities, whose
    tolerance (as in ``assert_close_to_reference``) decides which pixels count as tied. Returns
    the number of pixels skipped as ties.
    """
    ours = mask.detach().cpu().numpy() if isinstance(mask, torch.Tensor) else np.asarray(mask)
    assert ours.shape == reference_mask.shape, (ours.shape, reference_mask.shape)
    tolerance = reference_tolerance(reference_scores, rel, floor)
    tied = top2_margin(reference_scores, axis=1) <= tolerance
    wrong = (ours != reference_mask) & ~tied
    assert not wrong.any(), f"{int(wrong.sum())} pixel(s) differ where the reference is not tied"
    return int(tied.sum())


def huge_png_header(width: int, height: int) -> bytes:
    """A PNG whose IHDR claims ``width`` x ``height`` RGB, followed by a token IDAT: decoding it
    would need ``width * height * 3`` bytes."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\0" * 1024)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def run_measured(
    argv: list[str], env: dict[str, str] | None = None, timeout: float = 120
) -> tuple[int, str, float]:
    """Runs a command and returns its exit code, output (stdout and stderr) and peak RSS in MiB,
    as the kernel counted it for that process alone (``os.wait4``); killed after ``timeout``."""
    import os
    import subprocess
    import tempfile
    import threading

    with tempfile.TemporaryFile() as sink:
        process = subprocess.Popen(argv, stdout=sink, stderr=subprocess.STDOUT, env=env)
        timer = threading.Timer(timeout, process.kill)
        timer.start()
        try:
            _, status, usage = os.wait4(process.pid, 0)
        finally:
            timer.cancel()
        process.returncode = os.waitstatus_to_exitcode(status)  # reaped here, not by Popen
        sink.seek(0)
        output = sink.read().decode(errors="replace")
    return process.returncode, output, usage.ru_maxrss / 1024  # Linux: KiB


def kill_process_tree(pid: int) -> None:
    """SIGKILLs ``pid`` and every process below it, as a machine failure would. torchrun starts
    each rank in a session of its own, so killing its process group alone would leave them."""
    import os
    import signal
    from pathlib import Path

    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # the process ended meanwhile
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    tree, index = [pid], 0
    while index < len(tree):
        tree += children.get(tree[index], [])
        index += 1
    for member in tree:
        try:
            os.kill(member, signal.SIGKILL)
        except ProcessLookupError:
            pass
