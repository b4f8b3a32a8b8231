"""index.html of an eval report: every figure in its place, names from the data escaped."""

from __future__ import annotations

import math
from html.parser import HTMLParser
from pathlib import Path

from isaseg_cli.report.eval_report import ImageMetrics
from isaseg_cli.report.html import render_index


def _payload(**changes: object) -> dict:
    payload = {
        "model": "isanet_r50_cityscapes",
        "dataset": "cityscapes",
        "images": 3,
        "partial": False,
        "seconds": 12.34,
        "aAcc": 95.5,
        "mIoU": 78.456,
        "mAcc": 85.0,
        "published_mIoU": 78.49,
        "difference": -0.034,
        "per_class": [
            {"class": "<script>road</script>", "IoU": 97.0, "Acc": 98.0},
            {"class": "wall", "IoU": math.nan, "Acc": None},
        ],
        "settings": {
            "split": "val",
            "data_root": "data/cityscapes",
            "test": {"mode": "slide", "crop_size": [769, 769], "stride": [513, 513]},
            "ms_flip": True,
            "ratios": [0.5, 1.0],
        },
    }
    return {**payload, **changes}


class _Text(HTMLParser):
    """The page's text and its tags, to check structure without string matching on markup."""

    def __init__(self) -> None:
        super().__init__()
        self.text: list[str] = []
        self.tags: list[str] = []

    def handle_starttag(self, tag: str, attrs: list) -> None:
        self.tags.append(tag)

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def _parse(page: str) -> _Text:
    parser = _Text()
    parser.feed(page)
    return parser


def test_the_page_shows_the_settings_metrics_and_gallery() -> None:
    row = ImageMetrics(Path("a.png"), 100, 90.0, 45.5, 2, 10.25)
    panels = {"image": "w/1.png", "label": "w/1_l.png", "prediction": "w/1_p.png"}
    gallery = [
        {"row": row, "name": "frankfurt_1.png", "worst": "wall", **panels, "errors": "e.png"}
    ]
    page = render_index(_payload(), checkpoint_sha256="ab" * 32, mean_image_miou=70.0,
                        gallery=gallery)  # fmt: skip
    text = " ".join(_parse(page).text)
    assert "isanet_r50_cityscapes on cityscapes val" in text
    assert "slide (crop [769, 769], stride [513, 513])" in text
    assert "yes, ratios [0.5, 1.0]" in text and "ab" * 32 in text and "12.3 s" in text
    assert "78.46" in text and "78.49" in text and "-0.03" in text
    assert "n/a" in text  # the absent class
    assert "1. frankfurt_1.png: mIoU 45.50 %, pixel accuracy 90.00 %, worst class wall" in text
    assert page.count("<img ") == 2 + 4  # two plots, four panels of the one gallery image
    assert "<script" not in page


def test_names_from_the_data_are_escaped() -> None:
    page = render_index(_payload(), checkpoint_sha256=None, mean_image_miou=math.nan, gallery=[])
    assert "<script" not in page and "&lt;script&gt;road&lt;/script&gt;" in page
    assert "script" not in _parse(page).tags


def test_without_a_published_figure_the_page_says_why() -> None:
    page = render_index(_payload(published_mIoU=None, difference=None, partial=True),
                        checkpoint_sha256=None, mean_image_miou=50.0, gallery=[])  # fmt: skip
    text = " ".join(_parse(page).text)
    assert "No published figure applies" in text and "(partial: interrupted)" in text
