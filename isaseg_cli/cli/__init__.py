"""The ``isaseg`` command: a Typer app whose commands live one per module beside this file.

Command modules import torch and the engine inside their bodies, so ``isaseg --help`` stays fast.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import typer

from isaseg_cli import __version__
from isaseg_cli.cli import _render
from isaseg_cli.errors import IsasegError

app = typer.Typer(
    name="isaseg",
    help="ISANet semantic segmentation: download, predict, eval, train and benchmark.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _guarded(command: Callable[..., Any]) -> Callable[..., Any]:
    """Turns a user-fixable error into one line on stderr and exit code 2; Ctrl-C into 130."""

    @functools.wraps(command)
    def run(*args: Any, **kwargs: Any) -> Any:
        try:
            return command(*args, **kwargs)
        except IsasegError as exc:
            _render.error(str(exc))
            raise typer.Exit(2) from None
        except KeyboardInterrupt:
            _render.error("interrupted")
            raise typer.Exit(130) from None

    return run


def _version(value: bool) -> None:
    if value:
        _render.info(f"isaseg {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print the version and exit."
    ),
) -> None:
    """ISANet semantic segmentation: download, predict, eval, train and benchmark."""


def _register() -> None:
    from isaseg_cli.cli import (
        benchmark,
        check_data,
        convert,
        download,
        predict,
        serve,
        train,
        zoo,
    )
    from isaseg_cli.cli import eval as evaluate

    app.command("zoo")(_guarded(zoo.zoo_cli))
    app.command("download")(_guarded(download.download_cli))
    app.command("predict")(_guarded(predict.predict_cli))
    app.command("eval")(_guarded(evaluate.eval_cli))
    app.command("train")(_guarded(train.train_cli))
    app.command("benchmark")(_guarded(benchmark.benchmark_cli))
    app.command("convert-cityscapes")(_guarded(convert.convert_cityscapes_cli))
    app.command("check-data")(_guarded(check_data.check_data_cli))
    app.command("serve")(_guarded(serve.serve_cli))


_register()


def main() -> None:
    app()
