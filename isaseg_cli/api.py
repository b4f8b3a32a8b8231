"""The Python API in one import: resolve a zoo name, get its checkpoint, build a model, segment.

Example::

    from isaseg_cli import api

    entry = api.resolve("isanet_r50_cityscapes")
    path = api.checkpoint_path(entry)          # downloaded into the cache on first use
    loaded = api.load_model(entry, path)       # model, entry, classes, palette
    mask = api.Segmenter(loaded)("street.png")
"""

from __future__ import annotations

from pathlib import Path

from isaseg_cli.engine.infer.segmenter import Segmenter
from isaseg_cli.engine.loading import LoadedModel, load_model
from isaseg_cli.errors import CheckpointError
from isaseg_cli.hub.fetch import ensure_weights
from isaseg_cli.zoo.catalog import load_zoo, resolve_entry
from isaseg_cli.zoo.spec import ZooEntry

__all__ = ["LoadedModel", "Segmenter", "checkpoint_path", "list_models", "load_model", "resolve"]


def resolve(name: str) -> ZooEntry:
    """The zoo entry for a full name, mmseg 0.x name, alias or unique prefix."""
    return resolve_entry(name)


def list_models() -> list[str]:
    """The full names of all zoo entries, in the table's order."""
    return [entry.name for entry in load_zoo().entries]


def checkpoint_path(model: str | ZooEntry, *, force: bool = False) -> Path:
    """The local path of a zoo entry's published checkpoint, downloading and verifying it once."""
    entry = resolve_entry(model) if isinstance(model, str) else model
    if entry.weights is None:
        raise CheckpointError(f"{entry.name} has no published checkpoint")
    return ensure_weights(entry.weights, force=force)
