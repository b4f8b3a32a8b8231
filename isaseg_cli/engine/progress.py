"""Progress events: how engine functions report long work without printing anything themselves."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True, slots=True)
class ProgressEvent:
    """``completed`` of ``total`` units of ``task`` done (``total`` None when unknown).

    ``info`` carries figures worth showing beside the bar, e.g. ``{"loss": 0.41, "lr": 0.0098}``.
    """

    task: str
    completed: int
    total: int | None = None
    info: dict[str, Any] = field(default_factory=dict)


ProgressCallback = Callable[[ProgressEvent], None]
