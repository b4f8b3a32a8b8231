"""``isaseg export --format onnx``: the network as one ONNX file, valid for any input size
(``dynamic``), with everything the test pipeline needs in its ``metadata_props``.

The file maps normalised images (N, 3, H, W) float32 RGB to logits (N, K, H, W) at the input
size: the final bilinear resize is inside, as in ``Segmentor.forward``. Pre-processing (resize
to the test scale, normalisation), slide windows and ms+flip stay outside, in isaseg (or in the
caller's code: docs/DEPLOY.md).
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import logging
import os
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from isaseg_cli.data.image import MEAN_RGB, STD_RGB
from isaseg_cli.data.mask_io import os_error_reason
from isaseg_cli.engine.extras import require
from isaseg_cli.engine.loading import LoadedModel
from isaseg_cli.errors import ExportError, InputError, OutputError
from isaseg_cli.export.verify import SizeCheck, output_stride, verification_sizes, verify_export
from isaseg_cli.models.build import rebuild
from isaseg_cli.models.execution import ExecutionSpec
from isaseg_cli.models.segmentor import Segmentor
from isaseg_cli.zoo.spec import ModelSpec, to_dict

OUTPUTS = ("logits", "probs", "argmax")
PRECISIONS = ("fp32", "fp16")
MIN_OPSET = 18  # torch.onnx's dynamo exporter writes no older opset
DEFAULT_OPSET = MIN_OPSET
# The largest batch and side a dynamic file declares (ONNX Runtime does not enforce them).
MAX_BATCH, MAX_SIDE = 256, 16384
EXPORTED = ExecutionSpec(split_regroups=True)  # the same function as the reference path


@dataclass(frozen=True, slots=True)
class ExportResult:
    """What ``export_onnx`` wrote. ``passed`` is False when verification failed, in which case
    nothing was written at ``path``; ``checks`` is empty without verification."""

    path: Path
    size: tuple[int, int]
    dynamic: bool
    output: str
    precision: str
    opset: int
    seconds: float
    file_bytes: int
    checks: tuple[SizeCheck, ...]

    @property
    def passed(self) -> bool:
        return all(check.passed for check in self.checks)

    def to_dict(self) -> dict[str, Any]:
        return {
            "path": str(self.path),
            "size": list(self.size),
            "dynamic": self.dynamic,
            "output": self.output,
            "precision": self.precision,
            "opset": self.opset,
            "seconds": round(self.seconds, 2),
            "file_bytes": self.file_bytes,
            "verified": bool(self.checks),
            "passed": self.passed,
            "checks": [check.to_dict() for check in self.checks],
        }


class _ExportedForward(nn.Module):
    """The exported function: float32 images in; logits, probabilities or class ids out."""

    def __init__(self, model: Segmentor, output: str, dtype: torch.dtype) -> None:
        super().__init__()
        self.model, self.output, self.dtype = model, output, dtype

    def forward(self, images: Tensor) -> Tensor:
        logits = self.model(images.to(self.dtype))["out"].float()  # (N, K, H, W)
        if self.output == "probs":
            return logits.softmax(dim=1)
        if self.output == "argmax":
            return logits.argmax(dim=1)  # (N, H, W) int64
        return logits


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def metadata(
    loaded: LoadedModel, *, size: tuple[int, int], dynamic: bool, output: str, precision: str,
    opset: int, weights_sha256: str,
) -> dict[str, str]:  # fmt: skip
    """The ``metadata_props`` of an exported file: all strings, JSON where structured."""
    from isaseg_cli import __version__

    entry, test = loaded.entry, loaded.entry.test
    values: dict[str, Any] = {
        "isaseg_version": __version__,
        "model": entry.name,
        "entry": to_dict(entry),
        "classes": list(loaded.classes),
        "palette": [list(color) for color in loaded.palette],
        "input": "images (N, 3, H, W) float32 RGB, (pixel - mean) / std",
        "mean": list(MEAN_RGB),
        "std": list(STD_RGB),
        "test_scale": list(test.scale) if test.scale else None,
        "mode": test.mode,
        "crop_size": list(test.crop_size) if test.crop_size else None,
        "stride": list(test.stride) if test.stride else None,
        "ms_ratios": list(test.ms_ratios),
        "align_corners": entry.model.align_corners,
        "output": output,
        "precision": precision,
        "dynamic": dynamic,
        "export_size": list(size),
        "opset": opset,
        "torch_version": torch.__version__,
        "checkpoint_sha256": weights_sha256,
    }
    return {key: v if isinstance(v, str) else json.dumps(v) for key, v in values.items()}


def _trace_size(size: tuple[int, int], spec: ModelSpec, dynamic: bool) -> tuple[int, int]:
    """A dynamic export traces at a size with at least two head groups per axis: torch.export
    specialises a dimension it sees as 1, which would freeze the group count."""
    if not dynamic:
        return size
    stride = output_stride(spec)
    group_h, group_w = spec.head.group_size
    return max(size[0], stride * (2 * group_h + 1)), max(size[1], stride * (2 * group_w + 1))


@contextlib.contextmanager
def _quiet(logger_name: str) -> Iterator[None]:
    logger = logging.getLogger(logger_name)
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


def _export_program(net: nn.Module, example: Tensor, dynamic: bool, output: str, opset: int) -> Any:
    from torch.export import Dim

    shapes = None
    if dynamic:
        axes = {0: Dim("batch", min=1, max=MAX_BATCH)}
        axes |= {2: Dim("height", min=1, max=MAX_SIDE), 3: Dim("width", min=1, max=MAX_SIDE)}
        shapes = {"images": axes}
    # torch.onnx reports its steps on stdout, and onnxscript logs the tracebacks of the steps
    # it falls back from; nothing below the CLI prints (export_onnx checks the result).
    with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings(), _quiet("onnxscript"):
        warnings.simplefilter("ignore")
        return torch.onnx.export(
            net,
            (example,),
            dynamo=True,
            input_names=["images"],
            output_names=[output],
            dynamic_shapes=shapes,
            opset_version=opset,
            verbose=False,
        )


def export_onnx(
    loaded: LoadedModel,
    out: str | Path,
    *,
    size: tuple[int, int] | None = None,
    dynamic: bool = True,
    output: str = "logits",
    precision: str = "fp32",
    opset: int = DEFAULT_OPSET,
    verify: bool = True,
    verify_sizes: list[tuple[str, tuple[int, int], int]] | None = None,
    weights_sha256: str | None = None,
    on_stage: Callable[[str], None] | None = None,
) -> ExportResult:
    """Exports ``loaded.model`` to ``out`` and, with ``verify``, checks the file against it.

    Args:
        size: (h, w) of a static file, or the reference size of a dynamic one (default: the
            entry's training crop).
        dynamic: one file for any batch, height and width.
        output: ``logits``, ``probs`` (softmax) or ``argmax`` (int64 class ids).
        precision: ``fp32``, or ``fp16`` weights and activations (inputs and outputs stay
            float32).
        verify: run the file in onnxruntime at ``verify_sizes`` (default:
            ``verify.verification_sizes``); a file that fails is removed.
        weights_sha256: recorded in the metadata (default: the checkpoint file's hash).
        on_stage: told "export", "verify" as each stage begins.

    Raises:
        InputError: an unknown option value, or an opset the installed onnx does not know.
        ExportError: torch.onnx could not export the model, or not at ``opset``.
        OutputError: the file cannot be written.
        MissingExtraError: onnx, onnxscript or onnxruntime is not installed.
    """
    if output not in OUTPUTS:
        raise InputError(f"unknown output {output!r}: use one of {', '.join(OUTPUTS)}")
    if precision not in PRECISIONS:
        raise InputError(f"unknown precision {precision!r}: use one of {', '.join(PRECISIONS)}")
    for module in ("onnx", "onnxscript") + (("onnxruntime",) if verify else ()):
        require(module, "onnx")
    import onnx

    newest = onnx.defs.onnx_opset_version()
    if not MIN_OPSET <= opset <= newest:
        raise InputError(
            f"opset {opset} is outside {MIN_OPSET}..{newest}, the opsets torch.onnx can write "
            f"with the installed onnx {onnx.__version__}"
        )
    start = time.perf_counter()
    out = Path(out)
    entry, model = loaded.entry, loaded.model.eval()
    size = tuple(size or entry.data.crop_size)  # type: ignore[assignment]
    if weights_sha256 is None:
        weights_sha256 = sha256_file(loaded.checkpoint) if loaded.checkpoint.is_file() else ""
    dtype = torch.float16 if precision == "fp16" else torch.float32
    # A copy whose ISA regroupings are swaps of two axes, which ONNX Runtime copies faster.
    exported = rebuild(model, entry.model, EXPORTED).to(dtype)
    net = _ExportedForward(exported, output, dtype)
    batch = 2 if dynamic else 1  # a batch of 1 would be frozen like any dimension seen as 1
    example = torch.randn(batch, 3, *_trace_size(size, entry.model, dynamic))
    if on_stage is not None:
        on_stage("export")
    try:
        program = _export_program(net, example, dynamic, output, opset)
    except Exception as exc:  # torch.export raises many types; the message says what failed
        text = str(exc).strip().splitlines()
        first = text[0] if text else type(exc).__name__
        raise ExportError(f"torch.onnx could not export {entry.name}: {first}") from None
    # torch.onnx keeps its own opset when it cannot convert to the one asked for
    written = program.model.opset_imports.get("")
    if written != opset:
        raise ExportError(
            f"torch.onnx {torch.__version__} cannot write opset {opset} (it wrote {written}); "
            "choose another --opset"
        )
    program.model.metadata_props.update(
        metadata(
            loaded,
            size=size,
            dynamic=dynamic,
            output=output,
            precision=precision,
            opset=opset,
            weights_sha256=weights_sha256,
        )  # fmt: skip
    )
    partial = out.with_name(f".{out.name}.{os.getpid()}.incomplete")
    try:
        try:
            out.parent.mkdir(parents=True, exist_ok=True)
            program.save(str(partial), external_data=False)
        except OSError as exc:
            raise OutputError(f"cannot write {out}: {os_error_reason(exc)}") from None
        checks: tuple[SizeCheck, ...] = ()
        if verify:
            if on_stage is not None:
                on_stage("verify")
            sizes = verify_sizes or verification_sizes(size, dynamic, entry.model)
            checks = verify_export(
                partial, model, entry.model, sizes, output=output, precision=precision
            )
        file_bytes = partial.stat().st_size
        if all(check.passed for check in checks):
            os.replace(partial, out)
    finally:
        partial.unlink(missing_ok=True)
    return ExportResult(
        path=out,
        size=size,
        dynamic=dynamic,
        output=output,
        precision=precision,
        opset=opset,
        seconds=time.perf_counter() - start,
        file_bytes=file_bytes,
        checks=checks,
    )
