"""Parsing shared by several commands' options, so a flag means the same everywhere."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Literal

import typer

from isaseg_cli.errors import InputError, IsasegError

# One default for predict, eval, train and benchmark (README "Conventions" says why this one):
# whole-image inference at 1024x2048, R-50, the best of the whole-image Cityscapes rows.
DEFAULT_MODEL = "isanet_r50-d8_4xb2-80k_cityscapes-512x1024"
MODEL_ENV = "ISASEG_MODEL"


def default_model() -> str:
    """The zoo entry used when none is named: ``$ISASEG_MODEL``, else ``DEFAULT_MODEL``.

    Raises:
        InputError: ``$ISASEG_MODEL`` names no zoo entry (the message names the variable).
    """
    from isaseg_cli.zoo.catalog import resolve_entry

    name = os.environ.get(MODEL_ENV, "").strip()
    if not name:
        return DEFAULT_MODEL
    try:
        return resolve_entry(name).name
    except IsasegError as exc:
        raise InputError(f"${MODEL_ENV}={name}: {exc}") from None


def complete_model_name(incomplete: str) -> list[str]:
    """Shell completion: the zoo names and aliases that start with ``incomplete`` (no torch)."""
    from isaseg_cli.zoo.catalog import load_zoo

    names = dict.fromkeys(load_zoo().names())
    return [name for name in names if name.startswith(incomplete)]


def parse_size(text: str | None, flag: str) -> tuple[int, int] | None:
    """``"769x769"`` -> (769, 769): HEIGHTxWIDTH in pixels."""
    if text is None:
        return None
    parts = text.lower().split("x")
    if len(parts) != 2 or not all(part.strip().isdigit() and int(part) > 0 for part in parts):
        raise InputError(f"{flag} takes HEIGHTxWIDTH in pixels, e.g. 769x769, not {text!r}")
    return int(parts[0]), int(parts[1])


def parse_scale(text: str) -> tuple[int, int]:
    """``"2048x1024"`` -> (2048, 1024): WIDTHxHEIGHT, as mmseg writes test scales."""
    parts = text.lower().split("x")
    if len(parts) != 2 or not all(part.strip().isdigit() and int(part) > 0 for part in parts):
        raise InputError(f"--scale takes native, zoo or WIDTHxHEIGHT like 2048x1024, not {text!r}")
    return int(parts[0]), int(parts[1])


def parse_ratios(text: str | None, ms_flip: bool) -> tuple[float, ...] | None:
    """``"0.5,1.0,1.5"`` -> (0.5, 1.0, 1.5): the scales of multi-scale testing, which only
    ``--ms-flip`` uses. Checked here, before anything heavy is imported, so a mistyped command
    fails at once."""
    if text is None:
        return None
    if not ms_flip:
        raise InputError("--scales sets the --ms-flip ratios; add --ms-flip")
    try:
        ratios = tuple(float(part) for part in text.split(",") if part.strip())
    except ValueError:
        ratios = ()
    if not ratios or min(ratios) <= 0:
        raise InputError(f"--scales takes positive ratios like 0.5,1.0,1.5, not {text!r}")
    return ratios


# Options shared by several commands: one definition, so each flag reads the same everywhere.
# The zoo model a command runs: the option of predict and make-synthetic, the argument of eval,
# export and serve (train and benchmark word theirs for their own defaults).
ModelOpt = Annotated[
    str | None,
    typer.Option(
        metavar="NAME",
        autocompletion=complete_model_name,
        help=f"Zoo model (default: $ISASEG_MODEL, else {DEFAULT_MODEL}).",
    ),
]
ModelArg = Annotated[
    str | None,
    typer.Argument(
        metavar="MODEL",
        autocompletion=complete_model_name,
        help=f"Zoo model (default: $ISASEG_MODEL, else {DEFAULT_MODEL}; with only "
        "--checkpoint, the entry stored in the file).",
        show_default=False,
    ),
]
CheckpointOpt = Annotated[
    Path | None,
    typer.Option(
        metavar="FILE",
        exists=True,
        dir_okay=False,
        help="Local .pth weights (architecture: its meta, else the model name).",
    ),
]
TrustOpt = Annotated[
    bool, typer.Option("--trust-checkpoint", help="Allow full unpickling (trusted files only).")
]
DataRootOpt = Annotated[
    Path | None,
    typer.Option(metavar="DIR", help="Dataset root (default: under $ISASEG_DATA, else data/)."),
]
ModeOpt = Annotated[
    Literal["whole", "slide"] | None,
    typer.Option(help="Whole image or sliding windows (default: the model's)."),
]
CropOpt = Annotated[
    str | None,
    typer.Option("--crop-size", metavar="HxW", help="Sliding window size (implies --mode slide)."),
]
StrideOpt = Annotated[
    str | None, typer.Option(metavar="HxW", help="Sliding step (default: 2/3 of the crop).")
]
MsFlipOpt = Annotated[
    bool,
    typer.Option("--ms-flip", help="Multi-scale + flip (the published protocol; slower)."),
]
ScalesOpt = Annotated[
    str | None,
    typer.Option(metavar="R,R,...", help="Ratios for --ms-flip (default 0.5,...,1.75)."),
]
DeviceOpt = Annotated[
    str,
    typer.Option(
        "--device",
        metavar="DEVICE",
        help="auto, cpu, cuda, cuda:N or mps (under torchrun cuda means each rank's GPU).",
    ),
]
PrecisionOpt = Annotated[
    Literal["fp32", "bf16", "fp16"],
    typer.Option(help="fp32 as published; bf16/fp16 autocast (fp16: GPU only)."),
]
SetOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--set", metavar="KEY=VALUE", help="Override an entry field, e.g. test.scale=1024,512."
    ),
]
JsonOutOpt = Annotated[
    Path | None, typer.Option(metavar="FILE", help="Also write the results as JSON here.")
]
CudaGraphsOpt = Annotated[
    bool | None,
    typer.Option(
        "--cuda-graphs/--no-cuda-graphs",
        help="Replay the training forward/backward as CUDA graphs (auto: one CUDA process).",
    ),
]
RecomputeOpt = Annotated[
    bool | None,
    typer.Option(
        "--recompute/--no-recompute",
        help="Recompute bottleneck tails in backward: less memory (auto: CUDA, one process).",
    ),
]
MaxPixelsOpt = Annotated[
    int,
    typer.Option(
        min=1,
        metavar="N",
        help="Refuse images whose header announces more pixels (never decoded).",
    ),
]
BackendOpt = Annotated[
    Literal["auto", "torch", "onnxruntime", "openvino"],
    typer.Option(
        help="Run the network in PyTorch, or as a cached ONNX export in ONNX Runtime or "
        "OpenVINO (auto: onnxruntime for an .onnx --checkpoint, else torch)."
    ),
]
