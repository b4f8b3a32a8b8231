from __future__ import annotations

import dataclasses
import hashlib
import shutil
from pathlib import Path

import numpy as np
import pytest

from isaseg_cli import api
from isaseg_cli.engine.infer.pipeline import infer_scores
from isaseg_cli.errors import ZooLookupError
from isaseg_cli.zoo.spec import WeightsSpec
from tests.helpers import make_tiny_entry


def test_resolve_and_list() -> None:
    assert len(api.list_models()) == 16
    assert api.resolve("isanet_r101_cityscapes").weights.filename.endswith("-24f71dfa.pth")
    with pytest.raises(ZooLookupError):
        api.resolve("isanet_r999_mars")


def test_checkpoint_path_then_model_then_mask(
    tmp_path: Path, monkeypatch, tiny_checkpoint, tiny_image_path
) -> None:
    """Name -> cached checkpoint -> model -> mask, with a local file standing in for the server."""
    monkeypatch.setenv("ISASEG_HOME", str(tmp_path / "home"))
    digest = hashlib.sha256(tiny_checkpoint.read_bytes()).hexdigest()[:8]
    served = tmp_path / f"tiny-{digest}.pth"
    shutil.copy(tiny_checkpoint, served)
    entry = dataclasses.replace(
        make_tiny_entry(), weights=WeightsSpec(url=served.as_uri(), sha256=digest)
    )
    path = api.checkpoint_path(entry)
    assert (
        path.parent == tmp_path / "home" / "checkpoints"
        and path.read_bytes() == served.read_bytes()
    )
    loaded = api.load_model(entry)
    mask = api.Segmenter(loaded, device="cpu")(tiny_image_path)
    from isaseg_cli.data.image import read_image_bgr

    reference = infer_scores(loaded.model, read_image_bgr(tiny_image_path), entry.test).argmax(1)[0]
    assert np.array_equal(mask, reference.numpy())
