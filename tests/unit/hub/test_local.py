"""hub.local: a copy the user has is cached under the published name it turns out to be."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from isaseg_cli.errors import ChecksumError, DownloadError
from isaseg_cli.hub.local import import_file
from isaseg_cli.zoo.spec import WeightsSpec

PAYLOAD = b"not really a checkpoint, but bytes with a digest" * 100
DIGEST = hashlib.sha256(PAYLOAD).hexdigest()
PUBLISHED = WeightsSpec(url=f"https://example.org/w/model_2021-{DIGEST[:8]}.pth", sha256=DIGEST[:8])
OTHER = WeightsSpec(url="https://example.org/w/other-0123abcd.pth", sha256="0123abcd")


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("ISASEG_HOME", str(tmp_path / "home"))
    return tmp_path / "home" / "checkpoints"


def test_a_renamed_copy_is_recognised_by_its_digest(home: Path, tmp_path: Path) -> None:
    source = tmp_path / "download (1).pth"
    source.write_bytes(PAYLOAD)
    result, match = import_file(source, [OTHER, PUBLISHED])
    assert match == PUBLISHED and result.path == home / PUBLISHED.filename
    assert result.downloaded and result.path.read_bytes() == PAYLOAD
    assert source.read_bytes() == PAYLOAD  # copied, not moved
    again, _ = import_file(source, [OTHER, PUBLISHED])
    assert not again.downloaded


def test_a_copy_with_the_published_name_must_match_its_hash(home: Path, tmp_path: Path) -> None:
    source = tmp_path / OTHER.filename  # the name of OTHER, the bytes of something else
    source.write_bytes(PAYLOAD)
    with pytest.raises(ChecksumError, match="not copied into the cache"):
        import_file(source, [OTHER, PUBLISHED])
    assert not (home / OTHER.filename).exists() and source.exists()


def test_an_unknown_file_keeps_its_name(home: Path, tmp_path: Path) -> None:
    source = tmp_path / "my_finetune.pth"
    source.write_bytes(PAYLOAD)
    result, match = import_file(source, [OTHER])
    assert match is None and result.path == home / "my_finetune.pth"
    with pytest.raises(DownloadError, match="no such file"):
        import_file(tmp_path / "missing.pth", [OTHER])
