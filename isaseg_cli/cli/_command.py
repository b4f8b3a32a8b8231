"""The click classes behind every command: one help style, hidden old spellings, one-line errors.

Typer builds each command's click object from its signature; these subclasses (``cls=`` of the
app and its commands) adjust what Typer leaves to taste: the ``<bool>``/``<str>`` type labels in
``--help``, the ``{INPUT...}...`` usage line, and the boxed usage errors.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import typer
from typer.core import TyperCommand, TyperGroup

from isaseg_cli.cli import _render

try:  # Typer >= 0.29 vendors its own click; older Typer uses the click package
    from typer import _click as click
except ImportError:  # pragma: no cover - depends on the installed Typer
    import click  # type: ignore[no-redef]

# Old spellings that keep working (scripts use them) but are not shown in --help.
HIDDEN_ALIASES = {"--crop": "--crop-size"}

# Typer's type labels for options without a metavar, in the metavar style of the other options.
_TYPE_LABELS = {"<str>": "TEXT", "<int>": "N", "<float>": "F", "<path>": "PATH"}


def _usage_error(ctx: Any, exc: Exception) -> typer.Exit:
    """Prints a click usage error as one ``error:`` line; the caller raises the returned Exit."""
    hint = f" (see '{ctx.command_path} -h')" if ctx is not None else ""
    _render.error(f"{exc.format_message()}{hint}")  # type: ignore[attr-defined]
    return typer.Exit(getattr(exc, "exit_code", 2))


def _is_usage_error(exc: Exception) -> bool:
    # NoArgsIsHelpError (a bare ``isaseg``) prints the help; it is not a user mistake.
    return isinstance(exc, click.ClickException) and type(exc).__name__ != "NoArgsIsHelpError"


def _plain_label(param: Any) -> None:
    """Shows an option's type the way the explicit metavars read: ``whole|slide``, ``TEXT``, and
    nothing for flags and arguments (an argument's name already is its metavar)."""
    show: Callable[[Any], str | None] | None = getattr(param, "display_type_rich", None)
    if show is None or getattr(show, "plain", False):  # older Typer: no such labels
        return
    is_argument = param.param_type_name == "argument"

    def display(ctx: Any) -> str | None:
        if is_argument or getattr(param, "is_flag", False):
            return None
        label = show(ctx)
        if label is None or not label.startswith("<"):
            return label
        return _TYPE_LABELS.get(label, label[1:-1])

    display.plain = True  # type: ignore[attr-defined]
    param.display_type_rich = display


def _with_aliases(args: list[str], known: set[str]) -> list[str]:
    """``args`` with hidden old spellings replaced by the flag they stand for."""
    result = []
    for index, arg in enumerate(args):
        if arg == "--":
            return result + args[index:]
        flag, sep, value = arg.partition("=")
        new = HIDDEN_ALIASES.get(flag)
        result.append(f"{new}{sep}{value}" if new in known and flag not in known else arg)
    return result


class IsasegCommand(TyperCommand):
    """A command whose help, usage line and usage errors follow the house style."""

    def get_params(self, ctx: Any) -> list[Any]:
        params = super().get_params(ctx)  # with --help, which click adds per context
        for param in params:
            _plain_label(param)
        return params

    def collect_usage_pieces(self, ctx: Any) -> list[str]:
        """``[OPTIONS] INPUT...`` or ``[OPTIONS] [MODEL]``, not Typer's ``{INPUT...}...``."""
        pieces = [self.options_metavar] if self.options_metavar else []
        for param in self.get_params(ctx):
            if param.param_type_name != "argument":
                continue
            name = (param.metavar or (param.name or "").upper()).removesuffix("...")
            name += "..." if param.nargs != 1 else ""
            pieces.append(name if param.required else f"[{name}]")
        return pieces

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        known = {flag for param in self.params for flag in param.opts}
        try:
            return super().parse_args(ctx, _with_aliases(args, known))
        except Exception as exc:
            if _is_usage_error(exc):
                raise _usage_error(ctx, exc) from None
            raise


class IsasegGroup(TyperGroup):
    """The root ``isaseg``: the same help style; an unknown command is a one-line error too."""

    def get_params(self, ctx: Any) -> list[Any]:
        params = super().get_params(ctx)
        for param in params:
            _plain_label(param)
        return params

    def resolve_command(self, ctx: Any, args: list[str]) -> Any:
        try:
            return super().resolve_command(ctx, args)
        except Exception as exc:
            if _is_usage_error(exc):
                raise _usage_error(ctx, exc) from None
            raise
