"""Parsing shared by several commands' options, so a flag means the same everywhere."""

from __future__ import annotations

import os

from isaseg_cli.errors import InputError

DEFAULT_MODEL = "isanet_r101_cityscapes"


def default_model() -> str:
    """The model used when none is named: ``$ISASEG_MODEL``, else the best Cityscapes R-101."""
    return os.environ.get("ISASEG_MODEL") or DEFAULT_MODEL


def parse_size(text: str | None, flag: str) -> tuple[int, int] | None:
    """``"769x769"`` -> (769, 769): HEIGHTxWIDTH in pixels."""
    if text is None:
        return None
    parts = text.lower().split("x")
    if len(parts) != 2 or not all(part.strip().isdigit() and int(part) > 0 for part in parts):
        raise InputError(f"{flag} takes HEIGHTxWIDTH in pixels, e.g. 769x769, not {text!r}")
    return int(parts[0]), int(parts[1])


def parse_ratios(text: str | None) -> tuple[float, ...] | None:
    """``"0.5,1.0,1.5"`` -> (0.5, 1.0, 1.5): the scales of multi-scale testing."""
    if text is None:
        return None
    try:
        ratios = tuple(float(part) for part in text.split(",") if part.strip())
    except ValueError:
        ratios = ()
    if not ratios or min(ratios) <= 0:
        raise InputError(f"--scales takes positive ratios like 0.5,1.0,1.5, not {text!r}")
    return ratios
