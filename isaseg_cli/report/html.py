"""index.html of an eval report: plain HTML and inline CSS, images beside it, no script."""

from __future__ import annotations

import math
from html import escape
from typing import Any

from isaseg_cli import __version__

STYLE = """
body { font: 15px/1.45 system-ui, sans-serif; margin: 2em auto; max-width: 1200px; color: #1a202c;
       padding: 0 1em; }
h1 { font-size: 1.6em; margin-bottom: 0.2em; }
h2 { margin-top: 1.8em; border-bottom: 1px solid #cbd5e0; }
table { border-collapse: collapse; margin: 0.6em 0; }
th, td { border: 1px solid #cbd5e0; padding: 0.25em 0.7em; text-align: right; }
th:first-child, td:first-child { text-align: left; }
th { background: #edf2f7; }
.settings th, .settings td:last-child { text-align: left; font-family: ui-monospace, monospace; }
.plots img { max-width: 100%; height: auto; border: 1px solid #e2e8f0; }
.gallery { display: grid; grid-template-columns: repeat(4, 1fr); gap: 0.5em; margin-bottom: 1.2em; }
.gallery figure { margin: 0; }
.gallery img { width: 100%; height: auto; image-rendering: pixelated; }
figcaption { font-size: 0.85em; color: #4a5568; }
.note { background: #f7fafc; border-left: 4px solid #2b6cb0; padding: 0.5em 1em; }
"""


def render_index(
    payload: dict[str, Any],
    *,
    checkpoint_sha256: str | None,
    mean_image_miou: float,
    gallery: list[dict[str, Any]],
) -> str:
    """The page: settings, metrics beside the published figure, how mIoU is made, plots, gallery.

    Args:
        payload: ``isaseg eval``'s JSON record.
        checkpoint_sha256: the weights file's hash (None when it could not be read).
        mean_image_miou: the mean over images of each image's own mIoU, in percent.
        gallery: per worst image: ``row`` (ImageMetrics), ``name`` (the image's), ``worst`` (class
            name) and the panel paths ``image``/``label``/``prediction``/``errors``.
    """
    s = payload["settings"]
    title = f"{payload['model']} on {payload['dataset']} {s['split']}"
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>isaseg eval: {escape(title)}</title><style>{STYLE}</style></head><body>",
        f"<h1>{escape(title)}</h1>",
        f"<p>{payload['images']} images{' (partial: interrupted)' if payload['partial'] else ''}"
        f", written by isaseg {escape(__version__)}.</p>",
        "<h2>Settings</h2>",
        _settings(payload, checkpoint_sha256),
        "<h2>Metrics</h2>",
        _summary(payload),
        _how_miou(payload, mean_image_miou),
        _table(
            ["class", "IoU %", "Acc %"],
            [[r["class"], _pct(r["IoU"]), _pct(r["Acc"])] for r in payload["per_class"]],
        ),
        "<h2>Plots</h2>",
        '<div class="plots">',
        '<p><img src="per_class.png" alt="per-class IoU and accuracy, sorted"></p>',
        '<p><img src="confusion_matrix.png" alt="confusion matrix normalised by row"></p>',
        '<p>Raw pixel counts: <a href="confusion_matrix.csv">confusion_matrix.csv</a> (rows: '
        "label class, columns: predicted class; ignored pixels are not counted).</p></div>",
        f"<h2>The {len(gallery)} images with the lowest mIoU</h2>",
        '<p>Every image\'s pixel accuracy, mIoU and worst class: <a href="per_image.csv">'
        "per_image.csv</a>. Error map: dark = right, red = wrong, white = ignored.</p>",
        *(_gallery_entry(rank, entry) for rank, entry in enumerate(gallery, start=1)),
        "</body></html>",
    ]
    return "\n".join(parts) + "\n"


def _settings(payload: dict[str, Any], sha256: str | None) -> str:
    s = payload["settings"]
    test = s.get("test") or {}
    mode = str(test.get("mode", "-"))
    if mode == "slide":
        mode += f" (crop {test.get('crop_size')}, stride {test.get('stride')})"
    rows = [
        ["model", payload["model"]],
        ["checkpoint", s.get("checkpoint", "-")],
        ["checkpoint SHA-256", sha256 or "-"],
        ["data root", s["data_root"]],
        ["split", s["split"] + (f" (first {s['limit']} images)" if s.get("limit") else "")],
        ["mode", mode],
        ["multi-scale + flip", f"yes, ratios {s['ratios']}" if s.get("ms_flip") else "no"],
        ["precision", s.get("precision", "-")],
        ["device", s.get("device", "-")],
        ["isaseg version", __version__],
        ["time", f"{payload['seconds']:.1f} s"],
    ]
    return _table(["setting", "value"], rows, css="settings")


def _summary(payload: dict[str, Any]) -> str:
    published = payload["published_mIoU"]
    difference = payload["difference"]
    table = _table(
        ["aAcc %", "mIoU %", "mAcc %", "published mIoU %", "difference"],
        [
            [
                _pct(payload["aAcc"]),
                _pct(payload["mIoU"]),
                _pct(payload["mAcc"]),
                _pct(published),
                "n/a" if difference is None else f"{difference:+.2f}",
            ]
        ],
    )
    if published is None:
        table += (
            "<p>No published figure applies: mmsegmentation published them for its zoo models "
            "on the whole val split with the same protocol.</p>"
        )
    return table


def _how_miou(payload: dict[str, Any], mean_image_miou: float) -> str:
    return (
        '<p class="note">How mIoU is computed: as mmsegmentation does, one confusion matrix is '
        f"summed over all {payload['images']} images of the split and each class's IoU = "
        "TP / (TP + FP + FN) comes from it; mIoU is the mean over the classes that occur "
        f"(<b>{_pct(payload['mIoU'])} %</b>). The mean of the per-image mIoU (each image "
        "scored alone, over the classes in its label or prediction) weighs every image equally "
        "and punishes a small miss in an image that holds few classes, so it differs: "
        f"<b>{_pct(mean_image_miou)} %</b>.</p>"
    )


def _gallery_entry(rank: int, entry: dict[str, Any]) -> str:
    row = entry["row"]
    head = (
        f"<h3>{rank}. {escape(entry['name'])}: mIoU {_pct(row.miou)} %, pixel accuracy "
        f"{_pct(row.pixel_acc)} %, worst class {escape(entry['worst'])} "
        f"(IoU {_pct(row.worst_iou)} %)</h3>"
    )
    figures = "".join(
        f'<figure><img src="{escape(entry[kind])}" alt="{kind} of {escape(entry["name"])}">'
        f"<figcaption>{kind}</figcaption></figure>"
        for kind in ("image", "label", "prediction", "errors")
    )
    return f'{head}<div class="gallery">{figures}</div>'


def _table(columns: list[str], rows: list[list[Any]], css: str = "") -> str:
    head = "".join(f"<th>{escape(str(c))}</th>" for c in columns)
    body = "".join(
        "<tr>" + "".join(f"<td>{escape(str(v))}</td>" for v in row) + "</tr>" for row in rows
    )
    attribute = f' class="{css}"' if css else ""
    return f"<table{attribute}><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _pct(value: float | None) -> str:
    if value is None or math.isnan(value):
        return "n/a"
    return f"{value:.2f}"
