"""The model `isaseg serve` loads: on an exported backend, a first start says what it does."""

from __future__ import annotations

import pytest

from isaseg_cli.serve.model import load_segmenter

pytest.importorskip("onnxruntime")


def test_a_first_start_on_onnxruntime_reports_its_steps_and_a_second_none(
    tiny_checkpoint, tmp_path, monkeypatch
) -> None:
    monkeypatch.setenv("ISASEG_HOME", str(tmp_path / "home"))
    starts = []
    for _ in range(2):
        stages: list[str] = []
        load_segmenter(
            None, tiny_checkpoint, backend="onnxruntime", on_stage=stages.append, options={}
        )
        starts.append(stages)
    assert starts == [["export", "verify", "optimize"], []]
