"""All terminal output of the CLI: messages, tables and progress bars (the only rich import)."""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from rich.console import Console
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
    """One line on stderr, no traceback."""
    err_console.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)


def warn(message: str) -> None:
    err_console.print(f"[yellow]warning:[/] {message}", highlight=False, soft_wrap=True)


def info(message: str) -> None:
    console.print(message, highlight=False, soft_wrap=True)


def is_main_process() -> bool:
    """Only rank 0 of a torchrun job draws bars and tables."""
    return os.environ.get("RANK", "0") == "0"


def table(title: str, columns: list[str], rows: list[list[Any]]) -> None:
    grid = Table(title=title, title_justify="left")
    for index, name in enumerate(columns):
        grid.add_column(name, justify="left" if index == 0 else "right")
    for row in rows:
        grid.add_row(*[_cell(value) for value in row])
    console.print(grid)


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
    if transfer:
        columns: list[Any] = [
            TextColumn("{task.description}"),
            BarColumn(),
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
    with Progress(*columns, console=err_console, transient=False) as bars:

        def update(task: str, completed: int, total: int | None = None, **figures: Any) -> None:
            text = "  ".join(f"{k} {_figure(v)}" for k, v in figures.items())
            if task not in tasks:
                tasks[task] = bars.add_task(task, total=total, info=text)
            bars.update(tasks[task], completed=completed, total=total, info=text)

        yield update


def _figure(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def event_sink(update: Callable[..., None]) -> Callable[[Any], None]:
    """Adapts ``progress_bars``' update function to the engine's ``ProgressEvent`` callback."""
    return lambda event: update(event.task, event.completed, event.total, **event.info)
