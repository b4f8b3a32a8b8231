"""`isaseg zoo`: the table of published checkpoints, or one entry in full."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from isaseg_cli.cli import _render
from isaseg_cli.errors import InputError, ZooLookupError

if TYPE_CHECKING:
    from isaseg_cli.zoo.spec import ZooEntry

DATASET_SYNONYMS = {"voc": "voc12aug"}


def zoo_cli(
    name: Annotated[
        str | None,
        typer.Argument(help="A model name, alias, unique prefix or pretrained backbone to show."),
    ] = None,
    dataset: Annotated[
        str | None,
        typer.Option("--dataset", help="Only this dataset: cityscapes, ade20k, voc12aug."),
    ] = None,
    backbone: Annotated[
        str | None, typer.Option("--backbone", help="Only this backbone: r50 or r101.")
    ] = None,
    json_out: Annotated[
        Path | None, typer.Option("--json-out", help="Also write the entries shown as JSON.")
    ] = None,
    names: Annotated[
        bool, typer.Option("--names", help="Print only the full names, one per line (for scripts).")
    ] = False,
) -> None:
    """List the published ISANet checkpoints (a check marks the cached ones), or show one."""
    from isaseg_cli.hub.cache import checkpoint_dir
    from isaseg_cli.zoo.catalog import load_zoo
    from isaseg_cli.zoo.spec import to_dict

    zoo = load_zoo()
    if name is not None:
        _show(name, json_out)
        return
    wanted_dataset = _dataset_filter(dataset)
    wanted_depth = _depth_filter(backbone)
    entries = [
        entry
        for entry in zoo.entries
        if wanted_dataset in (None, entry.data.dataset)
        and wanted_depth in (None, entry.model.backbone.depth)
    ]
    cached = [_cached(entry) for entry in entries]
    if names:
        for entry in entries:
            _render.info(entry.name)
    else:
        columns = ["name", "dataset", "backbone", "crop", "iters", "mIoU", "ms+flip", "mem GB"]
        _render.table(
            f"ISANet model zoo ({len(entries)} of {len(zoo.entries)})",
            [*columns, "fps", "cached"],
            [_row(entry, here) for entry, here in zip(entries, cached, strict=True)],
            # dataset, backbone, crop and iters are spelled out in the name itself
            droppable=("dataset", "backbone", "crop", "iters", "mem GB"),
            caption=f"cached in {checkpoint_dir()}",
        )
    if json_out is not None:
        records = [{**to_dict(e), "cached": here} for e, here in zip(entries, cached, strict=True)]
        _render.write_json(json_out, records)


def _cached(entry: ZooEntry) -> bool:
    from isaseg_cli.hub.cache import is_cached

    assert entry.weights is not None  # every listed entry has weights: checked at load
    return is_cached(entry.weights.url)


def _row(entry: ZooEntry, cached: bool) -> list[Any]:
    """One table row; the name cell carries the first alias, the short name to type."""
    assert entry.published is not None  # checked at load
    label = entry.name + (f"\n[dim]  alias {entry.aliases[0]}[/]" if entry.aliases else "")
    height, width = entry.data.crop_size
    figures = entry.published
    backbone = f"R-{entry.model.backbone.depth}-D8"
    iters = f"{entry.train.iters // 1000}k"
    mark = "✓" if cached else ""
    return [label, entry.data.dataset, backbone, f"{height}x{width}", iters, figures.miou,
            figures.miou_ms_flip, figures.train_mem_gb, figures.fps, mark]  # fmt: skip


def _show(name: str, json_out: Path | None) -> None:
    """Prints every field as ``dotted.path  value`` lines: never truncated, easy to grep or copy."""
    from isaseg_cli.hub.cache import cached_path, is_cached
    from isaseg_cli.zoo.catalog import load_zoo
    from isaseg_cli.zoo.spec import to_dict

    zoo = load_zoo()
    try:
        entry = zoo.resolve(name)
        title, weights = entry.name, entry.weights
        record = to_dict(entry)
    except ZooLookupError:
        if name.strip() not in zoo.pretrained:
            raise
        weights = zoo.resolve_pretrained(name)
        title, record = f"pretrained backbone {name.strip()}", to_dict(weights)
    path = cached_path(weights.url) if weights is not None else None
    # where the file is, or would be once downloaded: the place to drop a copy fetched elsewhere
    record["cached_path"] = str(path) if path is not None else None
    record["cached"] = weights is not None and is_cached(weights.url)
    lines = _flatten(record)
    width = max(len(key) for key, _ in lines)
    _render.info(f"[bold]{title}[/]")
    for key, value in lines:
        if key == "cached" and value == "false":
            value = f"false (`isaseg download {name.strip()}`, or put a copy at cached_path)"
        _render.info(f"  {key.ljust(width)}  {value}")
    if json_out is not None:
        _render.write_json(json_out, record)


def _flatten(data: dict[str, Any], prefix: str = "") -> list[tuple[str, str]]:
    lines: list[tuple[str, str]] = []
    for key, value in data.items():
        if isinstance(value, dict):
            lines += _flatten(value, f"{prefix}{key}.")
        else:
            lines.append((prefix + key, value if isinstance(value, str) else json.dumps(value)))
    return lines


def _dataset_filter(dataset: str | None) -> str | None:
    from isaseg_cli.zoo.classes import DATASETS

    if dataset is None:
        return None
    name = DATASET_SYNONYMS.get(dataset.lower(), dataset.lower())
    if name not in DATASETS:
        raise InputError(f"--dataset {dataset!r}: choose one of {', '.join(DATASETS)}")
    return name


def _depth_filter(backbone: str | None) -> int | None:
    if backbone is None:
        return None
    match = re.fullmatch(r"(?:r|resnet)?-?(\d+)(?:-d8)?", backbone.lower())
    if match is None or int(match[1]) not in (50, 101):
        raise InputError(f"--backbone {backbone!r}: choose r50 or r101")
    return int(match[1])
