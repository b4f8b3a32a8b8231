"""Reading and writing checkpoints in mmsegmentation's format (``state_dict`` + ``meta``).

Files move both ways: published mmseg ``.pth`` files load here unchanged, and files saved here
load into mmseg. Our ``meta["isaseg"]`` also stores the zoo entry, so a file rebuilds its model.
"""

from __future__ import annotations

import errno
import os
import pickle
import re
import types
import warnings
import zipfile
from collections import OrderedDict
from pathlib import Path
from typing import Any

import torch
from torch import nn

from isaseg_cli.engine.openmmlab_objects import OPENMMLAB_GLOBALS
from isaseg_cli.errors import CheckpointError, InputError
from isaseg_cli.zoo.spec import ZooEntry, from_dict, to_dict

# Globals that make a pickle run commands or code when loaded. No checkpoint needs them, so a file
# naming one is refused even with --trust-checkpoint (a deny-list: trust still allows the rest).
_CODE_RUNNING_MODULES = frozenset(
    {"os", "posix", "nt", "sys", "subprocess", "shutil", "socket", "importlib", "runpy", "pty"}
    | {"code", "ctypes", "pickle", "marshal", "webbrowser", "commands", "pydoc", "timeit"}
)
_CODE_RUNNING_BUILTINS = frozenset(
    {"eval", "exec", "compile", "__import__", "getattr", "setattr", "delattr", "open"}
    | {"breakpoint", "input", "globals", "locals", "vars"}
)


def _runs_code(module: str, name: str) -> bool:
    if module in ("builtins", "__builtin__"):
        return name in _CODE_RUNNING_BUILTINS
    return module.split(".")[0] in _CODE_RUNNING_MODULES


class _GuardedUnpickler(pickle.Unpickler):
    """Full unpickling (for --trust-checkpoint) that still refuses ``_runs_code`` globals."""

    def find_class(self, module: str, name: str) -> Any:
        if _runs_code(module, name):
            raise pickle.UnpicklingError(f"unsupported GLOBAL {module}.{name}")
        return super().find_class(module, name)


# torch.load takes a pickle module: the same interface as ``pickle``, with the guarded unpickler.
_guarded_pickle = types.ModuleType("isaseg_guarded_pickle")
_guarded_pickle.Unpickler = _GuardedUnpickler  # type: ignore[attr-defined]
_guarded_pickle.load = lambda file, **kwargs: _GuardedUnpickler(file, **kwargs).load()  # type: ignore[attr-defined]
_guarded_pickle.UnpicklingError = pickle.UnpicklingError  # type: ignore[attr-defined]


def read_checkpoint(path: str | Path, *, trust: bool = False) -> dict[str, Any]:
    """Loads a checkpoint file onto the CPU with ``torch.load(weights_only=True)``.

    Published mmseg files and mmengine / mmcv 1.x training checkpoints load without trust: the
    OpenMMLab objects they pickle (message hub, history buffers, configs) become inert
    stand-ins (``openmmlab_objects``). Only a pickle that needs another global, named in the
    error, asks for ``trust``.

    Args:
        path: a ``.pth`` file: a dict with ``state_dict`` (and usually ``meta``), or a bare
            state dict.
        trust: allow full unpickling, which can run arbitrary code; only for files you trust.

    Raises:
        CheckpointError: missing, not a PyTorch checkpoint, damaged, or needing full unpickling.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    _check_container(path)
    try:
        with torch.serialization.safe_globals(OPENMMLAB_GLOBALS), warnings.catch_warnings():
            # torch warns about any pickle protocol but 2; the unpickler's verdict is what counts
            warnings.filterwarnings("ignore", "Detected pickle protocol", UserWarning)
            payload = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        payload = _load_refused(path, _unpickler_reason(exc), trust)
    except Exception as exc:  # torch.load raises many types for a damaged or foreign file
        raise _unreadable(path, _first_line(exc)) from None
    if not isinstance(payload, dict):
        raise CheckpointError(f"{path} is not a checkpoint: it holds a {type(payload).__name__}")
    return payload


def _check_container(path: Path) -> None:
    """Raises "not a PyTorch checkpoint: ..." unless the file is a zip archive holding a pickle
    (``torch.save``) or starts like a pickle (the legacy format)."""
    with path.open("rb") as file:
        head = file.read(512)
    if not head:
        raise CheckpointError(f"{path} is not a PyTorch checkpoint: the file is empty")
    if head.startswith(b"PK\x03\x04"):
        try:
            with zipfile.ZipFile(path) as archive:
                names = archive.namelist()
        except (zipfile.BadZipFile, OSError) as exc:
            raise CheckpointError(
                f"{path} is not a PyTorch checkpoint: a truncated or damaged zip archive ({exc})"
            ) from None
        if not any(name == "data.pkl" or name.endswith("/data.pkl") for name in names):
            listed = ", ".join(names[:3]) + (", ..." if len(names) > 3 else "")
            raise CheckpointError(
                f"{path} is not a PyTorch checkpoint: a zip archive without data.pkl "
                f"(it holds {listed or 'nothing'})"
            )
        return
    if head[0] != pickle.PROTO[0]:
        raise CheckpointError(f"{path} is not a PyTorch checkpoint: {_describe(head)}")


def _describe(head: bytes) -> str:
    """What a file that is neither a zip nor a pickle looks like, from its first bytes."""
    for magic, what in (
        (b"\x89PNG", "a PNG image"),
        (b"\xff\xd8\xff", "a JPEG image"),
        (b"\x1f\x8b", "a gzip file"),
        (b"\x93NUMPY", "a NumPy .npy file"),
        (b"\x89HDF", "an HDF5 file"),
    ):
        if head.startswith(magic):
            return what
    if len(head) > 8 and head[8:10] == b'{"':
        return "a safetensors file"
    try:
        text = head.decode("utf-8").lstrip()
    except UnicodeDecodeError:
        return f"unrecognised bytes (starting {head[:8].hex(' ')})"
    if text.lower().startswith(("<!doctype html", "<html")):
        return "an HTML page (a download that returned an error page?)"
    if text.startswith(("{", "[")):
        return "a JSON or other text file"
    return "a text file"


def _load_refused(path: Path, reason: str, trust: bool) -> Any:
    """A pickle the weights-only load refused: a not-allowed global (loaded fully with
    ``trust``, unless it runs code), or not a checkpoint at all."""
    name = _refused_global(path, reason)
    if name is None:
        raise _unreadable(path, reason)
    if not trust:
        raise CheckpointError(
            f"{path} holds a Python object that a weights-only load refuses ({name}); "
            "if you trust the file, pass --trust-checkpoint"
        )
    try:
        return torch.load(
            path, map_location="cpu", weights_only=False, pickle_module=_guarded_pickle
        )
    except pickle.UnpicklingError as exc:
        _refused_global(path, str(exc))  # raises for the code-running global it met
        raise _unreadable(path, _first_line(exc)) from None
    except ModuleNotFoundError as exc:
        raise CheckpointError(
            f"{path} needs the Python module {exc.name!r} to unpickle {name}, which is not "
            "installed"
        ) from None
    except Exception as exc:
        raise _unreadable(path, _first_line(exc)) from None


def _refused_global(path: Path, reason: str) -> str | None:
    """The global named in an unpickler's refusal; raises if loading it would run code."""
    found = re.search(r"(?:Unsupported global: GLOBAL|unsupported GLOBAL) ([\w.]+)", reason)
    if found is None:
        return None
    name = found.group(1).removesuffix(".")
    module, _, attribute = name.rpartition(".")
    # torch names a refused builtin without its module ("eval", not "builtins.eval")
    if _runs_code(module or "builtins", attribute):
        raise CheckpointError(
            f"{path} is refused: loading it would call {name}, which runs commands or code; "
            "no checkpoint needs that, so do not trust this file"
        )
    return name


