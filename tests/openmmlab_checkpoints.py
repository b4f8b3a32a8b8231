"""Training checkpoints in the structures mmengine (mmseg 1.x) and mmcv 1.x (mmseg 0.x) write,
built without either installed: local classes that pickle like theirs are registered under their
module names only while the file is written.

What goes in follows mmengine's ``Runner.save_checkpoint`` (meta with cfg/seed/dataset_meta,
``message_hub`` holding ``HistoryBuffer`` objects, ``optimizer``, ``param_schedulers``) and mmcv
1.x's ``save_checkpoint`` with mmseg 0.x's ``train.py`` meta (config text, env_info, CLASSES,
PALETTE, hook_msgs, iter, epoch; ``optimizer``).
"""

from __future__ import annotations

import sys
import types
from collections import OrderedDict
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch


class HistoryBuffer:
    """Pickles like ``mmengine.logging.history_buffer.HistoryBuffer`` (its ``__dict__``)."""

    def __init__(self, values: list[float]) -> None:
        self.max_length = 1000000
        self._log_history = np.array(values, dtype=np.float64)
        self._count_history = np.ones(len(values), dtype=np.int64)


class MessageHub:
    """Pickles like ``mmengine.logging.message_hub.MessageHub``, saved whole by early mmengine."""

    def __init__(self, state: dict[str, Any]) -> None:
        self._instance_name = "isanet_tiny"
        self._log_scalars = state["log_scalars"]
        self._runtime_info = state["runtime_info"]
        self._resumed_keys = state["resumed_keys"]


class MmengineConfigDict(dict):
    """Pickles like mmengine's ``ConfigDict``: ``__reduce_ex__`` returns a call with a dict."""

    def __reduce_ex__(self, protocol: Any) -> tuple:
        return (self.__class__, (dict(self),), None, None, None, None)


class MmengineConfig:
    """Pickles like mmengine's ``Config``: a 6-tuple state."""

    def __init__(self, text: str) -> None:
        self._cfg_dict = MmengineConfigDict(model={"type": "EncoderDecoder"})
        self._text = text

    def __getstate__(self) -> tuple:
        return (self._cfg_dict, "isanet.py", self._text, {}, True, set())


class AddictDict(dict):
    """Pickles like mmcv 1.x's ``ConfigDict`` (an addict ``Dict``): empty object, items, self."""

    def __getstate__(self) -> Any:
        return self

    def __setstate__(self, state: Any) -> None:
        self.update(state)


MMENGINE_NAMES = {
    "mmengine.logging.history_buffer.HistoryBuffer": HistoryBuffer,
    "mmengine.logging.message_hub.MessageHub": MessageHub,
    "mmengine.config.config.ConfigDict": MmengineConfigDict,
    "mmengine.config.config.Config": MmengineConfig,
}
MMCV_NAMES = {"mmcv.utils.config.ConfigDict": AddictDict}


@contextmanager
def registered_as(names: dict[str, type]) -> Iterator[None]:
    """While inside, each class pickles under its "module.Name" (fake modules in sys.modules)."""
    added: list[str] = []
    saved = {cls: (cls.__module__, cls.__qualname__) for cls in names.values()}
    for full_name, cls in names.items():
        module_name, _, name = full_name.rpartition(".")
        parts = module_name.split(".")
        for depth in range(1, len(parts) + 1):
            prefix = ".".join(parts[:depth])
            if prefix not in sys.modules:
                sys.modules[prefix] = types.ModuleType(prefix)
                added.append(prefix)
        assert prefix in added, f"{prefix} is really installed; these tests need it absent"
        cls.__module__, cls.__qualname__ = module_name, name
        setattr(sys.modules[module_name], name, cls)
    try:
        yield
    finally:
        for prefix in added:
            del sys.modules[prefix]
        for cls, (module, qualname) in saved.items():
            cls.__module__, cls.__qualname__ = module, qualname


def _optimizer_state(state_dict: dict[str, torch.Tensor]) -> dict[str, Any]:
    first = next(iter(state_dict.values()))
    return {
        "state": {0: {"momentum_buffer": torch.zeros_like(first)}},
        "param_groups": [
            {"lr": 0.0099, "momentum": 0.9, "dampening": 0, "weight_decay": 0.0005,
             "nesterov": False, "maximize": False, "foreach": None, "differentiable": False,
             "fused": None, "initial_lr": 0.01, "params": [0]},
        ],
    }  # fmt: skip


