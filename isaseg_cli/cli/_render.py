"""All terminal output of the CLI: messages, tables and progress bars (the only rich import)."""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from rich import box
from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    DownloadColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)
from rich.table import Table

from isaseg_cli.errors import OutputError

console = Console()
err_console = Console(stderr=True)


def error(message: str) -> None:
    """One line on stderr, no traceback; the message is not markup (``isaseg[report]`` stays)."""
    err_console.print(f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)


def warn(message: str) -> None:
    err_console.print(f"[yellow]warning:[/] {escape(message)}", highlight=False, soft_wrap=True)


def info(message: str) -> None:
    console.print(message, highlight=False, soft_wrap=True)


def status(message: str) -> None:
    """A passing note on stderr (a retry, a wait); printed above any live progress bar."""
    err_console.print(f"[dim]{message}[/]", highlight=False, soft_wrap=True)


def stage_status(stage: str) -> None:
    """``status`` for what a first run on an exported backend is doing (``on_stage``)."""
    from isaseg_cli.export.cache import STAGE_MESSAGES  # only reached on an exported backend

    status(f"{STAGE_MESSAGES[stage]} ...")


def is_main_process() -> bool:
    """Only rank 0 of a torchrun job draws bars and tables.

    Commands ask before (or without) importing torch, so this reads ``RANK`` itself, by the rule
    of ``engine.ranks.dist_info``; a malformed value is that function's error to report.
    """
    try:
        return int(os.environ.get("RANK", "0")) == 0
    except ValueError:
        return True


def table(
    title: str,
    columns: list[str],
    rows: list[list[Any]],
    *,
    droppable: tuple[str, ...] = (),
    caption: str | None = None,
) -> None:
    """A rich table whose first column is never cut (it holds names users copy).

    When the full table is wider than the terminal (or than 80 columns when piped), the
    ``droppable`` columns are left out and the borders dropped, so the names still fit whole.
    """
    grid = _grid(title, columns, rows, caption, compact=False)
    if droppable and _natural_width(grid) > console.width:
        keep = [i for i, name in enumerate(columns) if name not in droppable]
        narrow_rows = [[row[i] for i in keep] for row in rows]
        grid = _grid(title, [columns[i] for i in keep], narrow_rows, caption, compact=True)
    console.print(grid)


def _natural_width(renderable: Any) -> int:
    return console.measure(renderable, options=console.options.update_width(10_000)).maximum


def _grid(
    title: str, columns: list[str], rows: list[list[Any]], caption: str | None, *, compact: bool
) -> Table:
    grid = (
        Table(title=title, title_justify="left", caption=caption, caption_justify="left")
        if not compact
        else Table(
            title=title,
            title_justify="left",
            caption=caption,
            caption_justify="left",
            box=box.SIMPLE_HEAD,
            show_edge=False,
            pad_edge=False,
        )
    )
    for index, name in enumerate(columns):
        if index == 0:
            grid.add_column(name, justify="left", no_wrap=True)
        else:
            grid.add_column(name, justify="right")
    for row in rows:
        grid.add_row(*[_cell(value) for value in row])
    return grid


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.2f}"
    return str(value)


def write_json(path: Path, payload: Any) -> None:
    """Writes ``payload`` as JSON through a temporary file, so a reader never sees half a file.

    Raises:
        OutputError: naming ``path`` (not the temporary file) when it cannot be written.
    """
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp.write_text(json.dumps(payload, indent=2, sort_keys=False) + "\n")
        os.replace(tmp, path)
    except OSError as exc:
        from isaseg_cli.data.mask_io import os_error_reason  # OpenCV loads only on failure

        tmp.unlink(missing_ok=True)
        raise OutputError(f"cannot write {path}: {os_error_reason(exc)}") from None


def written(kind: str, paths: Sequence[Path], folder: Path) -> None:
    """One line saying where the files of one kind went: the file itself when there is one."""
    if not paths:
        info(f"{kind}: none written")
    elif len(paths) == 1:
        info(f"{kind}: {paths[0]}")
    else:
        info(f"{kind}: {len(paths)} files in {folder}")


@contextmanager
def progress_bars(*, transfer: bool = False) -> Iterator[Callable[..., None]]:
    """Yields ``update(task, completed, total=None, **info)`` that draws one rich bar per task.

    With ``transfer`` the bars show bytes, speed and ETA (downloads). Nothing is drawn off rank 0.
    """
    if not is_main_process():
        yield lambda *args, **kwargs: None
        return
    label_width: int | None = None
    if transfer:
        # Every column but the label has a bounded width (bytes, speed, ETA: ~34 characters
        # with their gaps), so a label cut to what remains keeps the bar on one line.
        bar_width = 20 if err_console.width < 100 else 40
        label_width = max(8, err_console.width - bar_width - _TRANSFER_FIGURES_WIDTH)
        columns: list[Any] = [
            TextColumn("{task.description}"),
            BarColumn(bar_width=bar_width),
            DownloadColumn(),
            TransferSpeedColumn(),
            TimeRemainingColumn(),
        ]
    else:
        columns = [
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            TextColumn("{task.fields[info]}"),
        ]
    tasks: dict[str, TaskID] = {}
    bars = Progress(*columns, console=err_console, transient=False)

    def update(task: str, completed: int, total: int | None = None, **figures: Any) -> None:
        text = "  ".join(f"{k} {_figure(v)}" for k, v in figures.items())
        if task not in tasks:
            if not tasks:  # started on first use: nothing is drawn when nothing is transferred
                bars.start()
            label = task if label_width is None else shorten_middle(task, label_width)
            tasks[task] = bars.add_task(label, total=total, info=text)
        bars.update(tasks[task], completed=completed, total=total, info=text)

    try:
        yield update
    finally:
        if tasks:
            bars.stop()


_TRANSFER_FIGURES_WIDTH = 37  # " 123.4/302.1 MB" + " 123.4 MB/s" + " 0:00:12" + gaps, spare 1


def shorten_middle(text: str, width: int) -> str:
    """``text`` cut to ``width`` characters in the middle, keeping both ends (a file name's
    start says what it is, its end carries the hash)."""
    if len(text) <= width:
        return text
    head = (width - 1) // 2
    return f"{text[:head]}…{text[len(text) - (width - 1 - head) :]}"


def _figure(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def event_sink(update: Callable[..., None]) -> Callable[[Any], None]:
    """Adapts ``progress_bars``' update function to the engine's ``ProgressEvent`` callback."""
    return lambda event: update(event.task, event.completed, event.total, **event.info)


def download_sink(
    update: Callable[..., None], *, label: str = "download weights", megabytes: bool = False
) -> Callable[[int, int | None], None]:
    """Adapts ``progress_bars``' update function to a download's byte callback.

    A bar appears only once bytes arrive (``progress_bars`` starts on first use), so a cached
    file draws nothing. ``megabytes`` counts in MB, for bars without the transfer columns.
    """
    shift = 20 if megabytes else 0

    def on_download(done: int, total: int | None) -> None:
        update(label, done >> shift, None if total is None else total >> shift)

    return on_download
