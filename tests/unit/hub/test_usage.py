"""Cache folder usage and clearing: regular files only, skipped folders and lock files left
alone, and nothing removed while another process holds a lock there."""

from __future__ import annotations

import subprocess
import sys

import pytest

from isaseg_cli.errors import OutputError
from isaseg_cli.hub.lock import exclusive
from isaseg_cli.hub.usage import Usage, clear_folders, folder_usage
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
    assert folder_usage(tmp_path / "cache") == Usage(3, 127)  # c.lock is not counted
    assert folder_usage(tmp_path / "cache", skip=(tmp_path / "cache" / "kept",)) == Usage(2, 120)
    assert folder_usage(tmp_path / "missing") == Usage()


def test_clear_removes_files_but_not_skipped_ones_locks_links_targets_or_folders(
    tmp_path,
) -> None:
    root = tmp_path / "cache"
    outside = _tree(root)
    freed = clear_folders([(root, (root / "kept",))])
    assert freed == Usage(2, 120)
    assert (root / "kept" / "d.onnx").read_bytes() == bytes(7) and outside.stat().st_size == 1000
    assert (root / "inner" / "deep" / "c.lock").is_file() and (root / "link").is_symlink()
    assert folder_usage(root) == Usage(1, 7)
    assert clear_folders([(tmp_path / "missing", ())]) == Usage()


def _hold(lock_file) -> subprocess.Popen:
    """Another process holding ``lock_file``'s lock until its stdin closes."""
    code = (
        "import sys; from isaseg_cli.hub.lock import exclusive\n"
        f"with exclusive(__import__('pathlib').Path({str(lock_file)!r})):\n"
        "    print('held', flush=True); sys.stdin.read()"
    )
    holder = subprocess.Popen(
        [sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    assert holder.stdout is not None and holder.stdout.readline() == "held\n"
    return holder


def test_a_lock_held_by_another_process_refuses_the_clear_and_removes_nothing(tmp_path) -> None:
    first, second = tmp_path / "checkpoints", tmp_path / "graphs"
    _tree(first)
    (second / "openvino").mkdir(parents=True)
    (second / "g.onnx").write_bytes(bytes(3))
    holder = _hold(second / "openvino" / "g.lock")  # a compile in progress in the second part
    try:
        with pytest.raises(OutputError, match=r"another isaseg process .*\(g\.lock is locked\)"):
            clear_folders([(first, ()), (second, ())])
        assert folder_usage(first) == Usage(3, 127) and folder_usage(second) == Usage(1, 3)
    finally:
        assert holder.stdin is not None
        holder.stdin.close()
        holder.wait(30)
    assert clear_folders([(first, ()), (second, ())]) == Usage(4, 130)  # free again
    with exclusive(second / "openvino" / "g.lock") as waited:  # the lock still works
        assert not waited


def test_a_file_that_cannot_be_removed_is_named(tmp_path) -> None:
    with tmpfs(tmp_path / "ro", "size=64k") as root:
        (root / "x.onnx").write_bytes(b"x")
        (root / "x.lock").write_bytes(b"")  # which no process can take there either
        subprocess.run(["mount", "-o", "remount,ro", str(root)], check=True)
        with pytest.raises(OutputError, match=r"cannot remove .*x\.onnx: Read-only file system"):
            clear_folders([(root, ())])
