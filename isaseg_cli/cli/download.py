"""`isaseg download` (being written)."""

import typer


def download_cli() -> None:
    """Not written yet."""
    raise typer.Exit(1)
