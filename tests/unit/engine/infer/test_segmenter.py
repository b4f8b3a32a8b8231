"""Segmenter: the mask is the argmax of infer_scores, overrides reach the test spec, batches match
single images, and whole falls back to slide when it runs out of memory."""

from __future__ import annotations

import dataclasses
import hashlib

import cv2
import numpy as np
import pytest
import torch

from isaseg_cli.data.image import normalize_bgr, read_image_bgr, resize_keep_ratio
from isaseg_cli.engine.infer import prepared as prepared_module
from isaseg_cli.engine.infer import segmenter as segmenter_module
from isaseg_cli.engine.infer.confidence import ConfidenceSpec
from isaseg_cli.engine.infer.pipeline import infer_scores
from isaseg_cli.engine.infer.protocol import prepare_image, resolve_test_spec
from isaseg_cli.engine.infer.segmenter import Segmenter
from isaseg_cli.engine.loading import load_model
from isaseg_cli.errors import InputError
from isaseg_cli.zoo import spec
from tests.helpers import make_tiny_entry

SLIDE_64 = spec.TestSpec(mode="slide", crop_size=(64, 64), stride=(43, 43))


@pytest.fixture(scope="module")
def segmenter(tiny_checkpoint) -> Segmenter:
    return Segmenter(load_model(checkpoint=tiny_checkpoint), device="cpu")


@pytest.fixture(scope="module")
def image(tiny_image_path) -> np.ndarray:
    return read_image_bgr(tiny_image_path)


def _reference(
    segmenter: Segmenter, image: np.ndarray, test: spec.TestSpec, **kwargs
) -> torch.Tensor:
    return infer_scores(segmenter.model, image, test, **kwargs)


def test_mask_is_the_argmax_of_infer_scores(segmenter, image, tiny_image_path) -> None:
    scores = _reference(segmenter, image, segmenter.loaded.entry.test)
    expected = scores[0].argmax(0).numpy()
    mask, probs = segmenter(tiny_image_path, return_probs=True)
    assert mask.dtype == np.uint8 and mask.shape == image.shape[:2]
    assert np.array_equal(mask, expected)
    assert np.array_equal(segmenter(image), expected)
    assert probs.dtype == np.float32 and probs.shape == (5, *image.shape[:2])
    assert np.array_equal(probs, scores[0].softmax(0).numpy())


def test_array_conventions_bgr_rgb_gray_and_bgra(segmenter, image) -> None:
    expected = segmenter(image)
    assert np.array_equal(segmenter(np.ascontiguousarray(image[..., ::-1]), rgb=True), expected)
    bgra = cv2.cvtColor(image, cv2.COLOR_BGR2BGRA)
    assert np.array_equal(segmenter(bgra), expected)
    gray = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
    assert np.array_equal(segmenter(gray), segmenter(np.dstack([gray] * 3)))
    with pytest.raises(InputError, match="uint8"):
        segmenter(image.astype(np.float32))
    with pytest.raises(InputError, match="shape"):
        segmenter(np.zeros((4, 4, 2), dtype=np.uint8))


def test_test_spec_overrides() -> None:
    entry = make_tiny_entry()  # whole mode, training crop 64x64
    assert resolve_test_spec(entry) == entry.test
    slide = resolve_test_spec(entry, crop=(64, 64))
    assert (slide.mode, slide.crop_size, slide.stride) == ("slide", (64, 64), (43, 43))
    assert resolve_test_spec(entry, mode="slide") == dataclasses.replace(slide)
    assert resolve_test_spec(entry, crop=(769, 769)).stride == (513, 513)  # mmseg's 769/513
    assert resolve_test_spec(entry, crop=(40, 60), stride=(20, 30)).stride == (20, 30)
    sliding = dataclasses.replace(
        entry, test=spec.TestSpec(mode="slide", crop_size=(32, 32), stride=(30, 30))
    )
    assert resolve_test_spec(sliding).stride == (30, 30)
    assert resolve_test_spec(sliding, crop=(48, 48)).stride == (32, 32)
    assert resolve_test_spec(sliding, mode="whole").crop_size is None
    for bad in (dict(mode="whole", crop=(64, 64)), dict(crop=(32, 32), stride=(40, 8)),
                dict(mode="tiles"), dict(crop=(0, 5))):  # fmt: skip
        with pytest.raises(InputError):
            resolve_test_spec(entry, **bad)


def test_slide_and_ms_flip_overrides_reach_inference(tiny_checkpoint, image) -> None:
    loaded = load_model(checkpoint=tiny_checkpoint)
    slide = Segmenter(loaded, device="cpu", crop=(64, 64), window_batch=3)
    expected = _reference(slide, image, SLIDE_64)[0].argmax(0).numpy()
    assert np.array_equal(slide(image), expected)

    ms = Segmenter(loaded, device="cpu", ms_flip=True, scales=(0.5, 1.0))
    probs = _reference(ms, image, loaded.entry.test, ms_flip=True, ratios=(0.5, 1.0))[0]
    mask, ours = ms(image, return_probs=True)
    assert np.array_equal(mask, probs.argmax(0).numpy())
    assert np.array_equal(ours, probs.numpy())  # already probabilities: no second softmax
    with pytest.raises(InputError, match="ms.flip"):
        Segmenter(loaded, device="cpu", scales=(1.0,))
    with pytest.raises(InputError, match="fp16"):
        Segmenter(loaded, device="cpu", precision="fp16")


