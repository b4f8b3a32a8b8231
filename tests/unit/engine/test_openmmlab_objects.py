"""The stand-ins let torch's weights-only unpickler read OpenMMLab objects, and keep only data."""

from __future__ import annotations

import pickle
from collections import OrderedDict
from pathlib import Path

import numpy as np
import pytest
import torch

from isaseg_cli.engine.openmmlab_objects import (
    OPENMMLAB_GLOBALS,
    Config,
    HistoryBuffer,
    MessageHub,
)
from tests.openmmlab_checkpoints import (
    MMCV_NAMES,
    MMENGINE_NAMES,
    AddictDict,
    MmengineConfig,
    MmengineConfigDict,
    registered_as,
)
from tests.openmmlab_checkpoints import HistoryBuffer as FakeHistoryBuffer
from tests.openmmlab_checkpoints import MessageHub as FakeMessageHub


@pytest.fixture(scope="module")
def saved(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One file holding each pickled OpenMMLab object, written as mmengine and mmcv would."""
    path = tmp_path_factory.mktemp("openmmlab") / "objects.pth"
    hub_state = {"log_scalars": {}, "runtime_info": {"iter": 2}, "resumed_keys": {}}
    with registered_as({**MMENGINE_NAMES, **MMCV_NAMES}):
        torch.save(
            {
                "buffer": FakeHistoryBuffer([0.5, 0.25]),
                "hub": FakeMessageHub(hub_state),
                "config": MmengineConfig("model = dict()\n"),
                "mmengine_dict": MmengineConfigDict(classes=("a", "b")),
                "mmcv_dict": AddictDict(palette=[[1, 2, 3]]),
            },
            path,
        )
    return path


def _load(path: Path) -> dict:
    with torch.serialization.safe_globals(OPENMMLAB_GLOBALS):
        return torch.load(path, weights_only=True)


def test_without_the_stand_ins_the_weights_only_unpickler_refuses(saved: Path) -> None:
    with pytest.raises(pickle.UnpicklingError, match="HistoryBuffer"):
        torch.load(saved, weights_only=True)


def test_history_buffers_and_message_hubs_keep_only_their_state(saved: Path) -> None:
    loaded = _load(saved)
    buffer, hub = loaded["buffer"], loaded["hub"]
    assert isinstance(buffer, HistoryBuffer) and isinstance(hub, MessageHub)
    assert np.array_equal(buffer.state["_log_history"], [0.5, 0.25])
    assert buffer.state["_count_history"].dtype == np.int64
    assert hub.state["_runtime_info"] == {"iter": 2}
    assert repr(buffer) == "<HistoryBuffer stand-in>"


def test_config_dicts_of_both_generations_become_ordered_dicts(saved: Path) -> None:
    loaded = _load(saved)
    assert loaded["mmengine_dict"] == OrderedDict(classes=("a", "b"))
    assert type(loaded["mmengine_dict"]) is OrderedDict
    assert loaded["mmcv_dict"] == OrderedDict(palette=[[1, 2, 3]])
    config = loaded["config"]
    assert isinstance(config, Config)
    cfg_dict, filename, text = config.state[:3]
    assert cfg_dict == OrderedDict(model={"type": "EncoderDecoder"})
    assert (filename, text) == ("isanet.py", "model = dict()\n")
