"""ONNX Runtime sessions on an exported file, with ONNX Runtime's optimised graph (its wide 3x3
convolutions in Winograd form, ``engine.infer.winograd``) kept per CPU so that later starts
load it as is."""

from __future__ import annotations

import contextlib
import hashlib
import os
import platform
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from isaseg_cli.engine.extras import require
from isaseg_cli.engine.infer.runtime import EXTRAS, StageFn, default_threads, first_line, writable
from isaseg_cli.errors import ExportError
from isaseg_cli.hub.lock import exclusive

# What the kept ONNX Runtime graph holds beyond ONNX Runtime's own optimisations.
KEPT_GRAPH = "winograd-f4x4-2"
# How far the Winograd graph may be from the file's on the check input, relative to its logits.
WINOGRAD_TOLERANCE = 1e-3


def onnxruntime_session(
    path: Path,
    threads: int | None = None,
    *,
    optimized_dir: Path | None = None,
    kept_name: str | None = None,
    on_stage: StageFn | None = None,
) -> Any:
    """A CPU ``onnxruntime.InferenceSession`` with ``threads`` intra-op threads (default:
    ``default_threads``).

    With ``optimized_dir``, ONNX Runtime's optimised graph of ``path`` is kept there, per ONNX
    Runtime version and CPU (its layout transforms depend on the vector width), and later
    sessions load it as is instead of optimising again. The kept graph is found by
    ``kept_name`` (default: ``path``'s stem, for the export cache's files, named by what they
    hold), which must change whenever ``path``'s contents do. The kept graph
    also has its wide 3x3 convolutions in Winograd form (``engine.infer.winograd``), when that
    matches the file. Its weights are kept in a ``.data`` file beside it, which ONNX Runtime
    maps into memory instead of parsing (0.3-0.7 s less per start on R-50). One process builds
    it while others wait for it, under a file lock (``on_stage``: see ``StageFn``).
    """
    ort = require("onnxruntime", EXTRAS["onnxruntime"])
    if optimized_dir is None:
        return _new_session(ort, path, threads, None)
    kept = optimized_dir / f"{kept_name or path.stem}-{_machine_key(ort.__version__)}.onnx"
    session = _kept_session(ort, kept, threads)
    if session is not None:
        return session
    if not writable(optimized_dir):
        return _new_session(ort, path, threads, None)
    on_wait = None if on_stage is None else lambda: on_stage("wait")
    with exclusive(kept.with_suffix(".lock"), on_wait):
        session = _kept_session(ort, kept, threads)  # another process built it meanwhile
        if session is None:  # missing or damaged: a new inode, never rewriting mapped bytes
            for stale in (kept, _kept_data(kept)):
                stale.unlink(missing_ok=True)
            session = _new_session(ort, path, threads, kept, _once(on_stage, "optimize"))
    return session


def _kept_data(kept: Path) -> Path:
    return kept.with_suffix(".data")


def _kept_session(ort: Any, kept: Path, threads: int | None) -> Any | None:
    """The kept graph's session, or None when there is none or it cannot be loaded."""
    if not kept.is_file():
        return None
    options = _session_options(ort, threads)
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    try:
        return ort.InferenceSession(str(kept), options, providers=["CPUExecutionProvider"])
    except Exception:  # a damaged copy, or its .data gone: built again under the lock
        return None


def _once(on_stage: StageFn | None, stage: str) -> Callable[[], None]:
    """Tells ``on_stage`` of ``stage`` on the first call only."""
    told: list[bool] = []

    def tell() -> None:
        if on_stage is not None and not told:
            told.append(True)
            on_stage(stage)

    return tell


