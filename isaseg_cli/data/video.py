"""Video files with OpenCV: BGR frames in, and an output file that appears only once complete."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np

from isaseg_cli.data.mask_io import os_error_reason, temporary_sibling
from isaseg_cli.errors import InputError, OutputError

VIDEO_EXTENSIONS = (".mp4", ".avi", ".mov", ".mkv", ".webm")
_FOURCC = {".mp4": "mp4v", ".mov": "mp4v", ".mkv": "mp4v", ".avi": "MJPG", ".webm": "VP80"}
_DEFAULT_FPS = 25.0


class VideoReader:
    """Decodes a video file frame by frame; ``frame_count`` is None when the container hides it.

    Raises:
        InputError: OpenCV cannot open the file.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._capture = cv2.VideoCapture(str(path))
        if not self._capture.isOpened():
            raise InputError(f"cannot open video {path}: not a video file OpenCV can read")
        fps = self._capture.get(cv2.CAP_PROP_FPS)
        self.fps = fps if fps and fps > 0 else _DEFAULT_FPS
        count = int(self._capture.get(cv2.CAP_PROP_FRAME_COUNT))
        self.frame_count = count if count > 0 else None

    def __iter__(self) -> Iterator[np.ndarray]:
        while True:
            ok, frame = self._capture.read()
            if not ok:
                return
            yield frame

    def close(self) -> None:
        self._capture.release()

    def __enter__(self) -> VideoReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class VideoWriter:
    """Writes BGR frames into a hidden temporary file beside ``path``; ``commit`` moves it into
    place, and leaving the ``with`` block without a commit deletes it.

    Raises:
        InputError: the suffix is not a known video format, or OpenCV cannot encode it.
        OutputError: the folder cannot be created or the file not moved into place.
    """

    def __init__(self, path: str | Path, fps: float) -> None:
        self.path = Path(path)
        suffix = self.path.suffix.lower()
        if suffix not in _FOURCC:
            known = ", ".join(VIDEO_EXTENSIONS)
            raise InputError(f"cannot write video {path}: use one of the suffixes {known}")
        self.fps = fps
        self._fourcc = cv2.VideoWriter_fourcc(*_FOURCC[suffix])
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise OutputError(
                f"cannot create the folder for {path}: {os_error_reason(exc)}"
            ) from None
        self._tmp = temporary_sibling(self.path, suffix)  # OpenCV picks the container by suffix
        self._writer: cv2.VideoWriter | None = None

    def write(self, frame: np.ndarray) -> None:
        if self._writer is None:
            height, width = frame.shape[:2]
            self._writer = cv2.VideoWriter(str(self._tmp), self._fourcc, self.fps, (width, height))
            if not self._writer.isOpened():
                raise InputError(f"OpenCV cannot encode video {self.path}")
        self._writer.write(frame)

    def commit(self) -> Path:
        """Finishes the file and moves it to ``path``."""
        if self._writer is None:
            raise InputError(f"no frames to write to {self.path}")
        self._writer.release()
        self._writer = None
        try:
            os.replace(self._tmp, self.path)
        except OSError as exc:
            raise OutputError(f"cannot write {self.path}: {os_error_reason(exc)}") from None
        return self.path

    def __enter__(self) -> VideoWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        if self._writer is not None:
            self._writer.release()
        self._tmp.unlink(missing_ok=True)
