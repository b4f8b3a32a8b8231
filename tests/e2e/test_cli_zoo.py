"""`isaseg zoo` and `isaseg download` end to end, downloads served from 127.0.0.1."""

from __future__ import annotations

import functools
import hashlib
import json
import threading
from collections.abc import Iterator
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from typer.testing import CliRunner

from isaseg_cli.cli import app

runner = CliRunner()
PAYLOAD = bytes(range(256)) * 400
PREFIX = hashlib.sha256(PAYLOAD).hexdigest()[:8]
R101_CITY = "isanet_r101-d8_4xb2-80k_cityscapes-769x769"
R101_CITY_FILE = "isanet_r101-d8_769x769_80k_cityscapes_20210903_111319-24f71dfa.pth"


class QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[Path, str]]:
    """A folder served over HTTP on 127.0.0.1 and its base URL."""
    root = tmp_path / "www"
    root.mkdir()
    httpd = ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(QuietHandler, directory=str(root))
    )
    thread = threading.Thread(target=httpd.serve_forever, args=(0.01,), daemon=True)
    thread.start()
    yield root, f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


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
    assert record["name"] == R101_CITY and record["cached_path"] is None
    assert record["published"]["miou"] == 80.61


def test_unknown_name_exits_2_with_suggestions(home: Path) -> None:
    result = runner.invoke(app, ["zoo", "isanet_r50_citiscapes"])
    assert result.exit_code == 2
    assert "unknown model 'isanet_r50_citiscapes'" in result.output
    assert "isanet_r50_cityscapes" in result.output
    assert "Traceback" not in result.output


def test_download_url_into_the_cache(home: Path, served: tuple[Path, str]) -> None:
    root, base = served
    name = f"tiny_20240101_000000-{PREFIX}.pth"
    (root / name).write_bytes(PAYLOAD)
    result = runner.invoke(app, ["download", f"{base}/{name}"])
    assert result.exit_code == 0, result.output
    cached = home / "checkpoints" / name
    assert cached.read_bytes() == PAYLOAD
    assert "downloaded" in result.output and "sha256 verified" in result.output
    (root / name).unlink()  # the second run must not need the server
    again = runner.invoke(app, ["download", f"{base}/{name}"])
    assert again.exit_code == 0 and "already cached" in again.output


def test_download_hash_mismatch_exits_2_and_leaves_nothing(
    home: Path, served: tuple[Path, str]
) -> None:
    root, base = served
    name = "tiny_20240101_000000-00000000.pth"
    (root / name).write_bytes(PAYLOAD)
    result = runner.invoke(app, ["download", f"{base}/{name}"])
    assert result.exit_code == 2
    assert "SHA-256 mismatch" in result.output and "the file was deleted" in result.output
    assert list((home / "checkpoints").iterdir()) == []


def test_download_zoo_name_uses_the_mirror_and_verifies(
    home: Path, served: tuple[Path, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    root, base = served
    monkeypatch.setenv("ISASEG_MIRROR", base)
    folder = root / "mmsegmentation/v0.5/isanet/isanet_r101-d8_769x769_80k_cityscapes"
    folder.mkdir(parents=True)
    (folder / R101_CITY_FILE).write_bytes(PAYLOAD)  # not the real file: its hash cannot match
    result = runner.invoke(app, ["download", "isanet_r101_cityscapes"])
    assert result.exit_code == 2
    assert "expected a digest starting with 24f71dfa" in result.output
    assert list((home / "checkpoints").iterdir()) == []


def test_download_pretrained_only_fetches_the_backbone(
    home: Path, served: tuple[Path, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    root, base = served
    monkeypatch.setenv("ISASEG_MIRROR", base)
    folder = root / "pretrain/third_party"
    folder.mkdir(parents=True)
    (folder / "resnet50_v1c-2cccc1ad.pth").write_bytes(PAYLOAD)
    result = runner.invoke(app, ["download", "isanet_r50_ade20k", "--pretrained-only"])
    assert result.exit_code == 2  # served and checked against the backbone's own hash
    assert "resnet50_v1c-2cccc1ad.pth" in result.output and "2cccc1ad" in result.output
