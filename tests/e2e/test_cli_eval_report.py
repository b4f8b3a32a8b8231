"""`isaseg eval --report DIR`: the folder's numbers against --json-out and the saved predictions,
and the page as a browser shows it (headless Chromium from Debian, where installed)."""

from __future__ import annotations

import csv
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from isaseg_cli.cli import app
from isaseg_cli.data.base import load_label
from isaseg_cli.data.synthetic import write_synthetic_dataset
from tests.helpers import TINY_CLASSES

runner = CliRunner()
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture(scope="module")
def evaluated(tiny_checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """One eval run with --report, --json-out and --save-dir on 4 synthetic images, 5 classes."""
    base = tmp_path_factory.mktemp("report")
    root = write_synthetic_dataset("custom", base / "data", num_classes=5)
    paths = {"root": root, "report": base / "report", "json": base / "eval.json"}
    paths["preds"] = base / "preds"
    result = runner.invoke(
        app,
        ["eval", "--checkpoint", str(tiny_checkpoint), "--data-root", str(root), "--device", "cpu",
         "--workers", "0", "--report", str(paths["report"]), "--json-out", str(paths["json"]),
         "--save-dir", str(paths["preds"])],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert f"report: {paths['report'] / 'index.html'}" in result.output
    return paths


def read_csv(path: Path) -> list[list[str]]:
    with open(path, newline="") as file:
        return list(csv.reader(file))


def iou_by_class(pred: np.ndarray, label: np.ndarray) -> dict[int, float]:
    """IoU in percent of each class in the label or the prediction, from pixel sets."""
    kept = label != 255
    classes = set(np.unique(label[kept])) | set(np.unique(pred[kept]))
    both = {int(c): ((pred == c) & (label == c) & kept).sum() for c in classes}
    either = {int(c): (((pred == c) | (label == c)) & kept).sum() for c in classes}
    return {c: 100 * both[c] / either[c] for c in both}


def test_confusion_csv_counts_every_kept_pixel_and_gives_the_json_miou(evaluated) -> None:
    rows = read_csv(evaluated["report"] / "confusion_matrix.csv")
    assert rows[0][1:] == list(TINY_CLASSES) and [r[0] for r in rows[1:]] == list(TINY_CLASSES)
    counts = np.array([[int(v) for v in row[1:]] for row in rows[1:]], dtype=np.float64)
    labels = [load_label(p) for p in sorted((evaluated["root"] / "labels" / "val").glob("*.png"))]
    assert counts.sum() == sum(int((label != 255).sum()) for label in labels)
    with np.errstate(invalid="ignore"):
        iou = np.diag(counts) / (counts.sum(0) + counts.sum(1) - np.diag(counts))
    payload = json.loads(evaluated["json"].read_text())
    assert round(float(np.nanmean(iou)) * 100, 2) == payload["mIoU"]
    page = (evaluated["report"] / "index.html").read_text()
    assert f"<b>{payload['mIoU']:.2f} %</b>" in page
    assert f"<td>{payload['aAcc']:.2f}</td><td>{payload['mIoU']:.2f}</td>" in page


def test_per_image_metrics_recompute_from_the_saved_predictions(evaluated) -> None:
    header, *rows = read_csv(evaluated["report"] / "per_image.csv")
    assert header == ["image", "pixels", "pixel_accuracy", "mIoU", "worst_class", "worst_IoU"]
    assert [row[0] for row in rows] == [f"images/val/img_{i:03d}.png" for i in range(4)]
    means = []
    for image, pixels, accuracy, miou, worst, worst_iou in rows:
        pred = np.array(Image.open(evaluated["preds"] / Path(image).name))
        label = load_label(evaluated["root"] / "labels" / "val" / Path(image).name)
        kept = label != 255
        assert int(pixels) == kept.sum()
        assert float(accuracy) == pytest.approx(100 * (pred == label)[kept].mean(), abs=1e-4)
        ious = iou_by_class(pred, label)
        assert float(miou) == pytest.approx(np.mean(list(ious.values())), abs=1e-4)
        in_label = {int(c): ious[int(c)] for c in np.unique(label[kept])}
        assert float(worst_iou) == pytest.approx(min(in_label.values()), abs=1e-4)
        assert in_label[TINY_CLASSES.index(worst)] == pytest.approx(float(worst_iou), abs=1e-4)
        means.append(float(miou))
    page = (evaluated["report"] / "index.html").read_text()
    assert f"<b>{np.mean(means):.2f} %</b>" in page  # the mean of per-image mIoU, stated
    worst_first = sorted(rows, key=lambda row: float(row[3]))
    shown = re.findall(r"<h3>\d+\. (\S+): mIoU ([\d.]+) %", page)
    assert shown == [(row[0], f"{float(row[3]):.2f}") for row in worst_first]


@pytest.mark.skipif(CHROMIUM is None, reason="chromium not installed (apt-get install chromium)")
def test_the_page_renders_with_every_image_in_chromium(evaluated, tmp_path: Path) -> None:
    """Chromium loads a copy of index.html with a probe script appended (the report has none)
    and one deliberately missing image, so the probe is seen to catch a broken one."""
    copy = tmp_path / "report"
    shutil.copytree(evaluated["report"], copy)
    page = (copy / "index.html").read_text()
    assert "<script" not in page
    sources = re.findall(r'<img src="([^"]+)"', page)
    assert len(sources) == 2 + 4 * 4  # two plots, four panels per gallery image
    probe = (
        '<img src="not-there.png" alt="control"><script>window.addEventListener("load", () => {'
        "const broken = [...document.images].filter(i => !(i.complete && i.naturalWidth > 0));"
        "document.body.dataset.images = document.images.length;"
        'document.body.dataset.broken = broken.map(i => i.getAttribute("src")).join(",");'
        "});</script></body>"
    )
    (copy / "probe.html").write_text(page.replace("</body>", probe))
    done = subprocess.run(
        [CHROMIUM, "--headless", "--disable-gpu", "--no-sandbox", "--allow-file-access-from-files",
         "--run-all-compositor-stages-before-draw", "--virtual-time-budget=10000", "--dump-dom",
         (copy / "probe.html").as_uri()],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    body = re.search(r"<body([^>]*)>", done.stdout)
    assert body is not None, done.stdout[:2000]
    assert f'data-images="{len(sources) + 1}"' in body.group(1)
    assert 'data-broken="not-there.png"' in body.group(1)


def test_a_missing_extra_is_one_line_before_the_evaluation(
    tiny_checkpoint: Path, evaluated, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib now fails
    target = tmp_path / "report"
    result = runner.invoke(
        app,
        ["eval", "--checkpoint", str(tiny_checkpoint), "--data-root", str(evaluated["root"]),
         "--device", "cpu", "--report", str(target)],
    )  # fmt: skip
    assert result.exit_code == 2
    assert result.output.strip().splitlines() == [
        "error: eval --report draws its plots with matplotlib: pip install 'isaseg[report]'"
    ]
    assert not target.exists()


def test_a_folder_of_other_files_is_refused_and_an_old_report_replaced(
    tiny_checkpoint: Path, evaluated, tmp_path: Path
) -> None:
    args = ["eval", "--checkpoint", str(tiny_checkpoint), "--data-root", str(evaluated["root"])]
    args += ["--device", "cpu", "--workers", "0", "--limit", "1"]
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "notes.txt").write_text("mine")
    refused = runner.invoke(app, [*args, "--report", str(busy)])
    assert refused.exit_code == 2 and "holds other files" in refused.output
    assert "Per class" not in refused.output and [p.name for p in busy.iterdir()] == ["notes.txt"]
    again = tmp_path / "again"
    shutil.copytree(evaluated["report"], again)
    replaced = runner.invoke(app, [*args, "--report", str(again)])
    assert replaced.exit_code == 0, replaced.output
    assert len(read_csv(again / "per_image.csv")) == 2  # header + the one image
    assert sorted(p.name for p in (again / "worst").iterdir())[0] == "01_errors.png"
    assert len(list((again / "worst").iterdir())) == 4
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []
