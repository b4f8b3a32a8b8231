"""The timing protocol: which calls are made and timed, the statistics, the profile table."""

from __future__ import annotations

import pytest
import torch

from isaseg_cli.bench.timing import Timing, environment, measure, write_profile
from isaseg_cli.errors import InputError

CPU = torch.device("cpu")


def test_measure_calls_first_warmup_and_timed_steps() -> None:
    calls = []
    events = []
    timing = measure(lambda: calls.append(1), CPU, warmup=2, iters=3, on_progress=events.append)
    assert len(calls) == 6 and len(timing.times_ms) == 3
    assert timing.first_call_s >= 0 and timing.median_ms >= 0 and timing.peak_memory_bytes > 0
    # Progress: the two warm-up calls, then each timed call with its time.
    assert [(e.completed, e.total) for e in events] == [(2, 6), (3, 6), (4, 6), (5, 6), (6, 6)]
    assert [e.info.get("ms") for e in events[2:]] == list(timing.times_ms)
    calls.clear()
    skipped = measure(lambda: calls.append(1), CPU, warmup=0, iters=1, first_call=False)
    assert len(calls) == 1 and skipped.first_call_s == 0.0


def test_measure_refuses_no_timed_calls() -> None:
    with pytest.raises(InputError, match="--iters"):
        measure(lambda: None, CPU, warmup=0, iters=0)
    with pytest.raises(InputError, match="--warmup"):
        measure(lambda: None, CPU, warmup=-1, iters=1)


def test_median_and_p90() -> None:
    timing = Timing(0.5, (5.0, 1.0, 3.0, 2.0, 4.0, 10.0, 6.0, 7.0, 8.0, 9.0), 0, "cpu")
    assert timing.median_ms == 5.5
    assert timing.p90_ms == 10.0  # the 10th of 10 sorted values
    assert Timing(0.0, (4.0,), 0, "cpu").p90_ms == 4.0


def test_environment_names_the_cpu() -> None:
    record = environment(CPU)
    assert record["device"] == "cpu" and record["cuda"] is None
    assert record["torch"] == torch.__version__ and record["cpu_threads"] >= 1
    assert record["device_name"]


def test_write_profile_writes_a_kernel_table(tmp_path) -> None:
    weight = torch.randn(32, 32)
    path = tmp_path / "deep" / "profile.txt"
    write_profile(lambda: weight @ weight, CPU, path, steps=2)
    text = path.read_text()
    assert text.startswith("2 steps, sorted by self_cpu_time_total")
    assert "aten::mm" in text
