from __future__ import annotations

from pathlib import Path

import pytest
import torch

from isaseg_cli.engine import loading
from isaseg_cli.engine.loading import default_palette, entry_classes, load_model
from isaseg_cli.errors import CheckpointError
from isaseg_cli.zoo.catalog import resolve_entry
from isaseg_cli.zoo.spec import to_dict
from tests.helpers import TINY, TINY_CLASSES, make_tiny_entry
from tests.openmmlab_checkpoints import write_mmcv_checkpoint, write_mmengine_checkpoint


def test_checkpoint_written_by_isaseg_rebuilds_its_model(tiny_checkpoint: Path) -> None:
    loaded = load_model(checkpoint=tiny_checkpoint)
    assert loaded.entry == make_tiny_entry()
    assert loaded.classes == TINY_CLASSES
    assert not loaded.model.training


def test_mmseg_checkpoint_needs_the_architecture() -> None:
    with pytest.raises(CheckpointError, match="--model"):
        load_model(checkpoint=TINY / "checkpoint.pth")
    loaded = load_model(make_tiny_entry(), TINY / "checkpoint.pth")
    reference = torch.load(TINY / "checkpoint.pth", weights_only=True)["state_dict"]
    assert torch.equal(
        loaded.model.state_dict()["decode_head.conv_seg.bias"],
        reference["decode_head.conv_seg.bias"],
    )


def test_wrong_architecture_is_a_one_line_error() -> None:
    with pytest.raises(CheckpointError, match="does not fit the model"):
        load_model(
            make_tiny_entry(num_classes=7, classes=tuple("abcdefg")), TINY / "checkpoint.pth"
        )


def test_zoo_classes_and_fallbacks() -> None:
    classes, palette = entry_classes(resolve_entry("isanet_r50_ade20k"))
    assert len(classes) == len(palette) == 150 and classes[7] == "bed "
    classes, palette = entry_classes(make_tiny_entry(), {"CLASSES": ["a", "b"]})  # wrong length
    assert classes == TINY_CLASSES and palette == default_palette(5)
    assert entry_classes(
        make_tiny_entry(), {"CLASSES": list("vwxyz"), "PALETTE": [[1, 2, 3]] * 5}
    ) == (
        tuple("vwxyz"),
        ((1, 2, 3),) * 5,
    )


def _tiny_meta(**model_changes: object) -> dict:
    entry = to_dict(make_tiny_entry())
    for path, value in model_changes.items():
        *parents, last = path.split("__")
        node = entry["model"]
        for name in parents:
            node = node[name]
        node[last] = value
    return {"isaseg": {"entry": entry}}


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"head__channels": 1_000_000}, r"model\.head\.channels=1000000 \(expected 1\.\.4096\)"),
        ({"num_classes": 10**9}, r"model\.num_classes=1000000000"),
        ({"head__channels": 4096}, "does not fit the model"),  # in bounds, not the weights'
    ],
)
def test_absurd_architecture_in_meta_is_refused_before_building(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, change: dict, message: str
) -> None:
    path = tmp_path / "absurd.pth"
    # A few KB, as in the report; the in-bounds case carries the real weights.
    in_bounds = message == "does not fit the model"
    state = torch.load(TINY / "checkpoint.pth", weights_only=True)["state_dict"]
    torch.save({"meta": _tiny_meta(**change), "state_dict": state if in_bounds else {}}, path)
    assert in_bounds or path.stat().st_size < 8_000
    built = []
    real_build = loading.build_model

    def recording_build(spec, **kwargs):
        model = real_build(spec, **kwargs)
        built.append(next(model.parameters()).device.type)
        return model

    monkeypatch.setattr(loading, "build_model", recording_build)
    with pytest.raises(CheckpointError, match=message) as info:
        load_model(checkpoint=path)
    assert "\n" not in str(info.value) and str(path) in str(info.value)
    assert all(device == "meta" for device in built)  # nothing was allocated for real


def test_mmengine_training_checkpoint_loads_with_its_dataset_meta(tmp_path: Path) -> None:
    state = torch.load(TINY / "checkpoint.pth", weights_only=True)["state_dict"]
    palette = [[10 * i, 20 * i, 30 * i] for i in range(5)]
    for write in (write_mmengine_checkpoint, write_mmcv_checkpoint):
        path = write(tmp_path / "trained.pth", state, tuple("abcde"), palette)
        loaded = load_model(make_tiny_entry(), path)
        assert loaded.classes == tuple("abcde")
        assert loaded.palette == tuple(tuple(color) for color in palette)
        assert all(torch.equal(loaded.model.state_dict()[k], v) for k, v in state.items())
