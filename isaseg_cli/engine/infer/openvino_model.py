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
) -> Runner:
    """The file's runner (float32, ``threads`` threads).

    With ``cache_dir``, OpenVINO keeps the compiled model there (its ``CACHE_DIR``: one blob
    per model, options, CPU and OpenVINO version) and later starts import it: R-50 took 1.0 s
    to compile and 0.2 s to import on the Xeon. Compiles hold a file lock there (``lock_name``,
    default ``path``'s stem), so no process imports a blob another is still writing; OpenVINO
    compiles again over a blob cut short (a build interrupted by Ctrl-C).

    Without ``lock_name``, ``path``'s name must change whenever its contents do (the export
    cache's files are named by what they hold), and the model is compiled from the path: on a
    cache hit OpenVINO then reads nothing but the blob (0.16 s instead of 0.52 s for R-50 with
    the file read first), since it finds the blob by the path alone. A ``lock_name`` (a user's
    file, named by its digest) has the file read, so that a file rewritten under its name gets
    a blob of its own.
    """
    ov = require("openvino", EXTRAS["openvino"])
    core = ov.Core()
    try:
        # f32 asked for: on CPUs with bf16 units OpenVINO would otherwise run bf16.
        config: dict[str, Any] = {"INFERENCE_PRECISION_HINT": "f32"}
        if threads or default_threads():
            config["INFERENCE_NUM_THREADS"] = threads or default_threads()
        model = str(path) if lock_name is None else core.read_model(str(path))
        compiled = _compile(core, model, config, lock_name or path.stem, cache_dir, on_stage)
    except Exception as exc:
        raise ExportError(f"openvino cannot load {path}: {first_line(exc)}") from None
    request = compiled.create_infer_request()
    return lambda images: np.array(request.infer([images])[0], copy=True)


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
