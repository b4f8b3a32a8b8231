"""predict's two sides: decoding in worker processes, size batches, the writer thread."""

from __future__ import annotations

import dataclasses
import threading
from pathlib import Path

import cv2
import numpy as np
import pytest

from isaseg_cli.engine.infer.predict_io import (
    BackgroundWriter,
    Decoded,
    InlineWriter,
    decode_images,
    size_batches,
)
from isaseg_cli.engine.infer.protocol import prepare_image
from isaseg_cli.errors import OutputError
from isaseg_cli.zoo.spec import TestSpec


def _images(folder: Path) -> list[Path]:
    folder.mkdir()
    paths = []
    for index, shape in enumerate([(32, 48), (20, 30), (32, 48)]):
        image = np.random.default_rng(index).integers(0, 256, (*shape, 3), dtype=np.uint8)
        paths.append(folder / f"{index}.png")
        cv2.imwrite(str(paths[-1]), image)
    broken = folder / "broken.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\n cut short")
    return [paths[0], broken, paths[1], paths[2]]


@pytest.mark.parametrize("workers", [0, 2])
def test_decoded_in_order_with_failures_named(tmp_path, workers) -> None:
    paths = _images(tmp_path / "in")
    decoded = list(decode_images(paths, workers=workers, max_pixels=10_000))
    assert [item.index for item in decoded] == [0, 1, 2, 3]
    for item, path in zip(decoded, paths, strict=True):
        if path.name == "broken.png":
            assert item.image is None and item.reason.startswith(f"cannot decode {path}: ")
        else:
            assert item.reason is None and np.array_equal(item.image, cv2.imread(str(path)))
    limited = list(decode_images(paths[:1], workers=workers, max_pixels=100))
    assert limited[0].image is None and "exceeds --max-pixels 100" in limited[0].reason


def _item(index: int, shape: tuple[int, int] | None) -> Decoded:
    image = None if shape is None else np.zeros((*shape, 3), np.uint8)
    return Decoded(index, image, None if shape else "bad", 0.0)


def test_size_batches_group_equal_sizes_and_hold_few_images() -> None:
    a, b, c = (4, 4), (4, 6), (6, 4)
    items = [_item(0, a), _item(1, b), _item(2, None), _item(3, a), _item(4, c), _item(5, b)]
    batches = [[item.index for item in batch] for batch in size_batches(iter(items), 2)]
    assert batches == [[2], [0, 3], [1, 5], [4]]
    # four sizes, none twice: once 2 x 2 images wait, the oldest size goes on, partial
    spread = [_item(i, (4, 4 + i)) for i in range(5)]
    assert [[i.index for i in b] for b in size_batches(iter(spread), 2)] == [
        [0],
        [1],
        [2],
        [3],
        [4],
    ]
    assert [len(b) for b in size_batches(iter([_item(i, a) for i in range(5)]), 2)] == [2, 2, 1]


def test_background_writer_runs_in_order_off_the_calling_thread() -> None:
    done: list[tuple[int, str]] = []
    writer = BackgroundWriter(depth=2)
    for index in range(5):
        writer.submit(lambda index=index: done.append((index, threading.current_thread().name)))
    writer.close()
    assert [index for index, _ in done] == [0, 1, 2, 3, 4]
    assert {name for _, name in done} == {"predict-writer"}


def test_a_write_error_stops_the_writer_and_reaches_the_caller() -> None:
    done: list[int] = []
    gate = threading.Event()
    writer = BackgroundWriter(depth=4)

    def full_disk() -> None:
        gate.wait(5)
        raise OutputError("cannot write out/b.png: No space left on device")

    writer.submit(lambda: done.append(0))
    writer.submit(full_disk)
    writer.submit(lambda: done.append(2))  # queued behind the failing write: dropped
    gate.set()
    with pytest.raises(OutputError, match="out/b.png"):
        writer.close()
    assert done == [0]
    inline = InlineWriter()
    assert inline.submit(lambda: done.append(3)) >= 0 and done == [0, 3]
    with pytest.raises(OutputError):
        inline.submit(full_disk)


SCALED = TestSpec(mode="whole", scale=(40, 24))


@pytest.mark.parametrize("workers", [0, 2])
def test_inputs_are_prepared_where_they_are_decoded(tmp_path, workers) -> None:
    paths = _images(tmp_path / "in")
    decoded = list(decode_images(paths, workers=workers, max_pixels=10_000, prepare=SCALED))
    for item, path in zip(decoded, paths, strict=True):
        if item.image is None:
            assert item.prepared is None and path.name == "broken.png"
        else:
            assert item.prepared.shape == (24, 36, 3) and item.prepared.dtype == np.uint8
            assert np.array_equal(item.prepared, prepare_image(cv2.imread(str(path)), SCALED))
    assert all(item.prepared is None for item in decode_images(paths, workers=0, max_pixels=10**4))
    # no test scale: the image is its own input, sent once
    unscaled = decode_images(paths[:1], workers=workers, max_pixels=10**4, prepare=TestSpec())
    assert all(item.prepared is item.image for item in unscaled)


def test_predict_with_workers_segments_their_inputs(tmp_path, tiny_checkpoint, monkeypatch) -> None:
    from isaseg_cli.engine.infer.predict import predict
    from isaseg_cli.engine.infer.segmenter import Segmenter
    from isaseg_cli.engine.loading import load_model

    loaded = load_model(checkpoint=tiny_checkpoint)
    entry = dataclasses.replace(loaded.entry, test=SCALED)
    segmenter = Segmenter(dataclasses.replace(loaded, entry=entry), device="cpu")
    paths = _images(tmp_path / "in")
    plain = predict(segmenter, paths, out=tmp_path / "plain", batch_size=2, overwrite=True)
    prepared_batches: list[int] = []
    real = Segmenter.segment_prepared

    def counted(self, images, inputs, **kwargs):
        prepared_batches.append(len(inputs))
        return real(self, images, inputs, **kwargs)

    monkeypatch.setattr(Segmenter, "segment_prepared", counted)
    piped = predict(segmenter, paths, out=tmp_path / "piped", batch_size=2, workers=2)
    assert sorted(prepared_batches) == [1, 2]  # the two 32x48 images together, the 20x30 alone
    assert [path.name for path in piped.masks] == [path.name for path in plain.masks]
    for path in plain.masks:
        assert (tmp_path / "piped" / path.name).read_bytes() == path.read_bytes()
