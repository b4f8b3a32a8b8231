"""`isaseg eval` (being written)."""

import typer


def eval_cli() -> None:
    """Not written yet."""
    raise typer.Exit(1)
