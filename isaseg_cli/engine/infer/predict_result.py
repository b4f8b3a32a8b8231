"""What ``isaseg predict`` did, for one process or summed over the processes of a torchrun job."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass(frozen=True, slots=True)
class PredictResult:
    """What ``predict`` did.

    Attributes:
        inputs: inputs planned (skipped ones included).
        masks, overlays, probs, confidences: the files written, by kind.
        failures: (input, reason) for inputs that could not be read, decoded or segmented.
        images: segmented images and video frames (whether or not their results were written).
        skipped: inputs left out because their results existed (``skip_existing``).
        interrupted: Ctrl-C stopped the run; the files listed are complete.
        stopped: the write error that stopped the run, if one did.
        input_wait: the share of ``seconds`` the model was not computing: waiting for decoded
            images or for the writer (on a GPU, an upper bound of the time the device idled).
        ranks: the processes whose work this is (torchrun); counts are totals over them.
        per_image: per segmented image, its input, mean confidence and pixels per class.
    """

    inputs: int
    masks: tuple[Path, ...]
    overlays: tuple[Path, ...]
    probs: tuple[Path, ...]
    failures: tuple[tuple[str, str], ...]
    images: int
    seconds: float
    output_dir: Path
    overlay_dir: Path | None = None
    warnings: tuple[str, ...] = field(default=())
    skipped: int = 0
    interrupted: bool = False
    stopped: str | None = None
    input_wait: float = 0.0
    ranks: int = 1
    confidences: tuple[Path, ...] = ()
    per_image: tuple[dict[str, Any], ...] = ()

    @property
    def outputs(self) -> tuple[Path, ...]:
        return self.masks + self.overlays + self.probs + self.confidences

    @property
    def images_per_s(self) -> float:
        return self.images / self.seconds if self.seconds > 0 else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "inputs": self.inputs,
            "outputs": [str(path) for path in self.outputs],
            "masks": [str(path) for path in self.masks],
            "overlays": [str(path) for path in self.overlays],
            "probs": [str(path) for path in self.probs],
            "confidence": [str(path) for path in self.confidences],
            "per_image": list(self.per_image),
            "failures": [{"input": name, "reason": reason} for name, reason in self.failures],
            "images": self.images,
            "seconds": round(self.seconds, 4),
            "images_per_s": round(self.images_per_s, 4),
            "input_wait": round(self.input_wait, 4),
            "ranks": self.ranks,
            "output_dir": str(self.output_dir),
            "overlay_dir": None if self.overlay_dir is None else str(self.overlay_dir),
            "skipped": self.skipped,
            "interrupted": self.interrupted,
            "stopped": self.stopped,
            "warnings": list(self.warnings),
        }


def merge_results(results: Sequence[PredictResult]) -> PredictResult:
    """One result for the work of several processes: files and failures of all, counts summed,
    the time of the slowest; ``input_wait`` weighted by each process's time."""
    first = results[0]
    total_seconds = sum(result.seconds for result in results)
    return dataclasses.replace(
        first,
        inputs=sum(result.inputs for result in results),
        masks=tuple(sorted(path for result in results for path in result.masks)),
        overlays=tuple(sorted(path for result in results for path in result.overlays)),
        probs=tuple(sorted(path for result in results for path in result.probs)),
        confidences=tuple(sorted(path for result in results for path in result.confidences)),
        per_image=tuple(
            sorted((entry for r in results for entry in r.per_image), key=lambda e: e["input"])
        ),
        failures=tuple(sorted(failure for result in results for failure in result.failures)),
        images=sum(result.images for result in results),
        seconds=max(result.seconds for result in results),
        warnings=tuple(dict.fromkeys(warning for r in results for warning in r.warnings)),
        skipped=sum(result.skipped for result in results),
        interrupted=any(result.interrupted for result in results),
        stopped=next((result.stopped for result in results if result.stopped), None),
        input_wait=sum(r.input_wait * r.seconds for r in results) / total_seconds
        if total_seconds > 0
        else 0.0,
        ranks=len(results),
    )
