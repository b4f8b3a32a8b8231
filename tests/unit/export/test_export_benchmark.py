"""The backend benchmark times the backend and PyTorch in alternation, so that load from other
processes falls on both alike."""

from __future__ import annotations

import torch

from isaseg_cli.export.benchmark import _interleaved


def test_backend_and_torch_calls_alternate_and_every_timed_call_is_kept() -> None:
    calls: list[str] = []
    events = []
    backend, reference = _interleaved(
        lambda: calls.append("backend"),
        lambda: calls.append("torch"),
        torch.device("cpu"),
        warmup=2,
        iters=4,
        on_progress=events.append,
    )
    # First round: a first call and 2 warm-ups untimed, then the timed call, for each side.
    assert calls[:8] == ["backend"] * 4 + ["torch"] * 4
    assert calls[8:] == ["backend", "torch"] * 3
    assert len(backend.times_ms) == len(reference.times_ms) == 4
    assert [event.completed for event in events] == [1, 2, 3, 4]
