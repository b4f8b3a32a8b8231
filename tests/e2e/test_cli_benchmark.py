"""`isaseg benchmark` end to end on the CPU at tiny sizes: exit codes and the JSON record."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from isaseg_cli.cli import app

runner = CliRunner()
SPEED_FIELDS = {
    "kind",
    "model",
    "device",
    "device_name",
    "torch",
    "precision",
    "size",
    "batch_size",
    "settings",
    "first_call_s",
    "compile_s",
    "latency_median_ms",
    "latency_p90_ms",
    "images_per_s",
    "peak_memory_bytes",
    "peak_memory_kind",
    "flops_per_iter",
    "achieved_tflops_per_s",
}


def test_inference_benchmark_writes_json(tmp_path) -> None:
    out = tmp_path / "bench.json"
    result = runner.invoke(
        app,
        [
            "benchmark",
            "isanet_r50_voc",
            "--size",
            "32x48",
            "--device",
            "cpu",
            "--precision",
            "bf16",
            "--warmup",
            "0",
            "--iters",
            "2",
            "--check-masks",
            "--json-out",
            str(out),
        ],
    )
    assert result.exit_code == 0, result.output
    record = json.loads(out.read_text())
    assert SPEED_FIELDS <= set(record)
    assert record["kind"] == "inference" and record["size"] == [32, 48]
    assert record["settings"]["fast"] and record["settings"]["fuse_bn"]
    assert 0.0 <= record["settings"]["mask_agreement"] <= 1.0
    assert len(record["latency_all_ms"]) == 2 and record["images_per_s"] > 0
    assert record["flops_per_iter"] > 0
    assert "images/s" in result.output


# One R-50 training step on a 32x32 crop, batch 2, on the CPU.
TRAIN_ARGS = ["benchmark", "isanet_r50_voc", "--train", "--size", "32x32", "--batch-size", "2"]
TRAIN_ARGS += ["--device", "cpu", "--warmup", "0", "--iters", "1"]


def test_train_benchmark_writes_json(tmp_path) -> None:
    out = tmp_path / "train.json"
    result = runner.invoke(app, [*TRAIN_ARGS, "--json-out", str(out)])
    assert result.exit_code == 0, result.output
    record = json.loads(out.read_text())
    assert SPEED_FIELDS <= set(record)
    assert record["kind"] == "train" and record["batch_size"] == 2
    assert record["flops_per_iter"] > 0
    # CPU training is the reference path unless asked; no graphs off CUDA.
    assert record["settings"]["recompute"] is False and record["settings"]["cuda_graphs"] is False


def test_train_benchmark_recomputes_and_profiles_on_request(tmp_path) -> None:
    out, profile = tmp_path / "train.json", tmp_path / "kernels.txt"
    args = [*TRAIN_ARGS, "--recompute", "--profile", str(profile), "--json-out", str(out)]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert json.loads(out.read_text())["settings"]["recompute"] is True
    assert "aten::" in profile.read_text()  # the profiler's operator table


def test_attention_benchmark_runs_at_tiny_sizes(tmp_path) -> None:
    out = tmp_path / "attention.json"
    result = runner.invoke(
        app,
        [
            "benchmark",
            "--attention",
            "--feature-sizes",
            "8x8,12x20",
            "--device",
            "cpu",
            "--warmup",
            "0",
            "--iters",
            "1",
            "--json-out",
            str(out),
        ],
    )
    assert result.exit_code == 0, result.output
    record = json.loads(out.read_text())
    assert record["kind"] == "attention" and record["channels"] == 512
    assert [row["feature_size"] for row in record["rows"]] == [[8, 8], [12, 20]]
    for row in record["rows"]:
        assert row["isa_peak_bytes"] > 0 and row["dense_peak_bytes"] > 0
        assert row["isa_ms"] > 0 and row["dense_ms"] > 0
    assert "tensor accounting" in result.output


def test_bad_options_are_one_line_errors() -> None:
    for args, message in (
        (["--size", "12"], "HEIGHTxWIDTH"),
        (["--train", "--attention"], "pick one"),
        (["--precision", "fp16", "--device", "cpu"], "fp16 needs a GPU"),
        (["--plain", "--precision", "bf16", "--device", "cpu"], "--plain"),
        (["no_such_model"], "unknown model"),
        (["--recompute", "--device", "cpu"], "apply to --train"),
        (["--train", "--cuda-graphs", "--device", "cpu"], "CUDA graphs need a CUDA device"),
        (["--train", "--plain", "--recompute", "--device", "cpu"], "--plain"),
        (["--attention", "--profile", "p.txt"], "--profile applies"),
    ):
        result = runner.invoke(app, ["benchmark", *args])
        assert result.exit_code == 2, (args, result.output)
        assert message in result.output
