"""Shared test fixtures: the mmseg_tiny reference data and a tiny zoo entry built like it.

Fixtures only; the helpers they use (and that test modules import) are in tests/helpers.py.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest

from isaseg_cli.zoo.spec import ZooEntry
from tests.helpers import TINY, TINY_CLASSES, make_tiny_cityscapes_entry, make_tiny_entry


@pytest.fixture(scope="session")
def expected() -> dict[str, np.ndarray]:
    with np.load(TINY / "expected.npz") as arrays:
        return {name: arrays[name] for name in arrays.files}


@pytest.fixture(scope="session")
def tiny_image_path() -> Path:
    return TINY / "image.png"


@pytest.fixture
def tiny_entry() -> ZooEntry:
    return make_tiny_entry()


@pytest.fixture
def one_thread() -> Iterator[None]:
    """Tiny models train fastest single-threaded on a shared 2-core machine."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def city_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Four synthetic image/label pairs per split in the Cityscapes layout."""
    from isaseg_cli.data.synthetic import write_synthetic_dataset

    return write_synthetic_dataset("cityscapes", tmp_path_factory.mktemp("city"), num_images=4)


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The fixture's mmseg weights re-saved by isaseg with the tiny entry in ``meta``."""
    import torch

    from isaseg_cli.engine.checkpoint import build_meta, save_checkpoint

    state = torch.load(TINY / "checkpoint.pth", weights_only=True)["state_dict"]
    palette = tuple((40 * i, 255 - 40 * i, 90) for i in range(len(TINY_CLASSES)))
    meta = build_meta(make_tiny_entry(), TINY_CLASSES, palette)
    path = tmp_path_factory.mktemp("ckpt") / "tiny.pth"
    return save_checkpoint(path, {"meta": meta, "state_dict": state})


@pytest.fixture
def tiny_zoo(monkeypatch: pytest.MonkeyPatch) -> Callable[..., None]:
    """Replaces the packaged zoo with the given entries (default: the tiny Cityscapes one) and
    makes the first of them the default model, so README commands run at tiny size."""
    from isaseg_cli.zoo import catalog

    def use(*entries: ZooEntry) -> None:
        zoo = catalog.Zoo(entries=entries or (make_tiny_cityscapes_entry(),), pretrained={})
        monkeypatch.setattr(catalog, "load_zoo", lambda path=None: zoo)
        monkeypatch.setenv("ISASEG_MODEL", zoo.entries[0].name)

    return use


@pytest.fixture(scope="session")
def tiny_onnx(tiny_checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """``isaseg export`` of the tiny checkpoint, run once per session (a dynamic export takes
    tens of seconds): {"path": the verified .onnx file, "result": its --json-out record,
    "output": what it printed}."""
    import json

    pytest.importorskip("onnxruntime")
    from typer.testing import CliRunner

    from isaseg_cli.cli import _render, app

    folder = tmp_path_factory.mktemp("onnx")
    path, record = folder / "tiny.onnx", folder / "export.json"
    args = ["export", "--checkpoint", str(tiny_checkpoint), "--out", str(path)]
    # 80 columns, as a pipe gets without $COLUMNS (rich read $COLUMNS once, at import)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(_render.console, "_width", 80)
        result = CliRunner().invoke(app, [*args, "--json-out", str(record)])
    assert result.exit_code == 0, result.output
    return {"path": path, "result": json.loads(record.read_text()), "output": result.output}
