"""Video in and out with OpenCV: frames read back, and output that appears only when committed."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from isaseg_cli.data.video import VideoReader, VideoWriter
from isaseg_cli.errors import InputError


def _frames(count: int = 3) -> list[np.ndarray]:
    # Flat colours survive MJPG's compression within a few levels.
    return [np.full((32, 48, 3), 40 + 60 * i, np.uint8) for i in range(count)]


def test_written_frames_read_back_in_order(tmp_path: Path) -> None:
    path = tmp_path / "out" / "clip.avi"
    with VideoWriter(path, fps=5.0) as writer:
        for frame in _frames():
            writer.write(frame)
        assert writer.commit() == path
    assert sorted(p.name for p in path.parent.iterdir()) == ["clip.avi"]  # no temporary left
    with VideoReader(path) as reader:
        frames = list(reader)
        assert reader.fps == pytest.approx(5.0)
        assert reader.frame_count in (3, None)
    assert len(frames) == 3
    for frame, original in zip(frames, _frames(), strict=True):
        assert frame.shape == original.shape
        assert np.abs(frame.astype(int) - original).max() <= 4


def test_leaving_without_commit_leaves_nothing(tmp_path: Path) -> None:
    path = tmp_path / "clip.avi"
    with VideoWriter(path, fps=5.0) as writer:
        writer.write(_frames(1)[0])
    assert list(tmp_path.iterdir()) == []


def test_commit_without_frames_and_unknown_suffixes_are_errors(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="use one of the suffixes .mp4, .avi"):
        VideoWriter(tmp_path / "clip.gif", fps=5.0)
    with VideoWriter(tmp_path / "clip.avi", fps=5.0) as writer:
        with pytest.raises(InputError, match="no frames to write"):
            writer.commit()
    assert list(tmp_path.iterdir()) == []


def test_a_file_that_is_not_a_video_is_one_line(tmp_path: Path) -> None:
    path = tmp_path / "notes.mp4"
    path.write_text("not a video")
    with pytest.raises(InputError, match="cannot open video .*notes.mp4: not a video file"):
        VideoReader(path)
