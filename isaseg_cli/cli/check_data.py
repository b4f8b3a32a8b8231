"""`isaseg check-data`: dataset mistakes (pairing, sizes, colour labels, values) before training."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Literal

import typer

from isaseg_cli.cli import _render
from isaseg_cli.cli._options import DataRootOpt, JsonOutOpt
from isaseg_cli.errors import InputError

if TYPE_CHECKING:
    from isaseg_cli.report.dataset_check import CheckDataResult

# Findings printed in the terminal; --json-out holds them all.
SHOWN = 40


def check_data_cli(
    dataset: Annotated[
        Literal["cityscapes", "ade20k", "voc", "voc12aug", "custom"],
        typer.Option(help="The layout, as train and eval read it."),
    ] = "custom",
    data_root: DataRootOpt = None,
    split: Annotated[
        list[str] | None,
        typer.Option(metavar="NAME", help="Split to check (default train); repeat for more."),
    ] = None,
    classes: Annotated[
        str | None,
        typer.Option(metavar="A,B,...|N", help="Class names, or their count (custom data)."),
    ] = None,
    reduce_zero_label: Annotated[
        bool | None,
        typer.Option(
            "--reduce-zero-label/--no-reduce-zero-label",
            help="Stored 0 is 'unlabelled', class c stored as c+1 (default: on for ade20k only).",
        ),
    ] = None,
    json_out: JsonOutOpt = None,
    workers: Annotated[
        int, typer.Option(min=0, metavar="N", help="Processes decoding labels (0: none).")
    ] = 2,
) -> None:
    """Check a dataset: every image with its label, label sizes, channels and values, class
    frequencies and suggested class weights.

    Exit code 0: clean; 1: findings (each names its file); 2: the data cannot be checked.
    """
    import dataclasses

    from isaseg_cli.data.datasets import default_data_root
    from isaseg_cli.report.dataset_check import check_dataset
    from isaseg_cli.zoo.classes import DATASETS
    from isaseg_cli.zoo.spec import DataSpec

    name = "voc12aug" if dataset == "voc" else dataset
    known = DATASETS.get(name)
    names = _class_names(classes) if classes else (known.classes if known else None)
    if names is None:
        raise InputError("a custom dataset needs --classes a,b,c (or the class count)")
    spec = DataSpec(dataset=name, classes=names)
    reduce = name == "ade20k" if reduce_zero_label is None else reduce_zero_label
    spec = dataclasses.replace(spec, reduce_zero_label=reduce)
    root = data_root or default_data_root(name)
    with _render.progress_bars() as update:
        result = check_dataset(
            spec,
            root,
            split or ["train"],
            classes=names,
            palette=known.palette if known else (),
            workers=workers,
            on_progress=_render.event_sink(update),
        )
    _show(result)
    if json_out is not None:
        _render.write_json(json_out, result.to_dict())
    if not result.clean:
        raise typer.Exit(1)


def _class_names(text: str) -> tuple[str, ...]:
    if text.strip().isdigit():
        return tuple(f"class{i}" for i in range(int(text)))
    names = tuple(name.strip() for name in text.split(",") if name.strip())
    if len(names) < 2:
        raise InputError(f"--classes takes at least two names or a count >= 2, not {text!r}")
    return names


def _show(result: CheckDataResult) -> None:
    _render.table(
        "Classes",
        ["class", "pixels", "share %", "inverse-freq weight", "median-freq weight"],
        [
            [s.name, s.pixels, 100 * s.share, s.inverse_weight, s.median_weight]
            for s in result.classes
        ],
    )
    if result.findings:
        _render.table(
            f"Findings ({len(result.findings)})",
            ["kind", "finding"],
            [[f.kind, f.message] for f in result.findings[:SHOWN]],
        )
        if len(result.findings) > SHOWN:
            _render.info(f"... and {len(result.findings) - SHOWN} more (all in --json-out)")
    ignored = 100 * result.ignored_pixels / result.total_pixels if result.total_pixels else 0.0
    splits = ", ".join(result.splits)
    _render.info(
        f"{result.dataset} {splits}: {result.images} images, {len(result.findings)} findings, "
        f"{ignored:.2f} % of pixels ignored, {result.seconds:.1f} s"
    )
    if result.absent:
        listed = ", ".join(result.absent[:SHOWN]) + (", ..." if len(result.absent) > SHOWN else "")
        _render.info(f"{len(result.absent)} classes never present: {listed}")
    for hint in result.hints:
        _render.warn(hint)