def _new_session(
    ort: Any,
    path: Path,
    threads: int | None,
    kept: Path | None,
    announce: Callable[[], None] = lambda: None,
) -> Any:
    """A session optimising ``path``; with ``kept``, its optimised graph is written there.
    ``announce`` is called once ``path`` has loaded and the build starts, so that a file that
    does not load gives its error alone."""
    options = _session_options(ort, threads)
    tmp = None
    if kept is not None:  # the .onnx appears last, so a kept graph always has its .data
        tmp = kept.with_name(f"{kept.stem}.{os.getpid()}.tmp")
        options.optimized_model_filepath = str(tmp)
        entries = {
            "session.optimized_model_external_initializers_file_name": _kept_data(kept).name,
            "session.optimized_model_external_initializers_min_size_in_bytes": "1024",
        }
        for name, value in entries.items():
            options.add_session_config_entry(name, value)
    try:
        session = None
        if tmp is not None and kept is not None:  # a graph to keep: worth the rewrite's seconds
            with tempfile.TemporaryDirectory(dir=tmp.parent) as work:
                session = _winograd_session(ort, path, Path(work), options, announce)
            if session is None:  # rejected: its graph is written again, from ``path``
                for rejected in (tmp, _kept_data(kept)):
                    rejected.unlink(missing_ok=True)
        if session is None:
            if kept is not None:
                announce()
            session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except BaseException as exc:  # ORT raises its own Fail/InvalidProtobuf/... types
        if tmp is not None and kept is not None:  # Ctrl-C included: no partial graph left
            for partial in (tmp, _kept_data(kept)):
                partial.unlink(missing_ok=True)
        if not isinstance(exc, Exception):
            raise
        raise ExportError(f"onnxruntime cannot load {path}: {first_line(exc)}") from None
    if tmp is not None and kept is not None:
        try:
            os.replace(tmp, kept)
        except OSError:
            tmp.unlink(missing_ok=True)
    return session


def _winograd_session(
    ort: Any, path: Path, work: Path, options: Any, announce: Callable[[], None]
) -> Any | None:
    """A session with ``options`` on ``path``'s graph with BatchNorm folded (ONNX Runtime's
    basic level) and its wide 3x3 convolutions in Winograd form (``winograd``), once it has
    matched ``path`` on a small input; None when nothing is rewritten or the two disagree."""
    try:
        import onnx
    except ImportError:  # onnxruntime installed without isaseg[onnx]
        return None
    from isaseg_cli.engine.infer import winograd

    folded, rewritten = work / "folded.onnx", work / "winograd.onnx"
    basic = _session_options(ort, None)
    basic.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    basic.optimized_model_filepath = str(folded)
    plain = ort.InferenceSession(str(path), basic, providers=["CPUExecutionProvider"])
    announce()
    feed = plain.get_inputs()[0]
    images = _check_images(feed.shape)
    try:
        model = onnx.load(str(folded))
        if winograd.rewrite_wide_convs(model, winograd.MIN_CHANNELS) == 0:
            return None
        onnx.save(model, str(rewritten))
        providers = ["CPUExecutionProvider"]
        session = ort.InferenceSession(str(rewritten), options, providers=providers)
        got = session.run(None, {feed.name: images})[0]
    except Exception:  # the file itself loaded: run it as it is rather than fail on a speed-up
        return None
    expected = plain.run(None, {feed.name: images})[0]
    # Winograd's rounding is about 2e-5 of the logits; a wrong graph is off by far more.
    bound = WINOGRAD_TOLERANCE * float(np.abs(expected).max()) + 1e-6
    return session if float(np.abs(got - expected).max()) <= bound else None


def _check_images(shape: list[int | str | None]) -> np.ndarray:
    """Random input for ``_winograd_session``'s check: one 64x64 image where the file's input is
    dynamic (a batch of 64 would cost seconds on R-50), a static file's own shape otherwise."""
    side = [d if isinstance(d, int) else 64 if axis else 1 for axis, d in enumerate(shape)]
    return np.random.default_rng(0).standard_normal(side).astype(np.float32)


def _session_options(ort: Any, threads: int | None) -> Any:
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads or default_threads() or 0  # 0: ORT's default
    options.log_severity_level = 3  # errors only: its warnings are not the user's business
    return options


def _machine_key(ort_version: str) -> str:
    """ONNX Runtime's version and this CPU (model and instruction-set flags), hashed."""
    cpu = platform.machine() + platform.processor()
    with contextlib.suppress(OSError):
        lines = Path("/proc/cpuinfo").read_text().splitlines()
        described = [line for line in lines if line.startswith(("model name", "flags"))]
        cpu += "".join(described[:2])  # the first processor's
    # the rewrite is part of the kept graph: a changed one must not reuse an older graph
    return hashlib.sha256(f"{ort_version} {cpu} {KEPT_GRAPH}".encode()).hexdigest()[:16]
