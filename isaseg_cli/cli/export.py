"""`isaseg export`: the network as one ONNX file, with its metadata, checked in onnxruntime."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

import typer

from isaseg_cli.cli import _render
from isaseg_cli.cli._options import (
    CheckpointOpt,
    JsonOutOpt,
    ModelArg,
    TrustOpt,
    default_model,
    parse_size,
)
from isaseg_cli.errors import InputError


def export_cli(
    model: ModelArg = None,
    checkpoint: CheckpointOpt = None,
    trust_checkpoint: TrustOpt = False,
    fmt: Annotated[Literal["onnx"], typer.Option("--format", help="Export format.")] = "onnx",
    out: Annotated[
        Path | None, typer.Option(metavar="FILE", help="Output file (default: MODEL.onnx).")
    ] = None,
    size: Annotated[
        str | None,
        typer.Option(metavar="HxW", help="A static file for this input size only."),
    ] = None,
    dynamic: Annotated[
        bool, typer.Option("--dynamic", help="One file for any batch and size (the default).")
    ] = False,
    output: Annotated[
        Literal["logits", "probs", "argmax"],
        typer.Option(help="Logits (isaseg's backends need them), softmax or class ids."),
    ] = "logits",
    precision: Annotated[
        Literal["fp32", "fp16"], typer.Option(help="Weights and activations in the file.")
    ] = "fp32",
    opset: Annotated[int, typer.Option(min=18, metavar="N", help="ONNX opset.")] = 18,
    verify: Annotated[
        bool,
        typer.Option(
            "--verify/--no-verify",
            help="Check the file in onnxruntime against PyTorch at several sizes.",
        ),
    ] = True,
    overwrite: Annotated[
        bool, typer.Option("--overwrite", help="Replace an existing --out file.")
    ] = False,
    json_out: JsonOutOpt = None,
) -> None:
    """Export the network (backbone, ISA head, final resize) to ONNX; verify it at several sizes.

    Exit 1, and no file, when the exported file disagrees with PyTorch beyond float rounding.
    """
    if size is not None and dynamic:
        raise InputError("--size makes a static file and --dynamic a dynamic one: pick one")
    shape = parse_size(size, "--size")
    from isaseg_cli.data.mask_io import check_writable
    from isaseg_cli.engine.loading import load_model
    from isaseg_cli.export.onnx import export_onnx
    from isaseg_cli.export.verify import FP16_AGREEMENT
    from isaseg_cli.zoo.catalog import resolve_entry

    if out is not None:  # before the weights are read (or downloaded)
        _check_new(out, overwrite)
    name = model or (None if checkpoint else default_model())
    loaded = load_model(resolve_entry(name) if name else None, checkpoint, trust=trust_checkpoint)
    target = out or Path(f"{loaded.entry.name}.onnx")
    if out is None:  # the default name, known once the entry is
        _check_new(target, overwrite)
    check_writable(target, "--out")  # before the export, which takes minutes at full size
    stages = {"export": "exporting with torch.onnx", "verify": "verifying in onnxruntime"}
    result = export_onnx(
        loaded,
        target,
        size=shape,
        dynamic=shape is None,
        output=output,
        precision=precision,
        opset=opset,
        verify=verify,
        on_stage=lambda stage: _render.info(f"{stages[stage]} ..."),
    )
    if result.checks:
        _render.table(
            f"{target.name}: onnxruntime against PyTorch",
            ["size", "HxW", "batch", "head pad", "max |diff|", "tolerance", "pixels equal", "ok"],
            [
                [
                    check.label,
                    "x".join(map(str, check.size)),
                    check.batch,
                    "x".join(map(str, check.head_padding)),
                    f"{check.max_abs_diff:.2e}" if check.max_abs_diff is not None else None,
                    f"{check.tolerance:.2e}" if check.tolerance is not None else None,
                    f"{100 * check.agreement:.4f} %",
                    "yes" if check.passed else "NO",
                ]
                for check in result.checks
            ],
            # "ok" already says whether the difference is within tolerance
            droppable=("batch", "tolerance"),
        )
    if json_out is not None:
        _render.write_json(json_out, {"model": loaded.entry.name, **result.to_dict()})
    if not result.passed:
        if result.precision == "fp16":
            share = f"{100 * (1 - FP16_AGREEMENT):g} %"
            _render.error(
                f"the fp16 file's masks differ from PyTorch float32's on more than {share} of "
                "the pixels; not written (export fp32, or keep it with --no-verify)"
            )
        else:
            _render.error(
                "the exported file disagrees with PyTorch beyond float rounding; not written"
            )
        raise typer.Exit(1)
    kind = "dynamic" if result.dynamic else "static " + "x".join(map(str, result.size))
    _render.info(
        f"Wrote {result.path} ({result.file_bytes / 2**20:.1f} MiB, {kind}, {result.output}, "
        f"{result.precision}) in {result.seconds:.1f} s"
    )


def _check_new(target: Path, overwrite: bool) -> None:
    """An earlier export is kept unless --overwrite, as predict keeps its results."""
    if target.exists() and not target.is_dir() and not overwrite:
        raise InputError(
            f"{target} already exists: add --overwrite to replace it, or choose another --out"
        )
