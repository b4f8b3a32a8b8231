from __future__ import annotations

from collections import OrderedDict
from pathlib import Path

import numpy as np
import pytest
import torch

from isaseg_cli.engine.checkpoint import (
    build_meta,
    entry_from_meta,
    load_weights,
    model_state_dict,
    read_checkpoint,
    save_checkpoint,
)
from isaseg_cli.errors import CheckpointError
from isaseg_cli.models.build import build_model
from tests.conftest import TINY, TINY_CLASSES, make_tiny_entry, tiny_model_spec


def _reference_state() -> OrderedDict:
    return torch.load(TINY / "checkpoint.pth", weights_only=True)["state_dict"]


def test_loads_the_mmseg_fixture_as_published() -> None:
    model = build_model(tiny_model_spec())
    meta = load_weights(model, TINY / "checkpoint.pth")
    assert meta["CLASSES"] == list(TINY_CLASSES)
    for key, value in _reference_state().items():
        assert torch.equal(model.state_dict()[key], value)


def test_saved_file_has_mmseg_layout_and_round_trips(tmp_path: Path) -> None:
    model = build_model(tiny_model_spec())
    model.load_state_dict(_reference_state())
    entry = make_tiny_entry()
    palette = tuple((i, i, i) for i in range(5))
    path = save_checkpoint(
        tmp_path / "out.pth",
        {"meta": build_meta(entry, TINY_CLASSES, palette), "state_dict": model_state_dict(model)},
    )
    # What mmseg reads: a plain dict with state_dict (same keys, same order) and meta.
    raw = torch.load(path, weights_only=True)
    assert list(raw["state_dict"]) == list(_reference_state())
    assert raw["meta"]["CLASSES"] == TINY_CLASSES
    assert raw["meta"]["dataset_meta"]["classes"] == TINY_CLASSES
    assert entry_from_meta(raw["meta"]) == entry
    reloaded = build_model(tiny_model_spec())
    load_weights(reloaded, path)
    assert all(
        torch.equal(a, b)
        for a, b in zip(reloaded.state_dict().values(), model.state_dict().values(), strict=True)
    )
    assert not list(tmp_path.glob(".*.tmp"))


def test_module_prefix_and_bare_state_dict(tmp_path: Path) -> None:
    state = OrderedDict((f"module.{k}", v) for k, v in _reference_state().items())
    torch.save(state, tmp_path / "ddp.pth")
    load_weights(build_model(tiny_model_spec()), tmp_path / "ddp.pth")


def test_numpy_values_in_meta_are_allowed(tmp_path: Path) -> None:
    meta = {"hook_msgs": {"best_score": np.float64(0.7)}, "arr": np.arange(3)}
    torch.save({"meta": meta, "state_dict": _reference_state()}, tmp_path / "np.pth")
    assert load_weights(build_model(tiny_model_spec()), tmp_path / "np.pth")["arr"].tolist() == [
        0,
        1,
        2,
    ]


class Opaque:
    pass


def test_arbitrary_objects_need_the_trust_flag(tmp_path: Path) -> None:
    torch.save({"meta": {"x": Opaque()}, "state_dict": _reference_state()}, tmp_path / "obj.pth")
    with pytest.raises(CheckpointError, match="--trust-checkpoint"):
        read_checkpoint(tmp_path / "obj.pth")
    assert isinstance(read_checkpoint(tmp_path / "obj.pth", trust=True)["meta"]["x"], Opaque)


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda s: s.pop("decode_head.conv_seg.bias"), "1 missing: decode_head.conv_seg.bias"),
        (
            lambda s: s.__setitem__("decode_head.extra", torch.zeros(1)),
            "1 unexpected: decode_head.extra",
        ),
        (
            lambda s: s.__setitem__("decode_head.conv_seg.bias", torch.zeros(7)),
            r"wrong shape: decode_head.conv_seg.bias \(7,\) vs model \(5,\)",
        ),
    ],
)
def test_mismatched_keys_are_named(tmp_path: Path, mutate, message) -> None:
    state = _reference_state()
    mutate(state)
    torch.save({"state_dict": state}, tmp_path / "bad.pth")
    with pytest.raises(CheckpointError, match=message):
        load_weights(build_model(tiny_model_spec()), tmp_path / "bad.pth")


def test_non_strict_skips_mismatched_classifier(tmp_path: Path) -> None:
    model = build_model(tiny_model_spec(num_classes=3))
    before = model.decode_head.conv_seg.weight.clone()
    load_weights(model, TINY / "checkpoint.pth", strict=False)
    assert torch.equal(model.decode_head.conv_seg.weight, before)
    assert torch.equal(model.backbone.stem[0].weight, _reference_state()["backbone.stem.0.weight"])


@pytest.mark.parametrize("content", [b"", b"hello, not a checkpoint", None])
def test_unreadable_files_give_one_line_errors(tmp_path: Path, content: bytes | None) -> None:
    path = tmp_path / "broken.pth"
    if content is None:  # truncated real checkpoint
        content = (TINY / "checkpoint.pth").read_bytes()[:5000]
    path.write_bytes(content)
    with pytest.raises(CheckpointError, match="not a readable checkpoint") as info:
        read_checkpoint(path)
    assert "\n" not in str(info.value)


def test_missing_file_and_non_checkpoint_payloads(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="not found"):
        read_checkpoint(tmp_path / "nope.pth")
    torch.save([1, 2, 3], tmp_path / "list.pth")
    with pytest.raises(CheckpointError, match="holds a list"):
        read_checkpoint(tmp_path / "list.pth")
    torch.save({"state_dict": {"a": 1}}, tmp_path / "notensor.pth")
    with pytest.raises(CheckpointError, match="not a tensor"):
        load_weights(build_model(tiny_model_spec()), tmp_path / "notensor.pth")
