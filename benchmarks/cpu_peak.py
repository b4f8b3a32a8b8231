"""The CPU's practical float32 ceiling, set against an exported-network benchmark record.

The network's time is almost all convolution, so a runtime cannot beat the rate of the best
float32 matrix product this CPU sustains. This prints that rate (a 4096^3 matrix product and
R-50-D8's 3x3 convolutions at dilation 1, 2 and 4, through torch's MKL / oneDNN, the best of a
few calls), the rates the network reached on each backend in ``isaseg benchmark --backend ...
--json-out`` records, and the rate a given speed-up over the PyTorch plain path would need.

Usage: python benchmarks/cpu_peak.py [--threads 2] [--speedup 2] BENCH_JSON... [--json-out F]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F


def best_gflops(run: Callable[[], object], flops: float, calls: int = 5) -> float:
    run()  # first call: allocations, kernel selection
    best = float("inf")
    for _ in range(calls):
        start = time.perf_counter()
        run()
        best = min(best, time.perf_counter() - start)
    return flops / best / 1e9


def ceilings() -> dict[str, float]:
    a, b = torch.randn(4096, 4096), torch.randn(4096, 4096)
    rates = {"sgemm_4096": best_gflops(lambda: a @ b, 2 * 4096**3)}
    # layer3/4 of R-50-D8 at 512x1024: 64x128 maps, 3x3 convs dilated 2 and 4
    x, w = torch.randn(1, 256, 64, 128), torch.randn(256, 256, 3, 3)
    conv_flops = 2 * 256 * 256 * 9 * 64 * 128
    with torch.no_grad():
        for d in (1, 2, 4):
            rates[f"conv3x3_256ch_64x128_dilation{d}"] = best_gflops(
                lambda d=d: F.conv2d(x, w, padding=d, dilation=d), conv_flops
            )
    return rates


def cpu_name() -> str:
    cpuinfo = Path("/proc/cpuinfo")
    lines = cpuinfo.read_text().splitlines() if cpuinfo.exists() else []
    for line in lines:
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("records", nargs="*", type=Path)
    parser.add_argument("--threads", type=int, default=int(os.environ.get("OMP_NUM_THREADS", 2)))
    parser.add_argument("--speedup", type=float, default=2.0)
    parser.add_argument("--json-out", type=Path)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    rates = ceilings()
    ceiling = max(rates.values())
    print(f"{cpu_name()}, {args.threads} threads, torch {torch.__version__}")
    for name, rate in rates.items():
        print(f"  {name}: {rate:.0f} GFLOP/s")
    networks = []
    for path in args.records:
        record = json.loads(path.read_text())
        flops = record["flops_per_iter"]
        settings = record["settings"]
        backend_rate = flops / min(record["latency_all_ms"]) / 1e6
        torch_rate = flops / settings["torch_min_ms"] / 1e6
        needed = args.speedup * torch_rate
        networks.append(
            {
                "record": str(path),
                "backend": settings["backend"],
                "backend_gflops": backend_rate,
                "torch_plain_gflops": torch_rate,
                "needed_gflops": needed,
            }
        )
        print(
            f"{settings['backend']}: {backend_rate:.0f} GFLOP/s ({backend_rate / ceiling:.0%} of"
            f" the best above); PyTorch plain {torch_rate:.0f} ({torch_rate / ceiling:.0%}); "
            f"{args.speedup:g}x of PyTorch needs {needed:.0f} ({needed / ceiling:.0%})"
        )
    if args.json_out:
        args.json_out.write_text(
            json.dumps(
                {
                    "cpu": cpu_name(),
                    "threads": args.threads,
                    "torch": torch.__version__,
                    "gflops": rates,
                    "networks": networks,
                },
                indent=2,
            )
            + "\n"
        )


if __name__ == "__main__":
    main()
