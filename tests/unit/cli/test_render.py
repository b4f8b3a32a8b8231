"""cli/_render: the download-bar adapter shared by the commands, and which process draws."""

from __future__ import annotations

import pytest

from isaseg_cli.cli import _render


def test_download_sink_reports_bytes_or_whole_megabytes() -> None:
    calls: list[tuple] = []

    def update(*args: object) -> None:
        calls.append(args)

    _render.download_sink(update)(3 << 20, None)
    _render.download_sink(update, label="w.pth")(5, 10)
    _render.download_sink(update, label="download (MB)", megabytes=True)((3 << 20) + 7, 9 << 20)
    assert calls == [
        ("download weights", 3 << 20, None),
        ("w.pth", 5, 10),
        ("download (MB)", 3, 9),
    ]


def test_a_cached_file_draws_no_bar(capsys: pytest.CaptureFixture[str]) -> None:
    with _render.progress_bars(transfer=True) as update:
        _render.download_sink(update)  # never called: nothing was downloaded
    assert capsys.readouterr().err == ""


@pytest.mark.parametrize(
    ("rank", "main"), [(None, True), ("0", True), ("00", True), ("1", False), ("x", True)]
)
def test_only_rank_0_draws_by_dist_infos_rule(
    monkeypatch: pytest.MonkeyPatch, rank: str | None, main: bool
) -> None:
    if rank is None:
        monkeypatch.delenv("RANK", raising=False)
    else:
        monkeypatch.setenv("RANK", rank)
    assert _render.is_main_process() is main