def test_bf16_autocasts_the_network_and_returns_float32(tiny_checkpoint, image, segmenter) -> None:
    bf16 = Segmenter(load_model(checkpoint=tiny_checkpoint), device="cpu", precision="bf16")
    head_dtypes: list[torch.dtype] = []
    bf16.model.decode_head.register_forward_hook(lambda m, i, out: head_dtypes.append(out.dtype))
    _, probs = bf16(image, return_probs=True)
    assert head_dtypes == [torch.bfloat16]
    assert probs.dtype == np.float32
    # the random tiny model has small margins, so compare probabilities, not masks
    assert np.abs(probs - segmenter(image, return_probs=True)[1]).mean() < 0.1


def test_fp32_cpu_keeps_the_exact_model_and_bf16_takes_the_fast_path(tiny_checkpoint) -> None:
    from isaseg_cli.engine.infer.fast import InferenceSegmentor

    loaded = load_model(checkpoint=tiny_checkpoint)
    assert Segmenter(loaded, device="cpu").model is loaded.model
    fast = Segmenter(loaded, device="cpu", precision="bf16").model
    assert isinstance(fast, InferenceSegmentor) and fast.settings.fuse_bn
    assert isinstance(loaded.model.decode_head.in_conv.bn, torch.nn.BatchNorm2d)  # untouched


def test_predict_batch_matches_single_images_in_order(segmenter, image) -> None:
    images = [image, image[::-1].copy(), image[:60].copy(), image[:, ::-1].copy()]
    batched = segmenter.predict_batch(images, return_probs=True)
    assert len(batched) == len(images)
    for single_image, (mask, probs) in zip(images, batched, strict=True):
        single_mask, single_probs = segmenter(single_image, return_probs=True)
        assert mask.shape == single_image.shape[:2]
        # one forward over N images rounds differently from N forwards of one (oneDNN)
        assert np.abs(probs - single_probs).max() < 1e-4
        assert (mask == single_mask).mean() > 0.999
    assert segmenter.predict_batch([]) == []


def test_whole_falls_back_to_slide_when_out_of_memory(tiny_checkpoint, image, monkeypatch) -> None:
    warnings: list[str] = []
    seg = Segmenter(
        load_model(checkpoint=tiny_checkpoint), device="cpu", on_warning=warnings.append
    )
    real_forward = seg.model.forward
    sizes: list[tuple[int, int]] = []

    def small_memory_forward(images):
        sizes.append(tuple(images.shape[-2:]))
        if max(images.shape[-2:]) > 64:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return real_forward(images)

    monkeypatch.setattr(seg.model, "forward", small_memory_forward)
    expected = _reference(seg, image, SLIDE_64)[0].argmax(0).numpy()
    sizes.clear()
    assert np.array_equal(seg(image), expected)
    assert len(warnings) == 1 and "slide" in warnings[0] and "(64, 64)" in warnings[0]
    sizes.clear()
    assert np.array_equal(seg(image), expected)  # now straight to slide: no failed whole pass
    assert all(max(size) <= 64 for size in sizes) and len(warnings) == 1
    small = image[:48, :64].copy()
    assert np.array_equal(seg(small), _reference(seg, small, seg.test)[0].argmax(0).numpy())


def test_other_runtime_errors_are_not_swallowed(segmenter, image, monkeypatch) -> None:
    def broken(images):
        raise RuntimeError("shape mismatch")

    monkeypatch.setattr(segmenter.model, "forward", broken)
    with pytest.raises(RuntimeError, match="shape mismatch"):
        segmenter(image)


def test_from_checkpoint_and_from_zoo(tiny_checkpoint, tmp_path, monkeypatch, image) -> None:
    expected = Segmenter.from_checkpoint(tiny_checkpoint, device="cpu")(image)
    digest = hashlib.sha256(tiny_checkpoint.read_bytes()).hexdigest()[:8]
    weights = spec.WeightsSpec(url=tiny_checkpoint.as_uri(), sha256=digest)
    entry = dataclasses.replace(make_tiny_entry(), weights=weights)
    monkeypatch.setattr(segmenter_module, "resolve_entry", lambda name: entry)
    monkeypatch.setenv("ISASEG_HOME", str(tmp_path))
    seg = Segmenter.from_zoo("tiny-test", device="cpu", mode="whole")
    assert np.array_equal(seg(image), expected)
    assert seg.classes == ("c0", "c1", "c2", "c3", "c4") and len(seg.palette) == 5


