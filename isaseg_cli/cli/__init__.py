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
from isaseg_cli.cli._command import IsasegCommand, IsasegGroup
from isaseg_cli.cli._signals import TERMINATED_EXIT, sigterm_as_interrupt
from isaseg_cli.errors import IsasegError

app = typer.Typer(
    name="isaseg",
    cls=IsasegGroup,
    help="ISANet semantic segmentation: download, predict, eval, train and benchmark.",
    no_args_is_help=True,
    add_completion=True,  # --install-completion; model names complete from the zoo, no torch
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _guarded(command: Callable[..., Any]) -> Callable[..., Any]:
    """Turns a user-fixable error into one line on stderr and exit code 2; Ctrl-C into 130, and
    SIGTERM, which stops a command as Ctrl-C does, into 143."""

    @functools.wraps(command)
    def run(*args: Any, **kwargs: Any) -> Any:
        with sigterm_as_interrupt() as terminated:
            try:
                return command(*args, **kwargs)
            except IsasegError as exc:
                _render.error(str(exc))
                raise typer.Exit(2) from None
            except KeyboardInterrupt:
                _render.error("terminated (SIGTERM)" if terminated() else "interrupted")
                raise typer.Exit(TERMINATED_EXIT if terminated() else 130) from None
            except typer.Exit as exc:  # a command that reported its interruption itself
                if exc.exit_code == 130 and terminated():
                    raise typer.Exit(TERMINATED_EXIT) from None
                raise

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
        cache,
        check_data,
        convert,
        download,
        predict,
        serve,
        synthetic,
        train,
        zoo,
    )
    from isaseg_cli.cli import eval as evaluate
    from isaseg_cli.cli import export as export_command

    commands: dict[str, Callable[..., Any]] = {
        "zoo": zoo.zoo_cli,
        "download": download.download_cli,
        "predict": predict.predict_cli,
        "eval": evaluate.eval_cli,
        "train": train.train_cli,
        "benchmark": benchmark.benchmark_cli,
        "convert-cityscapes": convert.convert_cityscapes_cli,
        "make-synthetic": synthetic.make_synthetic_cli,
        "check-data": check_data.check_data_cli,
        "export": export_command.export_cli,
        "serve": serve.serve_cli,
        "cache": cache.cache_cli,
    }
    for name, command in commands.items():
        app.command(name, cls=IsasegCommand)(_guarded(command))


_register()


def main() -> None:
    app()