def write_mmengine_checkpoint(
    path: Path,
    state_dict: dict[str, torch.Tensor],
    classes: tuple[str, ...],
    palette: list[list[int]],
    *,
    old_format: bool = False,
    extra_meta: dict[str, Any] | None = None,
) -> Path:
    """An mmseg 1.x training checkpoint. ``old_format``: the message hub pickled whole, the
    dataset meta a ConfigDict and the config object in the runtime info (early mmengine)."""
    cfg_text = "model = dict(type='EncoderDecoder', decode_head=dict(type='ISAHead'))\n"
    dataset_meta: dict[str, Any] = {
        "classes": classes,
        "palette": palette,
        "label_map": None,
        "reduce_zero_label": False,
    }
    if old_format:
        dataset_meta = MmengineConfigDict(dataset_meta)
    meta = {
        "cfg": cfg_text,
        "seed": 1234,
        "experiment_name": "isanet_tiny_20240101_000000",
        "time": "20240101_000100",
        "mmengine_version": "0.10.4",
        "dataset_meta": dataset_meta,
        "epoch": 0,
        "iter": 20,
        **(extra_meta or {}),
    }
    runtime_info: dict[str, Any] = {
        "cfg": cfg_text,
        "seed": 1234,
        "experiment_name": "isanet_tiny_20240101_000000",
        "mmengine_version": "0.10.4",
        "loop_stage": "train",
        "epoch": 0,
        "iter": 20,
        "max_epochs": 1,
        "max_iters": 20,
        "dataset_meta": dataset_meta,
        "last_ckpt": "work_dirs/isanet_tiny/iter_20.pth",
        "best_mIoU": np.float64(0.4215),
    }
    if old_format:
        runtime_info["config"] = MmengineConfig(cfg_text)
    hub: Any = {
        "log_scalars": OrderedDict(
            (name, HistoryBuffer(values))
            for name, values in (
                ("train/lr", [0.01, 0.0099]),
                ("train/loss", [2.31, 2.05]),
                ("train/time", [0.41, 0.39]),
            )
        ),
        "runtime_info": OrderedDict(runtime_info),
        "resumed_keys": OrderedDict((key, True) for key in runtime_info),
    }
    checkpoint = {
        "meta": meta,
        "state_dict": OrderedDict(state_dict),
        "message_hub": MessageHub(hub) if old_format else hub,
        "optimizer": _optimizer_state(state_dict),
        "param_schedulers": [
            {"eta_min": 0.0001, "power": 0.9, "begin": 0, "end": 20, "by_epoch": False,
             "last_step": 20, "verbose": False, "_global_step": 20, "base_values": [0.01],
             "_get_value_called_within_step": False, "_last_value": [0.0099],
             "param_name": "lr"},
        ],
    }  # fmt: skip
    with registered_as(MMENGINE_NAMES):
        torch.save(checkpoint, path)
    return path


def write_mmcv_checkpoint(
    path: Path,
    state_dict: dict[str, torch.Tensor],
    classes: tuple[str, ...],
    palette: list[list[int]],
    *,
    numpy_palette: bool = False,
    extra_meta: dict[str, Any] | None = None,
) -> Path:
    """An mmseg 0.x training checkpoint (mmcv 1.x ``IterBasedRunner``). ``numpy_palette``: the
    random palette mmseg 0.x makes for custom classes, a NumPy array."""
    meta = {
        "env_info": "sys.platform: linux\nPython: 3.8.10\nCUDA available: True\n",
        "seed": 1234,
        "exp_name": "isanet_tiny.py",
        "mmseg_version": "0.30.0+abcdef0",
        "config": "model = dict(type='EncoderDecoder')\n",
        "CLASSES": classes,
        "PALETTE": np.array(palette, dtype=np.int64) if numpy_palette else palette,
        "hook_msgs": AddictDict(last_ckpt="work_dirs/isanet_tiny/iter_20.pth"),
        "mmcv_version": "1.7.1",
        "time": "Mon Jan  1 00:01:00 2024",
        "iter": 20,
        "epoch": 1,
        **(extra_meta or {}),
    }
    checkpoint = {
        "meta": meta,
        "state_dict": OrderedDict(state_dict),
        "optimizer": _optimizer_state(state_dict),
    }
    with registered_as(MMCV_NAMES):
        torch.save(checkpoint, path)
    return path