def _unreadable(path: Path, reason: str) -> CheckpointError:
    return CheckpointError(f"{path} is not a PyTorch checkpoint, or is damaged: {reason}")


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return (text.splitlines()[0] if text else type(exc).__name__)[:160]


def _unpickler_reason(exc: pickle.UnpicklingError) -> str:
    """The weights-only unpickler's own reason, without torch's advice around it."""
    text = str(exc)
    found = re.search(r"(Unsupported global: GLOBAL|unsupported GLOBAL) [\w.]+", text)
    if found:
        return found.group(0)
    found = re.search(r"WeightsUnpickler error:\s*(.+)", text)
    return found.group(1).strip()[:160] if found else _first_line(exc)


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


def entry_from_meta(meta: dict[str, Any], source: str = "checkpoint") -> ZooEntry | None:
    """The zoo entry that isaseg stored in a checkpoint's meta, if any.

    A file's meta is untrusted input: an entry outside ``_BOUNDS`` (sizes no ISANet uses, which
    would make building the model or resizing the images allocate without limit) is refused.

    Raises:
        SpecError: the stored entry is malformed.
        CheckpointError: a size in it is out of bounds.
    """
    stored = meta.get("isaseg", {}).get("entry") if isinstance(meta.get("isaseg"), dict) else None
    if not stored:
        return None
    entry = from_dict(ZooEntry, stored, f"{source} meta")
    check_entry_bounds(entry, f"{source} meta")
    return entry


# (attribute path in a ZooEntry, lowest, highest): generous around every published ISANet
# (base 64 channels, head 512, 150 classes, test scale 2048 x 1024).
_BOUNDS: tuple[tuple[str, int, int], ...] = (
    ("model.backbone.stem_channels", 1, 512),
    ("model.backbone.base_channels", 1, 512),
    ("model.head.channels", 1, 4096),
    ("model.head.attn_channels", 1, 4096),
    ("model.head.group_size", 1, 1024),
    ("model.aux_head.channels", 1, 4096),
    ("model.aux_head.num_convs", 0, 16),
    ("model.num_classes", 1, 10000),
    ("model.backbone.strides", 1, 8),
    ("model.backbone.dilations", 1, 64),
    ("data.crop_size", 1, 16384),
    ("data.train_scale", 1, 16384),
    ("test.scale", 1, 16384),
    ("test.crop_size", 1, 16384),
    ("test.stride", 1, 16384),
)


def check_entry_bounds(entry: ZooEntry, source: str = "checkpoint meta") -> None:
    """Raises a CheckpointError naming the first size in ``entry`` outside ``_BOUNDS``."""
    for path, lowest, highest in _BOUNDS:
        value: Any = entry
        for name in path.split("."):
            value = getattr(value, name, None)
        for number in value if isinstance(value, tuple) else (value,):
            if number is not None and not lowest <= number <= highest:
                raise CheckpointError(
                    f"{source} describes an implausible model: {path}={number} "
                    f"(expected {lowest}..{highest}); refusing to build it"
                )


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
