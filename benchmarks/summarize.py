"""Markdown tables for docs/PERFORMANCE.md from benchmark JSON.

python benchmarks/summarize.py benchmarks/results/cpu          # a folder of `--json-out` files
python benchmarks/summarize.py bench-out/gpu_benchmark.json    # the GPU suite's record list
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any


def load(path: Path) -> list[dict[str, Any]]:
    if path.is_dir():
        records = []
        for file in sorted(path.glob("*.json")):
            record = json.loads(file.read_text())
            records.append({"label": file.stem, **record})
        return records
    return json.loads(path.read_text())


def speed_table(records: list[dict[str, Any]]) -> str:
    lines = [
        "| run | kind | precision | size x batch | path | median ms | p90 ms | images/s "
        "| peak GiB | TFLOP/iter | TFLOP/s | compile s | masks = fp32 | load |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in records:
        if r.get("kind") not in ("inference", "train"):
            continue
        settings = r["settings"]
        path = "fast" if settings.get("fast") else "reference"
        if settings.get("fast"):
            names = ("fuse_bn", "fuse_relu", "channels_last", "cuda_graphs", "recompute", "compile")
            parts = [k for k in names if settings.get(k)]
            path += f" ({', '.join(parts + [settings.get('attention', '')])})"
        agreement = settings.get("mask_agreement")
        load = r.get("load_average_1m")
        lines.append(
            f"| {r['label']} | {r['kind']} | {r['precision']} | {r['size'][0]}x{r['size'][1]} x "
            f"{r['batch_size']} | {path} | {r['latency_median_ms']:.1f} | {r['latency_p90_ms']:.1f}"
            f" | {r['images_per_s']:.3g} | {r['peak_memory_bytes'] / 2**30:.2f} | "
            f"{r['flops_per_iter'] / 1e12:.3f} | {r['achieved_tflops_per_s']:.3g} | "
            f"{r['compile_s']:.1f} | {'-' if agreement is None else f'{agreement * 100:.2f} %'} | "
            f"{'-' if load is None else f'{load:.1f}'} |"
        )
    return "\n".join(lines)


def attention_table(record: dict[str, Any]) -> str:
    lines = [
        f"{record['label']}: {record['device_name']}, {record['precision']}, "
        f"{record['attention']}, {record['channels']} channels, key {record['attn_channels']}",
        "",
        "| feature | tokens | ISA ms | dense ms | time x | ISA peak MiB | dense peak MiB | "
        "memory x | ISA affinity MiB | dense affinity MiB |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in record["rows"]:
        mib = 2**20
        time_ratio = row["time_ratio"]
        lines.append(
            f"| {row['feature_size'][0]}x{row['feature_size'][1]} | {row['tokens']} | "
            f"{_num(row['isa_ms'])} | {_num(row['dense_ms'])} | "
            f"{'-' if time_ratio is None else f'{time_ratio:.2f}'} | "
            f"{row['isa_peak_bytes'] / mib:.0f} | {row['dense_peak_bytes'] / mib:.0f} | "
            f"{row['memory_ratio']:.1f} | {row['isa_affinity_bytes'] / mib:.1f} | "
            f"{row['dense_affinity_bytes'] / mib:.0f} |"
        )
    return "\n".join(lines)


def _num(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def main() -> None:
    records = load(Path(sys.argv[1]))
    print(speed_table(records))
    for record in records:
        if record.get("kind") == "attention":
            print()
            print(attention_table(record))


if __name__ == "__main__":
    main()
