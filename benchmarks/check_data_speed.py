"""Label files per second: `isaseg check-data` against the evaluation data loader, same workers.

A synthetic Cityscapes-sized val split (1024x2048 PNG images and train-id labels) is made from a
few distinct pairs linked under COUNT names, so it costs little disk; every file is still decoded
on every read. Both sides read from the page cache (the files were just written), so this times
decoding and checking, not the disk.

    python benchmarks/check_data_speed.py --count 3000 --workers 2
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import time
from pathlib import Path

from torch.utils.data import DataLoader

from isaseg_cli.data.datasets import list_samples
from isaseg_cli.data.loader import SegmentationDataset, collate_records
from isaseg_cli.data.synthetic import write_synthetic_dataset
from isaseg_cli.engine.evaluate import _init_worker
from isaseg_cli.report.dataset_check import check_before_run, check_dataset
from isaseg_cli.zoo.classes import DATASETS
from isaseg_cli.zoo.spec import DataSpec


def make_split(root: Path, count: int, distinct: int) -> None:
    """``count`` val pairs named like Cityscapes', linked to ``distinct`` generated ones."""
    source = write_synthetic_dataset("cityscapes", root / "source", num_images=distinct,
                                     size=(1024, 2048))  # fmt: skip
    images = sorted((source / "leftImg8bit" / "val").rglob("*_leftImg8bit.png"))
    for index in range(count):
        image = images[index % len(images)]
        label = Path(str(image).replace("leftImg8bit", "gtFine", 1)).with_name(
            image.name.replace("_leftImg8bit.png", "_gtFine_labelTrainIds.png")
        )
        stem = f"bench_{index // 1000:06d}_{index % 1000:06d}"
        for src, folder, suffix in ((image, "leftImg8bit", "_leftImg8bit.png"),
                                    (label, "gtFine", "_gtFine_labelTrainIds.png")):  # fmt: skip
            target = root / folder / "val" / "bench" / f"{stem}{suffix}"
            target.parent.mkdir(parents=True, exist_ok=True)
            try:
                os.link(src, target)
            except OSError:
                shutil.copyfile(src, target)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=3000, help="labels in the split")
    parser.add_argument("--workers", type=int, default=2, help="processes for both sides")
    parser.add_argument("--distinct", type=int, default=8, help="distinct generated pairs")
    args = parser.parse_args()
    spec = DataSpec(dataset="cityscapes")
    classes = DATASETS["cityscapes"].classes
    with tempfile.TemporaryDirectory(prefix="isaseg-bench-") as folder:
        root = Path(folder)
        make_split(root, args.count, args.distinct)
        samples = list_samples(spec, root, "val")

        start = time.perf_counter()
        check_before_run(spec, root, "val")
        header_s = time.perf_counter() - start

        start = time.perf_counter()
        result = check_dataset(spec, root, ["val"], classes=classes, workers=args.workers)
        check_s = time.perf_counter() - start
        assert result.images == args.count and not result.findings

        dataset = SegmentationDataset(samples, num_classes=len(classes))
        loader = DataLoader(dataset, batch_size=1, num_workers=args.workers,
                            collate_fn=collate_records, worker_init_fn=_init_worker)  # fmt: skip
        start = time.perf_counter()
        loaded = sum(len(batch) for batch in loader)
        loader_s = time.perf_counter() - start
        assert loaded == args.count
    figures = {
        "count": args.count,
        "workers": args.workers,
        "cpus": os.cpu_count(),
        "load_avg_1min_at_end": round(os.getloadavg()[0], 2),
        "check_before_run_s": round(header_s, 2),
        "check_data_s": round(check_s, 2),
        "check_data_labels_per_s": round(args.count / check_s, 1),
        "loader_s": round(loader_s, 2),
        "loader_samples_per_s": round(args.count / loader_s, 1),
    }
    print(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
