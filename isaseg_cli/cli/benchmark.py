"""`isaseg benchmark` (being written)."""

import typer


def benchmark_cli() -> None:
    """Not written yet."""
    raise typer.Exit(1)
