"""`isaseg predict` (being written)."""

import typer


def predict_cli() -> None:
    """Not written yet."""
    raise typer.Exit(1)
