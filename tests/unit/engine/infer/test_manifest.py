"""The predict manifest: per-rank part files, line by line, folded into one line per input."""

from __future__ import annotations

import json
from pathlib import Path

from isaseg_cli.engine.infer.manifest import (
    ManifestRecord,
    ManifestWriter,
    merge_manifest,
    part_path,
    read_manifest,
)


def _write(manifest: Path, rank: int, *records: ManifestRecord) -> Path:
    writer = ManifestWriter(manifest, rank)
    for record in records:
        writer.append(record)
    writer.close()
    return writer.path


def test_each_record_is_one_json_line_in_the_ranks_hidden_part(tmp_path) -> None:
    manifest = tmp_path / "out" / "manifest.jsonl"
    ok = ManifestRecord("in/a.png", ("out/a.png",), "ok", seconds=0.12345, mean_confidence=0.75)
    failed = ManifestRecord("in/b.png", (), "failed", error="in/b.png: cannot decode", rank=1)
    path = _write(manifest, 1, ok, failed)
    assert path == part_path(manifest, 1) == tmp_path / "out" / ".manifest.rank1.jsonl"
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert lines[0]["outputs"] == ["out/a.png"] and lines[0]["seconds"] == 0.1235
    assert lines[0]["mean_confidence"] == 0.75 and lines[0]["error"] is None
    assert lines[1]["status"] == "failed" and "mean_confidence" not in lines[1]
    assert lines[1]["rank"] == 1 and not manifest.exists()


def test_merge_keeps_one_line_per_input_the_latest_and_drops_cut_lines(tmp_path) -> None:
    manifest = tmp_path / "manifest.jsonl"
    earlier = ManifestRecord("b.png", (), "failed", error="boom", finished=1.0)
    manifest.write_text(earlier.to_json() + "\n")  # from an earlier run
    _write(manifest, 0, ManifestRecord("b.png", ("b.out",), "ok", finished=2.0))
    part = _write(
        manifest,
        1,
        ManifestRecord("a.png", ("a.out",), "ok", rank=1, finished=3.0),
        ManifestRecord("c.png", ("c.out",), "skipped", rank=1, finished=4.0),
    )
    with open(part, "a") as file:
        file.write('{"input": "d.png", "stat')  # what a kill mid-line leaves
    # a rerun that found b's outputs: its "skipped" must not hide the run that wrote them
    _write(manifest, 2, ManifestRecord("b.png", ("b.out",), "skipped", rank=2, finished=5.0))
    assert merge_manifest(manifest) == 3
    records = list(read_manifest(manifest))
    assert [(r["input"], r["status"]) for r in records] == [
        ("a.png", "ok"),
        ("b.png", "ok"),
        ("c.png", "skipped"),
    ]
    assert records[1]["finished"] == 2.0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["manifest.jsonl"]  # parts folded
    _write(manifest, 0, ManifestRecord("c.png", ("c.out",), "ok", finished=6.0))
    assert merge_manifest(manifest) == 3  # a later run continues the same manifest
    assert [r["status"] for r in read_manifest(manifest)] == ["ok", "ok", "ok"]


def test_merge_without_records_writes_nothing(tmp_path) -> None:
    assert merge_manifest(tmp_path / "manifest.jsonl") == 0
    assert list(tmp_path.iterdir()) == []
