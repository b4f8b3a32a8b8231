"""`isaseg cache`: what the cache holds (checkpoints, exports, optimised graphs); clearing it."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

import typer

from isaseg_cli.cli import _render
from isaseg_cli.cli._options import JsonOutOpt

# What each part is, what remaking it costs, and which parts a --clean choice removes: the
# graphs are built from the exports, so removing the exports removes them too.
PARTS = {
    "checkpoints": "weights; downloaded again on use",
    "exports": "ONNX exports; made again on use (minutes)",
    "graphs": "backends' builds of them; seconds to redo",
}
CLEANS = {
    "graphs": ("graphs",),
    "exports": ("exports", "graphs"),
    "checkpoints": ("checkpoints",),
    "all": tuple(PARTS),
}


def cache_cli(
    clean: Annotated[
        Literal["graphs", "exports", "checkpoints", "all"] | None,
        typer.Option(
            metavar="graphs|exports|checkpoints|all",
            help="Remove that part (exports: with their graphs); each is made again when a "
            "command needs it. Refused while another isaseg process downloads or builds there.",
        ),
    ] = None,
    json_out: JsonOutOpt = None,
) -> None:
    """Show what the cache holds ($ISASEG_HOME, else ~/.cache/isaseg); free space with --clean."""
    from isaseg_cli.export.cache import export_dir, optimized_dir
    from isaseg_cli.hub.cache import cache_dir, checkpoint_dir
    from isaseg_cli.hub.usage import Usage, clear_folders, folder_usage

    folders: dict[str, tuple[Path, tuple[Path, ...]]] = {
        "checkpoints": (checkpoint_dir(), ()),
        "exports": (export_dir(), (optimized_dir(),)),
        "graphs": (optimized_dir(), ()),
    }
    record: dict[str, Any] = {"cache": str(cache_dir())}
    if clean is not None:
        freed = clear_folders([folders[part] for part in CLEANS[clean]])
        _render.info(f"removed {freed.files} file(s), {_size(freed.bytes)}")
        record["removed"] = {"files": freed.files, "bytes": freed.bytes}
    usage = {part: folder_usage(*where) for part, where in folders.items()}
    total = sum(usage.values(), Usage())
    rows: list[list[Any]] = [
        [part, used.files, _size(used.bytes), PARTS[part]] for part, used in usage.items()
    ]
    rows.append(["total", total.files, _size(total.bytes), ""])
    _render.table(
        f"cache {cache_dir()}",
        ["part", "files", "size", "what"],
        rows,
        droppable=("what",),
        caption=None if clean else "free space with: isaseg cache --clean PART (or all)",
    )
    if json_out is not None:
        parts = {part: {"files": u.files, "bytes": u.bytes} for part, u in usage.items()}
        _render.write_json(json_out, {**record, "parts": parts})


def _size(count: int) -> str:
    """Bytes in decimal units, as the download bars count them."""
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if count >= scale:
            return f"{count / scale:.1f} {unit}"
    return f"{count} B"
