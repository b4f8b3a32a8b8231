"""The fast inference path: same masks as float32 (>= 99.5 % of pixels in bf16/fp16), the CPU
float32 default untouched, and the automatic choices per device."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from isaseg_cli.bench.inference import mask_agreement
from isaseg_cli.data.image import read_image_bgr
from isaseg_cli.engine.infer.fast import (
    FastOptions,
    FastSettings,
    InferenceSegmentor,
    optimize_for_inference,
    recommended_window_batch,
    resolve_fast_settings,
)
from isaseg_cli.engine.infer.pipeline import infer_scores
from isaseg_cli.engine.random_weights import random_model
from isaseg_cli.errors import InputError
from isaseg_cli.models.build import build_model
from isaseg_cli.models.fuse import ConvReLU
from isaseg_cli.zoo.catalog import resolve_entry
from isaseg_cli.zoo.spec import TestSpec
from tests.helpers import (
    FIXTURE_SLIDE,
    TINY,
    assert_close_to_reference,
    assert_masks_match_except_ties,
    tiny_model_spec,
)

CPU = torch.device("cpu")
CUDA = torch.device("cuda")
SPEC = tiny_model_spec()


def _fast(model, spec=SPEC, device=CPU, **options) -> torch.nn.Module:
    """``optimize_for_inference`` with ``options`` resolved for ``device``."""
    return optimize_for_inference(
        model, spec, resolve_fast_settings(device, FastOptions(**options))
    )


def _resolve(device: torch.device, precision: str = "fp32", **options) -> FastSettings:
    return resolve_fast_settings(device, FastOptions(precision=precision, **options))


@pytest.fixture(scope="module")
def fixture_model() -> torch.nn.Module:
    model = build_model(SPEC)
    model.load_state_dict(torch.load(TINY / "checkpoint.pth", weights_only=True)["state_dict"])
    return model.eval()


@pytest.fixture(scope="module")
def image() -> np.ndarray:
    return read_image_bgr(TINY / "image.png")


def test_cpu_float32_default_is_the_model_itself(fixture_model) -> None:
    assert _fast(fixture_model) is fixture_model


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


@pytest.mark.parametrize("test", [TestSpec(), FIXTURE_SLIDE], ids=["whole", "slide"])
@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_reduced_precision_masks_agree_on_the_fixture(fixture_model, image, test, precision):
    reference = infer_scores(fixture_model, image, test)
    # Resolved for bf16: the CLI refuses fp16 on a CPU (it is slow there), not its maths.
    settings = _with_precision(_resolve(CPU, "bf16"), precision)
    fast = optimize_for_inference(fixture_model, SPEC, settings)
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
    fast = _fast(fixture_model, fuse_bn=True, channels_last=True, attention="sdpa")
    assert isinstance(fast, InferenceSegmentor) and fast.settings.fuse_bn
    scores = infer_scores(fast, image, TestSpec())
    # Reordered float32 rounding (folded BN, channels-last, SDPA) on the fixture's sensitive
    # head moves logits by ~1e-3 at most: 3e-4 of their magnitude 6.3, not the default 1e-4.
    assert_close_to_reference(scores, expected["whole_logits"], rel=3e-4)
    assert_masks_match_except_ties(
        scores.argmax(1), expected["whole_pred"], expected["whole_logits"], rel=3e-4
    )


R50 = resolve_entry("isanet_r50-d8_4xb2-80k_cityscapes-512x1024").model


def _r50_and_images(device: torch.device) -> tuple[torch.nn.Module, torch.Tensor]:
    model = random_model(R50, device)  # calibrated BN, trained-like residual gains
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
        bf16 = _fast(model, R50, precision="bf16")
        ours = mask_agreement(bf16(images)["out"], reference)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            autocast = mask_agreement(model(images)["out"].float(), reference)
    assert ours >= 0.95 and ours >= autocast - 0.02


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_random_weight_full_size_r50_masks_agree_on_gpu(precision: str) -> None:
    model, images = _r50_and_images(CUDA)
    with torch.no_grad():
        reference = model(images)["out"]
        fast = _fast(model, R50, CUDA, precision=precision)
        ours = mask_agreement(fast(images)["out"], reference)
        with torch.autocast("cuda", dtype=fast.dtype):
            autocast = mask_agreement(model(images)["out"].float(), reference)
    assert ours >= FLOOR[precision] and ours >= autocast - SLACK[precision]


def test_automatic_settings_per_device() -> None:
    cuda = _resolve(CUDA, "bf16")
    assert (cuda.fuse_bn, cuda.fuse_relu, cuda.channels_last, cuda.attention) == (
        True,
        True,
        True,
        "sdpa",
    )
    # Inductor fuses the epilogues itself and cannot trace cuDNN's fused operators.
    assert not _resolve(CUDA, "bf16", compile=True).fuse_relu
    cpu = _resolve(CPU, "bf16")
    assert (cpu.fuse_bn, cpu.fuse_relu, cpu.channels_last, cpu.attention) == (
        True,
        False,
        True,
        "matmul",
    )
    with pytest.raises(InputError, match="fused conv"):
        _resolve(CPU, "bf16", fuse_relu=True, compile=True)
    with pytest.raises(InputError, match="fused conv"):
        _resolve(CPU, "fp32", fuse_bn=False, fuse_relu=True)
    assert _resolve(CPU, "fp32").is_noop
    assert not _resolve(CPU, "fp32", fuse_bn=True).is_noop
    with pytest.raises(InputError, match="fp16"):
        _resolve(CPU, "fp16")
    with pytest.raises(InputError, match="attention"):
        _resolve(CPU, "bf16", attention="flash")
    with pytest.raises(InputError, match="compile mode"):
        _resolve(CPU, "bf16", compile=True, compile_mode="fastest")
    # CUDA graphs: automatic on CUDA unless compiling, refused where they cannot run.
    assert cuda.cuda_graphs and not _resolve(CUDA, "bf16", compile=True).cuda_graphs
    assert not cpu.cuda_graphs
    with pytest.raises(InputError, match="CUDA graphs need a CUDA device"):
        _resolve(CPU, "bf16", cuda_graphs=True)
    with pytest.raises(InputError, match="no --compile"):
        _resolve(CUDA, "bf16", cuda_graphs=True, compile=True)


def test_window_batch_recommendation() -> None:
    entry = resolve_entry("isanet_r50_cityscapes")  # 769x769 crops, slide, test scale 2049x1025
    assert recommended_window_batch("cpu", entry.test) == 1
    assert recommended_window_batch(torch.device("cuda"), entry.test) == 8
    assert recommended_window_batch(torch.device("cuda"), entry.test, (769, 769)) == 1
    assert recommended_window_batch(torch.device("cuda"), TestSpec()) == 1


def test_inference_segmentor_returns_float32_at_input_size(fixture_model) -> None:
    fast = _fast(fixture_model, precision="bf16")
    with torch.no_grad():
        outputs = fast(torch.randn(2, 3, 45, 61))
    assert list(outputs) == ["out"]
    assert outputs["out"].dtype == torch.float32 and outputs["out"].shape == (2, 5, 45, 61)
    # The source model is untouched (a copy was prepared).
    assert next(fixture_model.parameters()).dtype == torch.float32


def test_the_fast_model_is_rebuilt_with_its_execution_choices(fixture_model) -> None:
    """Built with the fast ExecutionSpec (not the plain model reconfigured), holding the plain
    model's weights (before folding), while the plain model keeps the reference path."""
    before = {k: v.clone() for k, v in fixture_model.state_dict().items()}
    fast = _fast(fixture_model, fuse_bn=False, channels_last=False, attention="sdpa")
    assert isinstance(fast, InferenceSegmentor) and fast.auxiliary_head is None
    head = fast.decode_head
    assert head.fast_interlace and head.global_relation.attention == "sdpa"
    assert fast.decode_head is not fixture_model.decode_head
    plain_head = fixture_model.decode_head
    assert not plain_head.fast_interlace and plain_head.global_relation.attention == "matmul"
    weights = fast.state_dict()
    for name, value in before.items():
        if not name.startswith("auxiliary_head."):
            assert torch.equal(weights[name], value), name
        assert torch.equal(fixture_model.state_dict()[name], value), name


def test_fused_conv_relu_rewrites_the_rebuilt_copy_only(fixture_model) -> None:
    fast = _fast(fixture_model, precision="fp32", fuse_bn=True, fuse_relu=True)
    assert any(isinstance(m, ConvReLU) for m in fast.modules())
    assert not any(isinstance(m, ConvReLU) for m in fixture_model.modules())
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in fixture_model.modules())


def test_optimizing_leaves_the_process_flags_alone(fixture_model, monkeypatch) -> None:
    monkeypatch.setattr(torch.backends.cudnn, "benchmark", False)
    _fast(fixture_model, precision="bf16")
    assert torch.backends.cudnn.benchmark is False
