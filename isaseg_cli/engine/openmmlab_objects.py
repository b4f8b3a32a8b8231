"""Inert stand-ins for the OpenMMLab objects that training checkpoints pickle, so they load with
``torch.load(weights_only=True)`` without mmengine or mmcv installed.

A stand-in only stores the values the file gives it: nothing is imported, called or executed.
The names are the ones mmengine's ``Runner.save_checkpoint`` and mmcv 1.x's runner write
(``message_hub`` with ``HistoryBuffer`` objects; ``Config``/``ConfigDict`` in older files).
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

import numpy as np


class InertRecord:
    """An unpickled object reduced to its saved state (``state``); it has no behaviour."""

    def __init__(self) -> None:
        self.state: Any = None

    def __setstate__(self, state: Any) -> None:
        self.state = state

    def __repr__(self) -> str:
        return f"<{type(self).__name__} stand-in>"


class HistoryBuffer(InertRecord):
    """mmengine's logged-scalar history (``_log_history``/``_count_history`` arrays)."""


class MessageHub(InertRecord):
    """mmengine's MessageHub, which files from early mmengine versions pickle whole."""


class Config(InertRecord):
    """mmengine/mmcv ``Config``; its state is a tuple (cfg dict, filename, text, ...)."""


class ConfigDict:
    """mmengine's and mmcv 1.x's ``ConfigDict`` (an addict ``Dict``) becomes an OrderedDict.

    mmengine pickles it as a call ``ConfigDict(plain_dict)``; mmcv 1.x (and addict) as an empty
    instance filled item by item. torch's weights-only unpickler fills only exact dict types, so
    ``__new__`` hands it an ``OrderedDict``. addict's state is the dict itself, which the
    unpickler then copies into the OrderedDict's attribute namespace: inert, and never read.
    """

    def __new__(cls, *args: Any, **kwargs: Any) -> OrderedDict:  # type: ignore[misc]
        return OrderedDict(*args[:1])


_numpy_core: Any = getattr(np, "_core", None) or np.core  # numpy >= 2 renamed numpy.core

# (stand-in, the name a checkpoint's pickle uses for it). numpy 1.x files name numpy.core,
# numpy 2 files numpy._core: both map to numpy's own array/scalar rebuilders, which only
# build arrays from bytes.
OPENMMLAB_GLOBALS: list[Any] = [
    (HistoryBuffer, "mmengine.logging.history_buffer.HistoryBuffer"),
    (MessageHub, "mmengine.logging.message_hub.MessageHub"),
    (ConfigDict, "mmengine.config.config.ConfigDict"),
    (Config, "mmengine.config.config.Config"),
    (ConfigDict, "mmcv.utils.config.ConfigDict"),
    (Config, "mmcv.utils.config.Config"),
    (ConfigDict, "addict.addict.Dict"),
    np.dtype,
    np.ndarray,
    *{
        type(np.dtype(name))
        for name in ("float64", "float32", "float16", "int64", "int32", "int16", "int8")
        + ("uint64", "uint32", "uint16", "uint8", "bool")
    },
    *(
        (getattr(_numpy_core.multiarray, name), f"{module}.multiarray.{name}")
        for name in ("_reconstruct", "scalar")
        for module in ("numpy.core", "numpy._core")
    ),
]
