"""Which files are a run's, what --overwrite deletes and what --keep-checkpoints keeps."""

from __future__ import annotations

from pathlib import Path

import pytest

from isaseg_cli.engine.train import workdir as train_workdir
from isaseg_cli.engine.train.state import resolve_settings
from isaseg_cli.errors import InputError


def a_run(folder: Path, iterations: list[int]) -> Path:
    folder.mkdir()
    for k in iterations:
        (folder / f"iter_{k}.pth").write_bytes(b"weights %d" % k)
    (folder / "latest.pth").symlink_to(f"iter_{iterations[-1]}.pth")
    (folder / "best.pth").write_bytes(b"best")
    (folder / "log.jsonl").write_text("{}\n")
    (folder / "tensorboard").mkdir()
    (folder / "tensorboard" / "events").write_bytes(b"")
    (folder / ".iter_99.pth.tmp").write_bytes(b"half")
    (folder / "notes.txt").write_text("the user's")
    return folder


def test_checkpoints_sort_by_iteration_not_by_name(tmp_path: Path) -> None:
    work = a_run(tmp_path / "w", [2, 10, 9])
    assert [p.name for p in train_workdir.iter_checkpoints(work)] == [
        "iter_2.pth", "iter_9.pth", "iter_10.pth"
    ]  # fmt: skip
    assert [p.name for p in train_workdir.prune_checkpoints(work, 2)] == ["iter_2.pth"]
    assert train_workdir.prune_checkpoints(work, 0) == []  # 0 keeps all
    assert {"best.pth", "latest.pth", "iter_9.pth", "iter_10.pth"} <= {
        p.name for p in work.iterdir()
    }


def test_a_used_folder_is_refused_and_overwrite_deletes_only_the_runs_files(tmp_path: Path) -> None:
    work = a_run(tmp_path / "w", [1, 2])
    with pytest.raises(InputError, match="--resume .* --overwrite"):
        train_workdir.check_unused(work, overwrite=False)
    train_workdir.check_unused(work, overwrite=True)
    train_workdir.clear_run(work)
    assert [p.name for p in work.iterdir()] == ["notes.txt"]
    train_workdir.check_unused(work, overwrite=False)  # now unused
    train_workdir.check_unused(tmp_path / "absent", overwrite=False)


def test_partial_files_alone_do_not_make_a_folder_used(tmp_path: Path) -> None:
    work = tmp_path / "w"
    work.mkdir()
    (work / ".latest.pth.tmp").write_bytes(b"")
    (work / ".iter_3.pth.tmp").write_bytes(b"")
    train_workdir.check_unused(work, overwrite=False)
    assert sorted(p.name for p in train_workdir.remove_partial_files(work)) == [
        ".iter_3.pth.tmp", ".latest.pth.tmp"
    ]  # fmt: skip
    assert list(work.iterdir()) == []


def test_settings_come_from_the_run_and_given_ones_are_noted(tmp_path: Path) -> None:
    stored = {"data_root": "/data/city", "precision": "bf16", "keep_checkpoints": 1}
    given = {"data_root": None, "precision": "fp32", "device": "cpu", "keep_checkpoints": 1}
    settings, notes = resolve_settings(given, stored, tmp_path)
    assert (settings.data_root, settings.precision, settings.device) == (
        "/data/city",
        "fp32",
        "cpu",
    )
    assert notes == ["--precision fp32 instead of the run's bf16"]  # device: not stored before
    fresh, none = resolve_settings({}, {}, tmp_path / "data")
    assert (fresh.data_root, fresh.keep_checkpoints, none) == (str(tmp_path / "data"), 3, [])


def test_latest_checkpoint_follows_the_link_or_is_none(tmp_path: Path) -> None:
    assert train_workdir.latest_checkpoint(tmp_path) is None
    work = a_run(tmp_path / "w", [2, 4])
    assert train_workdir.latest_checkpoint(work) == (work / "iter_4.pth").resolve()
    (work / "iter_4.pth").unlink()  # a dangling link is no checkpoint
    assert train_workdir.latest_checkpoint(work) is None


def test_the_stop_hint_says_what_was_written_and_how_to_go_on(tmp_path: Path) -> None:
    work = tmp_path / "my run"
    assert train_workdir.stop_hint(work) == "stopped before training began; nothing was written"
    work.mkdir()
    (work / "log.jsonl").write_text("{}\n")
    assert train_workdir.stop_hint(work) == (
        f"stopped before the first checkpoint (log: {work / 'log.jsonl'}); "
        "start again with --overwrite"
    )
    (work / "iter_2.pth").write_bytes(b"weights")
    (work / "latest.pth").symlink_to("iter_2.pth")
    assert train_workdir.stop_hint(work) == (
        f"stopped; checkpoints in {work} (latest.pth -> iter_2.pth), log {work / 'log.jsonl'}; "
        f"continue with: isaseg train --resume --work-dir '{work}'"
    )
