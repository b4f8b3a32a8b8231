"""`isaseg convert-cityscapes`: make the *_gtFine_labelTrainIds.png files evaluation reads."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from isaseg_cli.cli import _render


def convert_cityscapes_cli(
    data_root: Annotated[
        Path,
        typer.Argument(
            metavar="DIR", help="The Cityscapes root (holding gtFine/).", show_default=False
        ),
    ],
) -> None:
    """Write *_gtFine_labelTrainIds.png beside every *_gtFine_labelIds.png (19 training classes).

    The labelIds -> trainIds lookup of cityscapesScripts' labels table; no extra package needed.
    Existing train-id files are overwritten.
    """
    from isaseg_cli.data.cityscapes import convert_label_ids

    with _render.progress_bars() as update:
        written = convert_label_ids(
            data_root, on_progress=lambda done, total: update("convert", done, total)
        )
    _render.info(f"Wrote {written} *_gtFine_labelTrainIds.png file(s) under {data_root}")
