"""Reading and writing checkpoints in mmsegmentation's format (``state_dict`` + ``meta``).

Files move both ways: published mmseg ``.pth`` files load here unchanged, and files saved here
load into mmseg. Our ``meta["isaseg"]`` also stores the zoo entry, so a file rebuilds its model.
"""

from __future__ import annotations

import errno
import os
import pickle
import re
from collections import OrderedDict
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from isaseg_cli.errors import CheckpointError, InputError
from isaseg_cli.zoo.spec import ZooEntry, from_dict, to_dict

_numpy_core: Any = getattr(np, "_core", None) or np.core  # numpy >= 2 renamed numpy.core

# Harmless non-tensor types that mmseg/mmengine write into ``meta`` (numpy scalars and arrays in
# logged values); allowed through torch's weights-only unpickler, nothing else is.
_SAFE_META_GLOBALS: list[Any] = [
    np.dtype,
    np.ndarray,
    _numpy_core.multiarray._reconstruct,
    _numpy_core.multiarray.scalar,
    *{type(np.dtype(name)) for name in ("float64", "float32", "int64", "int32", "bool")},
]


def read_checkpoint(path: str | Path, *, trust: bool = False) -> dict[str, Any]:
    """Loads a checkpoint file onto the CPU with ``torch.load(weights_only=True)``.

    Args:
        path: a ``.pth`` file: a dict with ``state_dict`` (and usually ``meta``), or a bare
            state dict.
        trust: allow full unpickling, which can run arbitrary code; only for files you trust.

    Raises:
        CheckpointError: missing, truncated, not a checkpoint, or needing full unpickling.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        with torch.serialization.safe_globals(_SAFE_META_GLOBALS):
            payload = torch.load(path, map_location="cpu", weights_only=not trust)
    except pickle.UnpicklingError as exc:
        text = str(exc)
        if "weights only" in text.lower() or "weights_only" in text:
            found = re.search(r"Unsupported (global: GLOBAL [\w.]+|operand \S+)", text)
            what = found.group(0).strip() if found else "objects other than tensors"
            raise CheckpointError(
                f"{path} holds Python objects that a weights-only load refuses ({what}); "
                "if you trust the file, pass --trust-checkpoint"
            ) from None
        raise CheckpointError(f"{path} is not a readable checkpoint: {_first_line(exc)}") from None
    except Exception as exc:  # torch.load raises many types for a damaged or foreign file
        detail = _first_line(exc)
        raise CheckpointError(
            f"{path} is not a readable checkpoint (truncated, or not a .pth file)"
            + (f": {detail}" if len(detail) > 12 else "")
        ) from None
    if not isinstance(payload, dict):
        raise CheckpointError(f"{path} is not a checkpoint: it holds a {type(payload).__name__}")
    return payload


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return (text.splitlines()[0] if text else type(exc).__name__)[:160]


def extract_state_dict(
    payload: dict[str, Any], source: str = "checkpoint"
) -> dict[str, torch.Tensor]:
    """The tensors of a checkpoint: its ``state_dict`` (or the dict itself), minus ``module.``."""
    state = payload.get("state_dict", payload)
    if not isinstance(state, dict) or not state:
        raise CheckpointError(f"{source} has no state_dict")
    tensors = {}
    for key, value in state.items():
        if not isinstance(value, torch.Tensor):
            raise CheckpointError(
                f"{source} is not a model checkpoint: entry {key!r} is not a tensor"
            )
        tensors[key.removeprefix("module.")] = value
    return tensors


def check_state_dict(model: nn.Module, state: dict[str, torch.Tensor], source: str) -> None:
    """Raises a CheckpointError naming missing, unexpected and mis-shaped keys, if any."""
    expected = model.state_dict()
    missing = [key for key in expected if key not in state]
    unexpected = [key for key in state if key not in expected]
    misshaped = [
        f"{key} {tuple(state[key].shape)} vs model {tuple(value.shape)}"
        for key, value in expected.items()
        if key in state and state[key].shape != value.shape
    ]
    problems = []
    for label, keys in (
        ("missing", missing),
        ("unexpected", unexpected),
        ("wrong shape", misshaped),
    ):
        if keys:
            more = f" (+{len(keys) - 3} more)" if len(keys) > 3 else ""
            problems.append(f"{len(keys)} {label}: {', '.join(keys[:3])}{more}")
    if problems:
        raise CheckpointError(f"{source} does not fit the model: " + "; ".join(problems))


def load_weights(
    model: nn.Module, path: str | Path, *, strict: bool = True, trust: bool = False
) -> dict[str, Any]:
    """Loads a checkpoint file's weights into ``model`` and returns its ``meta`` (empty if none)."""
    return apply_weights(model, read_checkpoint(path, trust=trust), str(path), strict=strict)


