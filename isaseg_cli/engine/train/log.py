"""The training log: JSON lines in ``work_dir/log.jsonl``, and TensorBoard events when installed."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from isaseg_cli.errors import InputError

LOG_NAME = "log.jsonl"
TENSORBOARD_DIR = "tensorboard"


class TrainLog:
    """Appends one JSON object per line; each line is flushed, so a crash loses at most one.

    Args:
        work_dir: where ``log.jsonl`` (and ``tensorboard/``) go.
        append: continue an existing log (a resumed run) instead of starting a new one.
    """

    def __init__(self, work_dir: Path, *, append: bool) -> None:
        self.path = work_dir / LOG_NAME
        self._file = self.path.open("a" if append else "w", encoding="utf-8")
        self._writer = _tensorboard_writer(work_dir / TENSORBOARD_DIR)

    def write(self, record: dict[str, Any]) -> None:
        """Writes ``record`` (which holds ``iter``); numbers also go to TensorBoard as
        ``<mode>/<name>``.

        Raises:
            InputError: the log cannot be written (a full disk).
        """
        try:
            self._file.write(json.dumps(record, default=_plain) + "\n")
            self._file.flush()
        except OSError as exc:
            reason = exc.strerror or type(exc).__name__
            raise InputError(f"cannot write {self.path}: {reason}") from None
        if self._writer is not None:
            mode = record.get("mode", "train")
            for name, value in record.items():
                if (
                    name != "iter"
                    and isinstance(value, int | float)
                    and not isinstance(value, bool)
                ):
                    if math.isfinite(value):
                        self._writer.add_scalar(f"{mode}/{name}", value, record["iter"])

    def close(self) -> None:
        try:
            self._file.close()
        except OSError:
            pass  # the flush of a line that ``write`` already reported as failed
        if self._writer is not None:
            self._writer.close()


def _tensorboard_writer(folder: Path) -> Any:
    """A SummaryWriter if the optional ``tensorboard`` package is installed, else None."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        return None
    return SummaryWriter(log_dir=str(folder))


def _plain(value: Any) -> Any:
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")
