from __future__ import annotations

import json
import os
import pickle
import re
import zipfile
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
from tests.helpers import TINY, TINY_CLASSES, make_tiny_entry, tiny_model_spec


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
    named = re.escape(f"({Opaque.__module__}.Opaque); ")
    with pytest.raises(CheckpointError, match=named + ".*--trust-checkpoint"):
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


def _not_a_torch_zip(path: Path) -> None:
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("weights/readme.txt", "not a tensor")


def _pickle_without_torch_header(path: Path) -> None:
    path.write_bytes(pickle.dumps({"state_dict": {"a": 1}}, protocol=2))


@pytest.mark.parametrize(
    ("make", "what"),
    [
        (lambda p: p.write_bytes(b""), "the file is empty"),
        (lambda p: p.write_bytes(bytes(range(256)) * 8), "unrecognised bytes"),
        (lambda p: p.write_bytes(b"\x80" + bytes(range(255, 0, -1))), "or is damaged"),
        (lambda p: p.write_text(json.dumps({"state_dict": {}})), "a JSON or other text file"),
        (lambda p: p.write_text("hello, not a checkpoint"), "a text file"),
        (lambda p: p.write_text("<!DOCTYPE html><title>404</title>"), "an HTML page"),
        (_not_a_torch_zip, "a zip archive without data.pkl"),
        (_pickle_without_torch_header, "or is damaged"),
        (
            lambda p: p.write_bytes((TINY / "checkpoint.pth").read_bytes()[:5000]),
            "truncated or damaged zip archive",
        ),
        (lambda p: p.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(64)), "a PNG image"),
    ],
)
def test_files_that_are_not_checkpoints_say_so(tmp_path: Path, make, what: str) -> None:
    path = tmp_path / "broken.pth"
    make(path)
    with pytest.raises(CheckpointError) as info:
        read_checkpoint(path)
    message = str(info.value)
    assert "not a PyTorch checkpoint" in message and what in message, message
    assert "\n" not in message and "trust" not in message


class _System:
    """Unpickles into ``os.system(command)``: the classic malicious checkpoint."""

    def __init__(self, command: str) -> None:
        self.command = command

    def __reduce__(self) -> tuple:
        return (os.system, (self.command,))


class _Eval:
    def __reduce__(self) -> tuple:
        return (eval, ("open('pwned-by-eval', 'w')",))


@pytest.mark.parametrize("container", ["torch.save", "bare pickle"])
@pytest.mark.parametrize("trust", [False, True])
def test_a_pickle_that_runs_commands_is_refused_without_running(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, container: str, trust: bool
) -> None:
    monkeypatch.chdir(tmp_path)
    marker = tmp_path / "pwned"
    payload = {"state_dict": _reference_state(), "meta": {"x": _System(f"touch {marker}")}}
    path = tmp_path / "evil.pth"
    if container == "torch.save":
        torch.save(payload, path)
    else:
        path.write_bytes(pickle.dumps(payload, protocol=2))
    with pytest.raises(CheckpointError) as info:
        read_checkpoint(path, trust=trust)
    assert not marker.exists()
    if container == "torch.save":  # torch's own header is missing from a bare pickle
        assert "would call posix.system" in str(info.value) or "nt.system" in str(info.value)
        assert "--trust-checkpoint" not in str(info.value)
    torch.save({"meta": {"x": _Eval()}}, path)
    with pytest.raises(CheckpointError, match="would call eval"):
        read_checkpoint(path, trust=trust)
    assert not (tmp_path / "pwned-by-eval").exists()


def test_missing_file_and_non_checkpoint_payloads(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="not found"):
        read_checkpoint(tmp_path / "nope.pth")
    torch.save([1, 2, 3], tmp_path / "list.pth")
    with pytest.raises(CheckpointError, match="holds a list"):
        read_checkpoint(tmp_path / "list.pth")
    torch.save({"state_dict": {"a": 1}}, tmp_path / "notensor.pth")
    with pytest.raises(CheckpointError, match="not a tensor"):
        load_weights(build_model(tiny_model_spec()), tmp_path / "notensor.pth")
