"""`isaseg zoo` end to end: the table at any width, one entry in full, names for scripts."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from isaseg_cli.cli import app
from isaseg_cli.zoo.catalog import load_zoo

runner = CliRunner()
PAYLOAD = bytes(range(256)) * 400
PREFIX = hashlib.sha256(PAYLOAD).hexdigest()[:8]
R101_CITY = "isanet_r101-d8_4xb2-80k_cityscapes-769x769"
R101_CITY_FILE = "isanet_r101-d8_769x769_80k_cityscapes_20210903_111319-24f71dfa.pth"
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("ISASEG_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("ISASEG_MIRROR", raising=False)
    return tmp_path / "home"


def test_zoo_lists_all_entries_and_marks_cached_ones(home: Path, tmp_path: Path) -> None:
    (home / "checkpoints").mkdir(parents=True)
    (home / "checkpoints" / R101_CITY_FILE).write_bytes(b"x")
    out = tmp_path / "zoo.json"
    result = runner.invoke(app, ["zoo", "--json-out", str(out)])
    assert result.exit_code == 0, result.output
    assert "ISANet model zoo (16 of 16)" in result.output
    assert "✓" in result.output
    records = json.loads(out.read_text())
    assert len(records) == 16
    assert [r["name"] for r in records if r["cached"]] == [R101_CITY]


def test_zoo_filters(home: Path, tmp_path: Path) -> None:
    out = tmp_path / "voc.json"
    result = runner.invoke(
        app, ["zoo", "--dataset", "voc", "--backbone", "r101", "--json-out", str(out)]
    )
    assert result.exit_code == 0, result.output
    records = json.loads(out.read_text())
    assert [r["name"] for r in records] == [
        "isanet_r101-d8_4xb4-20k_voc12aug-512x512",
        "isanet_r101-d8_4xb4-40k_voc12aug-512x512",
    ]
    bad = runner.invoke(app, ["zoo", "--backbone", "r34"])
    assert bad.exit_code == 2 and "choose r50 or r101" in bad.output


def test_zoo_shows_one_entry_in_full(home: Path, tmp_path: Path) -> None:
    out = tmp_path / "entry.json"
    result = runner.invoke(app, ["zoo", "isanet_r101_cityscapes", "--json-out", str(out)])
    assert result.exit_code == 0, result.output
    legacy = "isanet_r101-d8_769x769_80k_cityscapes"
    for expected in (R101_CITY, legacy, R101_CITY_FILE, "[513, 513]", "resnet101_v1c"):
        assert expected in result.output
    record = json.loads(out.read_text())
    assert record["name"] == R101_CITY and record["cached"] is False
    assert record["cached_path"] == str(home / "checkpoints" / R101_CITY_FILE)  # where to put it
    assert f"cached_path {record['cached_path']}" in " ".join(result.output.split())
    assert record["published"]["miou"] == 80.61


def test_unknown_name_exits_2_with_suggestions(home: Path) -> None:
    result = runner.invoke(app, ["zoo", "isanet_r50_citiscapes"])
    assert result.exit_code == 2
    assert "unknown model 'isanet_r50_citiscapes'" in result.output
    assert "isanet_r50_cityscapes" in result.output
    assert "Traceback" not in result.output


def test_piped_zoo_fits_80_columns_with_every_full_name_and_alias(tmp_path: Path) -> None:
    environ = {k: v for k, v in os.environ.items() if k != "COLUMNS"}
    environ.update(PYTHONPATH=str(REPO), ISASEG_HOME=str(tmp_path / "home"))
    done = subprocess.run(
        [sys.executable, "-m", "isaseg_cli", "zoo"],
        env=environ,
        capture_output=True,
        text=True,
        timeout=60,
    )  # what `isaseg zoo | cat` sees: stdout is a pipe
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert max(len(line) for line in lines) <= 80
    for entry in load_zoo().entries:
        assert any(entry.name in line.split() for line in lines), entry.name
        assert all(f"alias {alias}" in done.stdout for alias in entry.aliases[:1])


@pytest.mark.parametrize("columns", [80, 200])
def test_zoo_table_keeps_names_whole_at_any_width(
    home: Path, monkeypatch: pytest.MonkeyPatch, columns: int
) -> None:
    monkeypatch.setenv("COLUMNS", str(columns))
    result = runner.invoke(app, ["zoo"])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert max(len(line) for line in lines) <= columns
    assert all(any(e.name in line.split() for line in lines) for e in load_zoo().entries)
    header = next(line for line in lines if "name" in line.split()[:2])
    assert ("dataset" in header) is (columns == 200)  # derivable columns dropped when narrow


def test_zoo_names_prints_one_full_name_per_line(home: Path) -> None:
    result = runner.invoke(app, ["zoo", "--names"])
    assert result.exit_code == 0, result.output
    assert result.output.splitlines() == [entry.name for entry in load_zoo().entries]
    voc = runner.invoke(app, ["zoo", "--names", "--dataset", "voc"])
    names = voc.output.splitlines()
    assert names and all(name.endswith("voc12aug-512x512") for name in names)
