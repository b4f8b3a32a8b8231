"""Cache folder usage and clearing: regular files only, skipped folders left alone."""

from __future__ import annotations

import subprocess

import pytest

from isaseg_cli.errors import OutputError
from isaseg_cli.hub.usage import Usage, clear_folder, folder_usage
from tests.hostile import tmpfs


def _tree(root):
    (root / "inner" / "deep").mkdir(parents=True)
    (root / "kept").mkdir()
    (root / "a.onnx").write_bytes(bytes(100))
    (root / "inner" / "b.data").write_bytes(bytes(20))
    (root / "inner" / "deep" / "c.lock").write_bytes(b"")
    (root / "kept" / "d.onnx").write_bytes(bytes(7))
    outside = root.parent / "outside.bin"
    outside.write_bytes(bytes(1000))
    (root / "link").symlink_to(outside)  # neither counted nor followed
    (root / "dirlink").symlink_to(root / "kept", target_is_directory=True)
    return outside


def test_usage_counts_regular_files_and_leaves_out_skipped_folders(tmp_path) -> None:
    _tree(tmp_path / "cache")
    assert folder_usage(tmp_path / "cache") == Usage(4, 127)
    assert folder_usage(tmp_path / "cache", skip=(tmp_path / "cache" / "kept",)) == Usage(3, 120)
    assert folder_usage(tmp_path / "missing") == Usage()


def test_clear_removes_files_but_not_skipped_ones_links_targets_or_folders(tmp_path) -> None:
    root = tmp_path / "cache"
    outside = _tree(root)
    freed = clear_folder(root, skip=(root / "kept",))
    assert freed == Usage(3, 120)
    assert (root / "kept" / "d.onnx").read_bytes() == bytes(7) and outside.stat().st_size == 1000
    assert (root / "inner" / "deep").is_dir() and (root / "link").is_symlink()
    assert folder_usage(root) == Usage(1, 7)
    assert clear_folder(tmp_path / "missing") == Usage()


def test_a_file_that_cannot_be_removed_is_named(tmp_path) -> None:
    with tmpfs(tmp_path / "ro", "size=64k") as root:
        (root / "x.onnx").write_bytes(b"x")
        subprocess.run(["mount", "-o", "remount,ro", str(root)], check=True)
        with pytest.raises(OutputError, match=r"cannot remove .*x\.onnx: Read-only file system"):
            clear_folder(root)
