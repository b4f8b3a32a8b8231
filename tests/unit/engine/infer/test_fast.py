"""The fast inference path: same masks as float32 (>= 99.5 % of pixels in bf16/fp16), the CPU
float32 default untouched, and the automatic choices per device."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from isaseg_cli.bench.benchmark import mask_agreement, random_model
from isaseg_cli.data.image import read_image_bgr
from isaseg_cli.engine.infer.fast import (
    FastSettings,
    InferenceSegmentor,
    apply_fast_settings,
    optimize_for_inference,
    recommended_window_batch,
    resolve_fast_settings,
)
from isaseg_cli.engine.infer.pipeline import infer_scores
from isaseg_cli.errors import InputError
from isaseg_cli.models.build import build_model
from isaseg_cli.zoo.catalog import resolve_entry
from isaseg_cli.zoo.spec import TestSpec
from tests.helpers import (
    TINY,
    assert_close_to_reference,
    assert_masks_match_except_ties,
    tiny_model_spec,
)

CPU = torch.device("cpu")
SLIDE = TestSpec(mode="slide", crop_size=(64, 64), stride=(43, 43))


@pytest.fixture(scope="module")
def fixture_model() -> torch.nn.Module:
    model = build_model(tiny_model_spec())
    model.load_state_dict(torch.load(TINY / "checkpoint.pth", weights_only=True)["state_dict"])
    return model.eval()


@pytest.fixture(scope="module")
def image() -> np.ndarray:
    return read_image_bgr(TINY / "image.png")


def test_cpu_float32_default_is_the_model_itself(fixture_model) -> None:
    assert optimize_for_inference(fixture_model, device="cpu") is fixture_model


# Mask agreement with float32 depends on how well-conditioned the network is, not only on the
# implementation. The fixture is a random-weight model so sensitive that rounding just its input
# to bf16 (then computing in float32) already changes 5.2 % of its pixels (fp16: 0.7 %), so the
# issue's 99.5 % cannot be reached there by any bf16 computation. These tests therefore require
# the fast path to agree at least as well as torch.autocast (how mmseg runs bf16/fp16), within
# the run-to-run scatter of such a chaotic model, and above a floor that any layout, folding or
# casting bug falls far below. Measured here: fixture bf16 89.4 % (whole) / 88.7 % (slide),
# autocast 89.0 / 92.6 %; fp16 98.4 / 98.9 %, autocast 98.6 / 98.6 %.
FLOOR = {"bf16": 0.85, "fp16": 0.97}
SLACK = {"bf16": 0.05, "fp16": 0.02}


def _autocast_scores(model, image, test, precision) -> torch.Tensor:
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}[precision]
    with torch.autocast("cpu", dtype=dtype):
        return infer_scores(model, image, test)


@pytest.mark.parametrize("test", [TestSpec(), SLIDE], ids=["whole", "slide"])
@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_reduced_precision_masks_agree_on_the_fixture(fixture_model, image, test, precision):
    reference = infer_scores(fixture_model, image, test)
    # Through apply_fast_settings: the CLI refuses fp16 on a CPU (it is slow there), not its maths.
    settings = _with_precision(resolve_fast_settings(CPU, "bf16"), precision)
    fast = apply_fast_settings(fixture_model, settings)
    assert fast.dtype == {"bf16": torch.bfloat16, "fp16": torch.float16}[precision]
    scores = infer_scores(fast, image, test)
    assert scores.dtype == torch.float32 and scores.shape == reference.shape
    ours = mask_agreement(scores, reference)
    autocast = mask_agreement(_autocast_scores(fixture_model, image, test, precision), reference)
    assert ours >= FLOOR[precision]
    assert ours >= autocast - SLACK[precision]


def _with_precision(settings: FastSettings, precision: str) -> FastSettings:
    return dataclasses.replace(settings, precision=precision)


def test_explicit_float32_fast_path_keeps_masks(fixture_model, image, expected) -> None:
    fast = optimize_for_inference(
        fixture_model, device="cpu", fuse_bn=True, channels_last=True, attention="sdpa"
    )
    assert isinstance(fast, InferenceSegmentor) and fast.settings.fuse_bn
    scores = infer_scores(fast, image, TestSpec())
    # Reordered float32 rounding (folded BN, channels-last, SDPA) on the fixture's sensitive
    # head moves logits by ~1e-3 at most: 3e-4 of their magnitude 6.3, not the default 1e-4.
    assert_close_to_reference(scores, expected["whole_logits"], rel=3e-4)
    assert_masks_match_except_ties(
        scores.argmax(1), expected["whole_pred"], expected["whole_logits"], rel=3e-4
    )


def _r50_and_images(device: torch.device) -> tuple[torch.nn.Module, torch.Tensor]:
    entry = resolve_entry("isanet_r50-d8_4xb2-80k_cityscapes-512x1024")
    model = random_model(entry.model, device)  # calibrated BN, trained-like residual gains
    images = torch.randn(1, 3, 128, 256, generator=torch.Generator().manual_seed(5))
    return model, images.to(device)


def test_random_weight_full_size_r50_masks_agree_in_bf16() -> None:
    """Measured: bf16 98.7 % of pixels, autocast bf16 99.3 % (fp16 99.9 %, but fp16 takes
    ~30 s on this CPU, so it runs in the gpu test below). At 512x1024 bf16 keeps 99.84 %
    (docs/PERFORMANCE.md), too slow for a unit test here."""
    model, images = _r50_and_images(CPU)
    with torch.no_grad():
        reference = model(images)["out"]
        assert reference.argmax(1).unique().numel() > 3  # the logits are not degenerate
        bf16 = optimize_for_inference(model, device="cpu", precision="bf16")
        ours = mask_agreement(bf16(images)["out"], reference)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            autocast = mask_agreement(model(images)["out"].float(), reference)
    assert ours >= 0.95 and ours >= autocast - 0.02


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_random_weight_full_size_r50_masks_agree_on_gpu(precision: str) -> None:
    cuda = torch.device("cuda")
    model, images = _r50_and_images(cuda)
    with torch.no_grad():
        reference = model(images)["out"]
        fast = optimize_for_inference(model, device=cuda, precision=precision)
        ours = mask_agreement(fast(images)["out"], reference)
        with torch.autocast("cuda", dtype=fast.dtype):
            autocast = mask_agreement(model(images)["out"].float(), reference)
    assert ours >= FLOOR[precision] and ours >= autocast - SLACK[precision]


def test_automatic_settings_per_device() -> None:
    cuda = resolve_fast_settings(torch.device("cuda"), "bf16")
    assert (cuda.fuse_bn, cuda.fuse_relu, cuda.channels_last, cuda.attention) == (
        True,
        True,
        True,
        "sdpa",
    )
    # Inductor fuses the epilogues itself and cannot trace cuDNN's fused operators.
    assert not resolve_fast_settings(torch.device("cuda"), "bf16", compile=True).fuse_relu
    cpu = resolve_fast_settings(CPU, "bf16")
    assert (cpu.fuse_bn, cpu.fuse_relu, cpu.channels_last, cpu.attention) == (
        True,
        False,
        True,
        "matmul",
    )
    with pytest.raises(InputError, match="fused conv"):
        resolve_fast_settings(CPU, "bf16", fuse_relu=True, compile=True)
    with pytest.raises(InputError, match="fused conv"):
        resolve_fast_settings(CPU, "fp32", fuse_bn=False, fuse_relu=True)
    assert resolve_fast_settings(CPU, "fp32").is_noop
    assert not resolve_fast_settings(CPU, "fp32", fuse_bn=True).is_noop
    with pytest.raises(InputError, match="fp16"):
        resolve_fast_settings(CPU, "fp16")
    with pytest.raises(InputError, match="attention"):
        resolve_fast_settings(CPU, "bf16", attention="flash")
    with pytest.raises(InputError, match="compile mode"):
        resolve_fast_settings(CPU, "bf16", compile=True, compile_mode="fastest")


def test_window_batch_recommendation() -> None:
    entry = resolve_entry("isanet_r50_cityscapes")  # 769x769 crops, slide, test scale 2049x1025
    assert recommended_window_batch("cpu", entry.test) == 1
    assert recommended_window_batch(torch.device("cuda"), entry.test) == 8
    assert recommended_window_batch(torch.device("cuda"), entry.test, (769, 769)) == 1
    assert recommended_window_batch(torch.device("cuda"), TestSpec()) == 1


def test_inference_segmentor_returns_float32_at_input_size(fixture_model) -> None:
    fast = optimize_for_inference(fixture_model, device="cpu", precision="bf16")
    with torch.no_grad():
        outputs = fast(torch.randn(2, 3, 45, 61))
    assert list(outputs) == ["out"]
    assert outputs["out"].dtype == torch.float32 and outputs["out"].shape == (2, 5, 45, 61)
    # The source model is untouched (a copy was prepared).
    assert next(fixture_model.parameters()).dtype == torch.float32
