"""`isaseg zoo` (being written)."""

import typer


def zoo_cli() -> None:
    """Not written yet."""
    raise typer.Exit(1)
