"""`isaseg train` (being written)."""

import typer


def train_cli() -> None:
    """Not written yet."""
    raise typer.Exit(1)
