"""Imports of optional dependencies, each failing with the pip extra that provides it."""

from __future__ import annotations

import importlib
from types import ModuleType

from isaseg_cli.errors import MissingExtraError


def require(module: str, extra: str) -> ModuleType:
    """``import module``, or a MissingExtraError naming ``pip install 'isaseg[extra]'``."""
    try:
        return importlib.import_module(module)
    except ImportError:
        raise MissingExtraError(
            f"{module} is not installed: pip install 'isaseg[{extra}]'"
        ) from None
