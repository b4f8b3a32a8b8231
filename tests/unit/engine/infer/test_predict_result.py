"""The totals of a torchrun predict: one result from every process's."""

from __future__ import annotations

from pathlib import Path

from isaseg_cli.engine.infer.predict_result import PredictResult, merge_results


def _result(names: list[str], failures: tuple, seconds: float, wait: float) -> PredictResult:
    return PredictResult(
        inputs=len(names) + len(failures) + 1,
        masks=tuple(Path(name) for name in names),
        overlays=(),
        probs=(),
        failures=failures,
        images=len(names),
        seconds=seconds,
        output_dir=Path("out"),
        skipped=1,
        input_wait=wait,
    )


def test_merge_sums_counts_and_takes_the_slowest_time() -> None:
    first = _result(["out/c.png", "out/a.png"], (("in/z.png", "in/z.png: broken"),), 2.0, 0.5)
    second = _result(["out/b.png"], (), 6.0, 0.1)
    merged = merge_results([first, second])
    assert merged.masks == (Path("out/a.png"), Path("out/b.png"), Path("out/c.png"))
    assert merged.inputs == 6 and merged.skipped == 2 and merged.images == 3
    assert merged.seconds == 6.0 and merged.images_per_s == 0.5 and merged.ranks == 2
    assert merged.input_wait == (0.5 * 2 + 0.1 * 6) / 8
    assert merged.failures == (("in/z.png", "in/z.png: broken"),)
    assert merged.to_dict()["ranks"] == 2 and not merged.interrupted
