"""What the ONNX Runtime and OpenVINO backends share: their extras, thread count, the stage
callback of a first run, and small file and error helpers."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import numpy as np

EXTRAS = {"onnxruntime": "onnx", "openvino": "openvino"}
# images (N, 3, H, W) float32 to logits (N, K, H, W) float32
Runner = Callable[[np.ndarray], np.ndarray]
# told "optimize" before a backend's optimised graph is built and kept, "wait" while another
# process builds it
StageFn = Callable[[str], None]


def default_threads() -> int | None:
    """OMP_NUM_THREADS when set, as torch reads it; None leaves the choice to the backend (one
    thread per physical core, as torch's own default)."""
    try:
        threads = int(os.environ.get("OMP_NUM_THREADS", ""))
    except ValueError:
        return None
    return threads if threads > 0 else None


def writable(folder: Path) -> bool:
    """Whether ``folder`` is a writable folder, made here when it is missing."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError:
        return False
    return os.access(folder, os.W_OK)


def first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
