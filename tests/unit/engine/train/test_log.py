"""The training log: one flushed JSON line per record, appended on resume, and a full disk that
is one InputError naming the log."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from isaseg_cli.engine.train.log import LOG_NAME, TrainLog
from isaseg_cli.errors import InputError


def lines(work: Path) -> list[dict]:
    return [json.loads(line) for line in (work / LOG_NAME).read_text().splitlines()]


def test_records_are_lines_readable_before_close_and_a_resume_appends(tmp_path: Path) -> None:
    log = TrainLog(tmp_path, append=False)
    log.write({"iter": 2, "mode": "train", "loss": 1.5, "path": tmp_path / "x"})
    assert lines(tmp_path) == [  # flushed: a crash now would keep it
        {"iter": 2, "mode": "train", "loss": 1.5, "path": str(tmp_path / "x")}
    ]
    log.write({"iter": 2, "mode": "val", "mIoU": float("nan"), "best": False})
    log.close()
    resumed = TrainLog(tmp_path, append=True)
    resumed.write({"iter": 3, "mode": "train", "loss": 1.0})
    resumed.close()
    assert [(line["iter"], line["mode"]) for line in lines(tmp_path)] == [
        (2, "train"), (2, "val"), (3, "train")
    ]  # fmt: skip
    TrainLog(tmp_path, append=False).close()  # a new run starts a new log
    assert (tmp_path / LOG_NAME).read_text() == ""


def test_an_unserialisable_value_is_a_type_error_not_a_half_line(tmp_path: Path) -> None:
    log = TrainLog(tmp_path, append=False)
    with pytest.raises(TypeError, match="not JSON serialisable: object"):
        log.write({"iter": 1, "value": object()})
    log.close()
    assert (tmp_path / LOG_NAME).read_text() == ""


def test_a_full_disk_is_one_input_error_naming_the_log(tmp_path: Path) -> None:
    if not Path("/dev/full").exists():
        pytest.skip("needs /dev/full")
    (tmp_path / LOG_NAME).symlink_to("/dev/full")
    log = TrainLog(tmp_path, append=True)
    with pytest.raises(InputError, match=f"cannot write {tmp_path / LOG_NAME}: No space left"):
        log.write({"iter": 1, "mode": "train"})
    log.close()
