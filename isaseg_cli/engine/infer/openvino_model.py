"""An exported file compiled by OpenVINO for the CPU, through OpenVINO's own model cache when
a cache folder is given, so that later starts import the compiled model instead."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from isaseg_cli.engine.extras import require
from isaseg_cli.engine.infer.runtime import (
    EXTRAS,
    Runner,
    StageFn,
    default_threads,
    first_line,
    writable,
)
from isaseg_cli.errors import ExportError
from isaseg_cli.hub.lock import exclusive


def openvino_model(
    path: Path,
    threads: int | None,
    cache_dir: Path | None,
    on_stage: StageFn | None,
    lock_name: str | None = None,
) -> tuple[Runner, dict[str, str]]:
    """The file's runner (float32, ``threads`` threads) and its ``metadata_props``.

    With ``cache_dir``, OpenVINO keeps the compiled model there (its ``CACHE_DIR``: one blob
    per model, found by a hash of the model, the options, the CPU and OpenVINO's version) and
    later starts import it: R-50 took 1.0 s to compile and 0.2 s to import on the Xeon.
    Compiles hold a file lock there (``lock_name``, default ``path``'s stem), so no process
    imports a blob another is still writing; OpenVINO compiles again over a blob cut short (a
    build interrupted by Ctrl-C).
    """
    ov = require("openvino", EXTRAS["openvino"])
    core = ov.Core()
    try:
        model = core.read_model(str(path))
        # f32 asked for: on CPUs with bf16 units OpenVINO would otherwise run bf16.
        config: dict[str, Any] = {"INFERENCE_PRECISION_HINT": "f32"}
        if threads or default_threads():
            config["INFERENCE_NUM_THREADS"] = threads or default_threads()
        compiled = _compile(core, model, config, lock_name or path.stem, cache_dir, on_stage)
    except Exception as exc:
        raise ExportError(f"openvino cannot load {path}: {first_line(exc)}") from None
    # OpenVINO's ONNX reader keeps the file's metadata_props under rt_info["framework"].
    try:
        framework = dict(model.get_rt_info()["framework"])
    except (KeyError, IndexError, RuntimeError):
        framework = {}  # no metadata: open_exported says the file was not written by isaseg
    metadata = {key: value.astype(str) for key, value in framework.items()}
    request = compiled.create_infer_request()
    return (lambda images: np.array(request.infer([images])[0], copy=True)), metadata


def _compile(
    core: Any,
    model: Any,
    config: dict[str, Any],
    name: str,
    cache_dir: Path | None,
    on_stage: StageFn | None,
) -> Any:
    if cache_dir is None or not writable(cache_dir):
        return core.compile_model(model, "CPU", config)
    on_wait = None if on_stage is None else lambda: on_stage("wait")
    with exclusive(cache_dir / f"{name}.lock", on_wait):
        return core.compile_model(model, "CPU", {**config, "CACHE_DIR": str(cache_dir)})