def apply_weights(
    model: nn.Module, payload: dict[str, Any], source: str, *, strict: bool = True
) -> dict[str, Any]:
    """Copies the tensors of a read checkpoint into ``model``; returns its ``meta``.

    With ``strict`` (the default) every key must match in name and shape. Without it, keys that
    the model lacks are skipped and mis-shaped tensors left out (fine-tuning to new classes).
    """
    state = extract_state_dict(payload, source)
    if strict:
        check_state_dict(model, state, source)
    else:
        expected = model.state_dict()
        state = {k: v for k, v in state.items() if k in expected and v.shape == expected[k].shape}
    model.load_state_dict(state, strict=strict)
    meta = payload.get("meta")
    return meta if isinstance(meta, dict) else {}


def entry_from_meta(meta: dict[str, Any]) -> ZooEntry | None:
    """The zoo entry that isaseg stored in a checkpoint's meta, if any."""
    stored = meta.get("isaseg", {}).get("entry") if isinstance(meta.get("isaseg"), dict) else None
    return from_dict(ZooEntry, stored, "checkpoint meta") if stored else None


def build_meta(
    entry: ZooEntry,
    classes: tuple[str, ...],
    palette: tuple[tuple[int, int, int], ...],
    **extra: Any,
) -> dict[str, Any]:
    """``meta`` readable by mmseg 0.x (CLASSES/PALETTE) and 1.x (dataset_meta), plus our entry."""
    from isaseg_cli import __version__

    return {
        "CLASSES": tuple(classes),
        "PALETTE": [list(color) for color in palette],
        "dataset_meta": {"classes": tuple(classes), "palette": [list(c) for c in palette]},
        "isaseg": {"version": __version__, "entry": to_dict(entry), **extra},
    }


def model_state_dict(model: nn.Module) -> OrderedDict[str, torch.Tensor]:
    """CPU copies of the weights under mmseg's key names (DDP/compile wrappers unwrapped), in
    the standard contiguous layout even when the model trains channels-last."""
    inner = getattr(model, "module", model)
    inner = getattr(inner, "_orig_mod", inner)
    return OrderedDict(
        (k, v.detach().to("cpu", memory_format=torch.contiguous_format, copy=True))
        for k, v in inner.state_dict().items()
    )


def save_checkpoint(path: str | Path, payload: dict[str, Any]) -> Path:
    """Writes ``payload`` (``state_dict``, ``meta`` and optional resume state) atomically: into a
    hidden ``.<name>.tmp`` first, renamed over ``path`` only once complete.

    Raises:
        InputError: the file cannot be written (a full or read-only disk); ``path`` is then
            unchanged and no partial file is left.
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            torch.save(payload, tmp)  # its writes run in C++: Ctrl-C is handled after them
        except RuntimeError:
            _write_more(tmp)  # raises the OSError that torch's message leaves out
            raise  # not a write failure: a bug, keep its traceback
        os.replace(tmp, path)
    except OSError as exc:
        raise InputError(f"cannot write {path}: {_write_failure(exc, path)}") from None
    finally:
        tmp.unlink(missing_ok=True)
    return path


def _write_more(tmp: Path) -> None:
    """Appends 1 MiB to the partial file that ``torch.save`` left: on the disk that failed its
    write (``[enforce fail at inline_container.cc]``) this fails too, with the OS's reason."""
    with tmp.open("ab") as file:
        file.write(bytes(1 << 20))
        file.flush()
        os.fsync(file.fileno())


def _write_failure(exc: OSError, path: Path) -> str:
    if exc.errno == errno.ENOSPC:
        return "no space left on the disk; free some space or write elsewhere"
    if exc.errno == errno.EROFS:
        return "the file system is read-only; write elsewhere"
    return f"{exc.strerror or type(exc).__name__}; check {path.parent}"
