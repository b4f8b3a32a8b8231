"""hub.cache: cache names derived from URLs stay plain file names inside the cache folder."""

from __future__ import annotations

from pathlib import Path

import pytest

from isaseg_cli.errors import DownloadError
from isaseg_cli.hub.cache import MAX_NAME_BYTES, cached_path

LONGEST = "n" * (MAX_NAME_BYTES - 4) + ".pth"  # with ".sha256.tmp" still 255 bytes


@pytest.fixture(autouse=True)
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("ISASEG_HOME", str(tmp_path))
    return tmp_path


@pytest.mark.parametrize(
    ("url", "why"),
    [
        ("http://host/.", "names a folder"),
        ("http://host/x/%2e", "names a folder"),
        ("http://host/%2e%2e", "names a folder"),
        ("http://host/", "does not end in a file name"),
        ("http://host/evil%00.pth", "control character"),
        ("http://host/a%2Fb.pth", "path separator"),
        ("http://host/a%5cb.pth", "path separator"),
        ("http://host/%ff.pth", "not UTF-8"),
        ("http://host/.bashrc", "hidden names"),
        ("http://host/w.pth.part", "reserved"),
        ("http://host/w.pth.sha256", "reserved"),
        ("http://host/" + "é" * 200 + ".pth", f"at most {MAX_NAME_BYTES} fit"),
        ("some/dir/..", "names a folder"),
        (".", "does not end in a file name"),
    ],
)
def test_unsafe_names_are_refused_naming_the_url(url: str, why: str) -> None:
    with pytest.raises(DownloadError, match=why) as caught:
        cached_path(url)
    assert str(caught.value).startswith(f"{url}: ")


@pytest.mark.parametrize(
    ("url", "name"),
    [
        ("https://host/a/b/model-24f71dfa.pth", "model-24f71dfa.pth"),
        ("https://host/a/with%20space.pth?token=1#x", "with space.pth"),
        ("https://host/caf%C3%A9.pth", "café.pth"),
        ("https://host/" + LONGEST, LONGEST),
        ("/local/folder/resnet50_v1c-2cccc1ad.pth", "resnet50_v1c-2cccc1ad.pth"),
    ],
)
def test_plain_names_land_directly_in_the_cache_folder(home: Path, url: str, name: str) -> None:
    assert cached_path(url) == home / "checkpoints" / name
