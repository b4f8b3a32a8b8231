"""One-line descriptions of the errors one input can raise, so a run reports them and goes on."""

from __future__ import annotations

from pathlib import Path

from isaseg_cli.errors import IsasegError


def describe(exc: BaseException) -> str:
    """The message of an ``IsasegError``; for anything else (``cv2.error``, ``MemoryError``, a
    torch RuntimeError ...) its type and the last line of its message, which holds the reason."""
    if isinstance(exc, IsasegError):
        return str(exc)
    lines = [line.strip() for line in str(exc).strip().splitlines() if line.strip()]
    text = lines[-1] if lines else ""
    # OpenCV prefixes "OpenCV(4.x) /path/file.cpp:123: error: (-215:Assertion failed) ".
    text = text.split(" error: ", 1)[-1]
    kind = type(exc).__name__
    if type(exc).__module__ not in ("builtins", "__main__"):
        kind = f"{type(exc).__module__.split('.')[0]}.{kind}"  # cv2.error, not a bare "error"
    return f"{kind}: {text}" if text else kind


def failure_for(path: str | Path, exc: BaseException) -> str:
    """``describe(exc)``, prefixed with ``path`` unless the message names it already."""
    reason = describe(exc)
    return reason if str(path) in reason else f"{path}: {reason}"
