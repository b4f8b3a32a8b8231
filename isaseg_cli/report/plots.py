"""The report's plots, drawn with matplotlib's Agg canvas (no display, no pyplot global state)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from isaseg_cli.errors import InputError

EXTRA = "pip install 'isaseg[report]'"
# Above this many classes tick labels and cell numbers would overlap.
MAX_TICK_LABELS = 60
MAX_CELL_NUMBERS = 20


def require_matplotlib() -> None:
    """Raises InputError naming the extra when matplotlib is not installed."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise InputError(f"eval --report draws its plots with matplotlib: {EXTRA}") from None


def _figure(width: float, height: float) -> Any:
    require_matplotlib()
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height), dpi=100, layout="constrained")
    FigureCanvasAgg(figure)
    return figure


def row_normalised(counts: np.ndarray) -> np.ndarray:
    """Each row divided by its sum (the share of a class's pixels predicted as each class)."""
    totals = counts.sum(axis=1, keepdims=True)
    return np.divide(counts, totals, out=np.zeros(counts.shape), where=totals > 0)


def confusion_heatmap(counts: np.ndarray, classes: Sequence[str], path: Path) -> Path:
    """The K x K confusion matrix, normalised by row, as a PNG heat map."""
    k = len(classes)
    side = min(3.5 + 0.32 * k, 18.0)
    figure = _figure(side + 1.5, side)
    axes = figure.add_subplot()
    shares = row_normalised(counts)
    image = axes.imshow(shares, cmap="Blues", vmin=0.0, vmax=1.0, interpolation="nearest")
    figure.colorbar(image, ax=axes, shrink=0.8, label="share of the label's pixels")
    axes.set_xlabel("predicted class")
    axes.set_ylabel("label class")
    axes.set_title("Confusion matrix (rows sum to 1)")
    if k <= MAX_TICK_LABELS:
        axes.set_xticks(range(k), labels=list(classes), rotation=90, fontsize=8)
        axes.set_yticks(range(k), labels=list(classes), fontsize=8)
    else:
        axes.set_xlabel("predicted class (index, as in the per-class table)")
        axes.set_ylabel("label class (index)")
    if k <= MAX_CELL_NUMBERS:
        for row in range(k):
            for col in range(k):
                value = shares[row, col]
                if value >= 0.005:
                    colour = "white" if value > 0.5 else "black"
                    text = f"{value:.2f}"
                    axes.text(col, row, text, ha="center", va="center", fontsize=7, color=colour)
    figure.savefig(path)
    return path


def class_bars(
    iou: Sequence[float | None], acc: Sequence[float | None], classes: Sequence[str], path: Path
) -> Path:
    """Per-class IoU and accuracy as horizontal bars, best IoU at the top; absent classes last."""
    order = sorted(range(len(classes)), key=lambda c: -1.0 if iou[c] is None else iou[c])
    order.reverse()
    figure = _figure(8.0, 1.2 + 0.28 * len(classes))
    axes = figure.add_subplot()
    positions = np.arange(len(order))
    ious = [iou[c] or 0.0 for c in order]
    accs = [acc[c] or 0.0 for c in order]
    axes.barh(positions - 0.2, ious, height=0.4, label="IoU", color="#2b6cb0")
    axes.barh(positions + 0.2, accs, height=0.4, label="Acc", color="#ed8936")
    axes.set_yticks(positions, labels=[classes[c] for c in order], fontsize=8)
    axes.invert_yaxis()
    axes.set_xlim(0, 100)
    axes.set_xlabel("%")
    axes.set_title("Per-class IoU and accuracy, sorted by IoU")
    figure.legend(loc="outside lower center", ncol=2)
    figure.savefig(path)
    return path
