"""``isaseg serve``: a Segmenter behind an HTTP API (FastAPI and uvicorn are imported only here)."""

from __future__ import annotations

from isaseg_cli.errors import InputError

EXTRA = "pip install 'isaseg[serve]'"


def require_serve_extra() -> None:
    """Raises InputError naming the extra when FastAPI, uvicorn or their helpers are missing."""
    for module in ("fastapi", "uvicorn", "prometheus_client", "python_multipart"):
        try:
            __import__(module)
        except ImportError:
            raise InputError(f"isaseg serve needs {module}: {EXTRA}") from None