def _scaled(tiny_checkpoint, scale: tuple[int, int], **options) -> Segmenter:
    """A segmenter whose test pipeline resizes (the tiny entry's has no test scale)."""
    loaded = load_model(checkpoint=tiny_checkpoint)
    test = dataclasses.replace(loaded.entry.test, scale=scale)
    entry = dataclasses.replace(loaded.entry, test=test)
    return Segmenter(dataclasses.replace(loaded, entry=entry), device="cpu", **options)


@pytest.mark.parametrize("options", [{}, {"crop": (48, 48), "window_batch": 2}])
def test_segment_prepared_equals_segment_batch_bit_for_bit(tiny_checkpoint, image, options) -> None:
    seg = _scaled(tiny_checkpoint, (120, 80), **options)
    test = seg.prepared_test()
    assert test is seg.test and test.scale == (120, 80)
    # three images share a forward pass; two of other sizes run alone
    images = [image, image[::-1].copy(), image[:60].copy(), image[:, ::-1].copy(), image[:50]]
    inputs = [prepare_image(one, test) for one in images]
    assert inputs[0].shape == (80, 116, 3) and inputs[0].dtype == np.uint8
    assert np.array_equal(inputs[0], resize_keep_ratio(image, (120, 80)))
    normalized = prepared_module.normalize_batch(torch.from_numpy(np.stack(inputs[:2])))
    for one, prepared in zip(normalized, inputs[:2], strict=True):  # what infer_scores feeds
        assert one.is_contiguous() and torch.equal(one, normalize_bgr(prepared)[0])
    asked = ConfidenceSpec(measure="margin", min_confidence=0.3, probs=True)
    expected = seg.segment_batch(images, spec=asked)
    prepared = seg.segment_prepared(images, inputs, spec=asked)
    for ours, theirs, one in zip(prepared, expected, images, strict=True):
        assert ours.mask.shape == one.shape[:2] and ours.stats == theirs.stats
        for field in ("mask", "probs", "confidence"):
            assert np.array_equal(getattr(ours, field), getattr(theirs, field))
    masks = seg.predict_batch(images)  # the constructor's spec: masks only
    plain = seg.segment_prepared(images, inputs)
    assert all(np.array_equal(r.mask, m) for r, m in zip(plain, masks, strict=True))
    assert seg.segment_prepared([], []) == []
    blank = seg.segment_prepared(images[:1], [np.zeros_like(inputs[0])], spec=asked)
    assert not np.array_equal(blank[0].probs, expected[0].probs)  # the inputs given are used
    with pytest.raises(ValueError):
        seg.segment_prepared(images, inputs[:2])


def test_segment_prepared_falls_back_to_slide_from_the_image(tiny_checkpoint, image, monkeypatch):
    warnings: list[str] = []
    seg = _scaled(tiny_checkpoint, (160, 112), on_warning=warnings.append)
    real_forward = seg.model.forward
    batches: list[int] = []

    def small_memory_forward(images):
        batches.append(images.shape[0])
        if max(images.shape[-2:]) > 64:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return real_forward(images)

    monkeypatch.setattr(seg.model, "forward", small_memory_forward)
    images = [image, image[::-1].copy()]
    inputs = [prepare_image(one, seg.test) for one in images]
    slide = dataclasses.replace(SLIDE_64, scale=(160, 112))
    expected = [_reference(seg, one, slide)[0].argmax(0).numpy() for one in images]
    batches.clear()
    masks = [result.mask for result in seg.segment_prepared(images, inputs)]
    assert all(np.array_equal(m, e) for m, e in zip(masks, expected, strict=True))
    assert batches[0] == 2 and len(warnings) == 1  # the pair failed together, then one by one
    batches.clear()
    masks = [result.mask for result in seg.segment_prepared(images, inputs)]  # straight to slide
    assert all(np.array_equal(m, e) for m, e in zip(masks, expected, strict=True))
    assert all(size == 1 for size in batches) and len(warnings) == 1


def test_ms_flip_and_tiles_take_decoded_images_only(tiny_checkpoint, image) -> None:
    loaded = load_model(checkpoint=tiny_checkpoint)
    for seg in (
        Segmenter(loaded, device="cpu", ms_flip=True),
        Segmenter(loaded, device="cpu", tile=(64, 64)),
    ):
        assert seg.prepared_test() is None
        with pytest.raises(InputError, match="segment_batch"):
            seg.segment_prepared([image], [prepare_image(image, seg.test)])


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_prepared_inputs_reach_the_gpu_through_pinned_memory(tiny_checkpoint, image) -> None:
    seg = Segmenter(load_model(checkpoint=tiny_checkpoint), device="cuda")
    images = [image, image[::-1].copy()]
    inputs = [prepare_image(one, seg.test) for one in images]
    batch = prepared_module.to_device(inputs, seg.device)
    expected_batch = prepared_module.normalize_batch(torch.from_numpy(np.stack(inputs)))
    assert batch.device.type == "cuda" and torch.equal(batch.cpu(), expected_batch)
    expected = seg.predict_batch(images)
    masks = [result.mask for result in seg.segment_prepared(images, inputs)]
    assert all(np.array_equal(m, e) for m, e in zip(masks, expected, strict=True))
