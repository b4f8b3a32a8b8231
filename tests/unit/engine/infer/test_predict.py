"""engine.predict without the CLI: input expansion, output naming, progress events."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from isaseg_cli.engine.infer.predict import predict
from isaseg_cli.engine.infer.predict_plan import expand_inputs, plan_predict
from isaseg_cli.engine.infer.segmenter import Segmenter
from isaseg_cli.engine.loading import load_model
from isaseg_cli.engine.progress import ProgressEvent
from isaseg_cli.errors import InputError


@pytest.fixture(scope="module")
def segmenter(tiny_checkpoint) -> Segmenter:
    return Segmenter(load_model(checkpoint=tiny_checkpoint), device="cpu")


def _write(path: Path, height: int = 32, width: int = 48) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    image = np.random.default_rng(len(str(path))).integers(0, 256, (height, width, 3), np.uint8)
    cv2.imwrite(str(path), image)
    return path


def test_expand_inputs_folders_globs_files_and_duplicates(tmp_path) -> None:
    _write(tmp_path / "in" / "b.png")
    _write(tmp_path / "in" / "deep" / "a.JPG")
    (tmp_path / "in" / "readme.md").write_text("text")
    (tmp_path / "in" / "clip.mp4").write_bytes(b"")  # folders hold images only
    clip = tmp_path / "clip.MOV"
    clip.write_bytes(b"")
    sources = expand_inputs([tmp_path / "in", str(tmp_path / "in" / "*.png"), clip])
    assert [(s.name.as_posix(), s.is_video) for s in sources] == [
        ("b.png", False),
        ("deep/a.JPG", False),
        ("clip.MOV", True),
    ]
    for bad, message in [("missing.png", "no such file"), ("*.gif", "match")]:
        with pytest.raises(InputError, match=message):
            expand_inputs([str(tmp_path / bad)])
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="no image files"):
        expand_inputs([tmp_path / "empty"])


def test_clashing_names_get_numbers_and_progress_is_reported(tmp_path, segmenter) -> None:
    first, second = _write(tmp_path / "a" / "x.png"), _write(tmp_path / "b" / "x.jpg")
    events: list[ProgressEvent] = []
    result = predict(segmenter, [first, second], out=tmp_path / "out", on_progress=events.append)
    assert sorted(p.name for p in result.outputs) == ["x.png", "x_2.png"]
    assert [(e.task, e.completed, e.total) for e in events] == [
        ("images", 0, 2),
        ("images", 1, 2),
        ("images", 2, 2),
    ]
    assert result.images == 2 and result.failures == () and result.images_per_s > 0


def test_video_frames_are_reported_and_counted(tmp_path, segmenter) -> None:
    clip = tmp_path / "clip.avi"
    writer = cv2.VideoWriter(str(clip), cv2.VideoWriter_fourcc(*"MJPG"), 5.0, (48, 32))
    for value in (10, 120, 240):
        writer.write(np.full((32, 48, 3), value, np.uint8))
    writer.release()
    events: list[ProgressEvent] = []
    result = predict(
        segmenter, [clip], out=tmp_path / "o.mp4", batch_size=2, on_progress=events.append
    )
    assert result.outputs == (tmp_path / "o.mp4",) and result.images == 3
    assert [(e.task, e.completed, e.total) for e in events] == [
        ("frames clip.avi", 2, 3),
        ("frames clip.avi", 3, 3),
    ]
    assert result.warnings  # index masks are written in colour for videos


def test_unreadable_video_is_a_failure_and_leaves_no_file(tmp_path, segmenter) -> None:
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(b"not a video")
    good = _write(tmp_path / "good.png")
    result = predict(segmenter, [broken, good], out=tmp_path / "out")
    assert [name for name, _ in result.failures] == [str(broken)]
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["good.png"]


def test_options_are_checked_before_anything_is_written(tmp_path, segmenter) -> None:
    image = _write(tmp_path / "a.png")
    bad_calls = [
        dict(out=tmp_path / "o" / "m.png", overlay_out=tmp_path / "o" / "m.png"),
        dict(fmt="labelids"),
        dict(fmt="sepia"),
        dict(out=tmp_path / "o" / "v.mp4"),
    ]
    for kwargs in bad_calls:
        with pytest.raises(InputError):
            predict(segmenter, [image], cwd=tmp_path, **kwargs)
    assert not (tmp_path / "runs").exists() and not (tmp_path / "o").exists()


def test_a_batch_that_fails_is_retried_image_by_image(tmp_path, segmenter, monkeypatch) -> None:
    good = [_write(tmp_path / "in" / f"{name}.png") for name in ("a", "c")]
    thin = _write(tmp_path / "in" / "b.png", height=1, width=40)
    real = Segmenter.segment_batch

    def fails_with_the_thin_image(self, images, **kwargs):
        if any(image.shape[0] == 1 for image in images):
            raise cv2.error("OpenCV(4.10) resize.cpp:1: error: (-215:Assertion failed) inv_scale")
        return real(self, images, **kwargs)

    monkeypatch.setattr(Segmenter, "segment_batch", fails_with_the_thin_image)
    result = predict(segmenter, [tmp_path / "in"], out=tmp_path / "out", batch_size=3)
    reason = f"{thin}: cv2.error: (-215:Assertion failed) inv_scale"
    assert result.failures == ((str(thin), reason),)
    assert [path.name for path in result.masks] == [path.name for path in good]
    assert result.images == 2 and all(path.is_file() for path in result.masks)


def test_plan_skips_finished_inputs_and_refuses_to_replace(tmp_path, segmenter) -> None:
    images = [_write(tmp_path / "in" / f"{name}.png") for name in ("a", "b")]
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "a.png").write_bytes(b"earlier result")
    plan = plan_predict(images, out=tmp_path / "out", skip_existing=True)
    assert [job.source.path for job in plan.jobs] == [images[1]] and plan.skipped == 1
    with pytest.raises(InputError, match="a.png already exists: add --overwrite"):
        plan_predict(images, out=tmp_path / "out")
    with pytest.raises(InputError, match="exclude each other"):
        plan_predict(images, out=tmp_path / "out", overwrite=True, skip_existing=True)
    assert (tmp_path / "out" / "a.png").read_bytes() == b"earlier result"


def test_workers_and_the_writer_thread_write_what_the_plain_loop_writes(
    tmp_path, segmenter
) -> None:
    for index, size in enumerate([(32, 48), (24, 40), (32, 48), (24, 40), (32, 48)]):
        _write(tmp_path / "in" / f"{index}.png", *size)
    (tmp_path / "in" / "5.png").write_bytes(b"broken")
    plain = predict(segmenter, [tmp_path / "in"], out=tmp_path / "plain", batch_size=2)
    piped = predict(segmenter, [tmp_path / "in"], out=tmp_path / "piped", batch_size=2, workers=2)
    for path in plain.masks:
        assert (tmp_path / "piped" / path.name).read_bytes() == path.read_bytes()
    assert sorted(p.name for p in piped.masks) == sorted(p.name for p in plain.masks)
    assert [name for name, _ in piped.failures] == [str(tmp_path / "in" / "5.png")]
    assert piped.images == plain.images == 5 and 0 <= piped.input_wait < 1


def test_the_manifest_records_the_mean_confidence_with_probs(tmp_path, segmenter) -> None:
    from isaseg_cli.engine.infer.manifest import read_manifest

    image = _write(tmp_path / "a.png")
    result = predict(
        segmenter, [image], out=tmp_path / "o" / "m.png", probs_out=tmp_path / "o" / "p.npy",
        manifest=True,
    )  # fmt: skip
    (record,) = read_manifest(tmp_path / "o" / "manifest.jsonl")
    probs = np.load(tmp_path / "o" / "p.npy")
    assert record["mean_confidence"] == pytest.approx(float(probs.max(axis=0).mean()))
    assert record["outputs"] == [str(path) for path in result.masks + result.probs]
    assert record["status"] == "ok" and record["seconds"] > 0 and record["rank"] == 0


def test_ctrl_c_with_workers_keeps_the_finished_writes(tmp_path, segmenter, monkeypatch) -> None:
    for name in ("a", "b", "c"):
        _write(tmp_path / "in" / f"{name}.png")
    real, calls = Segmenter.segment_batch, []

    def interrupted_on_second(self, images, *prepared, **kwargs):
        calls.append(len(images))
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(self, images, **kwargs)

    monkeypatch.setattr(Segmenter, "segment_batch", interrupted_on_second)
    monkeypatch.setattr(Segmenter, "segment_prepared", interrupted_on_second)  # with workers
    result = predict(segmenter, [tmp_path / "in"], out=tmp_path / "out", workers=1, manifest=True)
    assert result.interrupted and [path.name for path in result.masks] == ["a.png"]
    assert sorted(path.name for path in (tmp_path / "out").iterdir()) == ["a.png", "manifest.jsonl"]
