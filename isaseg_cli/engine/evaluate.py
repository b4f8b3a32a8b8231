"""Evaluation over a dataset split: the entry's test pipeline per image, one confusion matrix for
the whole split, summed across processes under torchrun (docs/FAITHFULNESS.md#test-pipeline,
#metrics)."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import cv2
import numpy as np
import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, Dataset

from isaseg_cli.data.base import Sample
from isaseg_cli.data.image_header import DEFAULT_MAX_PIXELS
from isaseg_cli.data.loader import EvalRecord, SegmentationDataset, collate_records
from isaseg_cli.data.mask_io import save_index_png, to_cityscapes_label_ids
from isaseg_cli.engine.device import autocast, check_precision, inference_flags, set_process_flags
from isaseg_cli.engine.distributed import joined_info
from isaseg_cli.engine.failure import failure_for
from isaseg_cli.engine.infer.fast import (
    FastOptions,
    optimize_for_inference,
    recommended_window_batch,
    resolve_fast_settings,
)
from isaseg_cli.engine.infer.pipeline import infer_scores
from isaseg_cli.engine.metrics import ConfusionMatrix, MetricsResult
from isaseg_cli.engine.progress import ProgressCallback, ProgressEvent
from isaseg_cli.errors import InputError, IsasegError
from isaseg_cli.models.segmentor import Segmentor
from isaseg_cli.zoo.spec import ZooEntry

T = TypeVar("T")

SAVE_FORMATS = ("index", "labelids")
CITYSCAPES_IMG_SUFFIX = "_leftImg8bit.png"


@dataclass(frozen=True, slots=True)
class EvalResult:
    """What one evaluation measured.

    Attributes:
        metrics: IoU/Acc per class and aAcc/mIoU/mAcc over the images evaluated.
        images: images evaluated (all processes together).
        seconds: wall time of the evaluation loop on this process.
        interrupted: Ctrl-C stopped it; ``metrics`` cover the images done so far (on this
            process only when distributed, since the other processes cannot be waited for).
        saved: predictions written to ``save_dir`` (counted like ``images``).
    """

    metrics: MetricsResult
    images: int
    seconds: float
    interrupted: bool
    saved: int = 0


def check_save_format(save_format: str, entry: ZooEntry) -> None:
    """Raises InputError for an unknown format, or ``labelids`` for a non-Cityscapes model."""
    if save_format not in SAVE_FORMATS:
        raise InputError(f"unknown save format {save_format!r}: use {' or '.join(SAVE_FORMATS)}")
    if save_format == "labelids" and entry.data.dataset != "cityscapes":
        raise InputError(
            f"the labelids format is for Cityscapes models; {entry.name} predicts "
            f"{entry.data.dataset} classes (use the index format)"
        )


def shard(items: Sequence[T], rank: int, world_size: int) -> list[T]:
    """The strided part of ``items`` that process ``rank`` of ``world_size`` evaluates."""
    return list(items[rank::world_size])


def prediction_paths(
    samples: Sequence[Sample], save_dir: Path, save_format: str = "index"
) -> list[Path]:
    """Where each sample's prediction goes: its image path relative to the images' common folder,
    under ``save_dir``, as ``.png``. ``labelids`` keeps Cityscapes' ``*_leftImg8bit.png`` names,
    which cityscapesScripts matches by city, sequence and frame."""
    if not samples:
        return []
    parents = [str(sample.image_path.parent) for sample in samples]
    base = Path(os.path.commonpath(parents))
    paths = []
    for sample in samples:
        relative = sample.image_path.relative_to(base)
        if save_format == "labelids" and relative.name.endswith(CITYSCAPES_IMG_SUFFIX):
            paths.append(save_dir / relative)
        else:
            paths.append(save_dir / relative.with_suffix(".png"))
    return paths


class _Records(Dataset):
    """Eval records, or an IsasegError naming the file that could not be read (whatever the
    cause: a cv2.error or MemoryError as well): returned as a value so the main process re-raises
    it with its one-line message (DataLoader would add a worker traceback)."""

    def __init__(self, dataset: SegmentationDataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> EvalRecord | IsasegError:
        try:
            return self.dataset[index]
        except IsasegError as exc:
            return exc
        except Exception as exc:
            return InputError(failure_for(self.dataset.samples[index].image_path, exc))


def _init_worker(worker_id: int) -> None:
    # Ctrl-C is the main process's to handle: a worker killed by it mid-send blocks the loader's
    # shutdown for seconds. OpenCV's own threads would oversubscribe the cores of the workers.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    cv2.setNumThreads(0)


def evaluate(
    model: Segmentor,
    entry: ZooEntry,
    samples: Sequence[Sample],
    *,
    device: torch.device,
    ms_flip: bool = False,
    ratios: tuple[float, ...] | None = None,
    precision: str = "fp32",
    workers: int = 0,
    classes: tuple[str, ...] = (),
    save_dir: Path | None = None,
    save_format: str = "index",
    palette: Any = None,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    on_progress: ProgressCallback | None = None,
    on_image: Callable[[EvalRecord, np.ndarray], None] | None = None,
) -> EvalResult:
    """Runs the entry's test pipeline on every sample and scores the masks against the labels.

    Labels are read as mmseg does (Pillow indices; ADE20K's reduce_zero_label applied once, on
    load) and checked to hold only 0..K-1 and the ignore index. Under torchrun each process takes
    a strided shard of ``samples`` and the confusion matrices are summed, so every process returns
    the same metrics.

    Args:
        model: a Segmentor (or a DDP wrapper of one); put in eval mode here, and left in it.
        entry: gives the test pipeline, the number of classes, reduce_zero_label and ignore index.
        samples: from ``isaseg_cli.data.datasets.list_samples``.
        device: where the model is.
        ms_flip: multi-scale + flip views with averaged softmax
            (docs/FAITHFULNESS.md#multi-scale-and-flip-views).
        ratios: the ms+flip ratios (default: the entry's).
        precision: ``fp32``, ``bf16`` or ``fp16`` autocast.
        workers: DataLoader processes decoding images (0 = in this process).
        classes: class names for the result (empty: indices).
        save_dir: when given, each prediction is written there (atomically) as an index PNG with
            ``palette`` or, with ``save_format="labelids"``, as Cityscapes label ids under the
            image's own relative name, ready for cityscapesScripts.
        max_pixels: an image whose header announces more pixels is an error, never decoded.
        on_progress: gets ``ProgressEvent("eval", done, total, {"img/s", "mIoU"})`` after each
            image (process 0 only; counts are that process's shard).
        on_image: gets each record and its (H, W) predicted class indices (this process's
            shard), e.g. for per-image metrics.

    Returns:
        An EvalResult; Ctrl-C ends the loop early with ``interrupted=True``.

    Raises:
        InputError: an image cannot be read, decoded or segmented (the metrics would be wrong
            without it: the message names the file), or a bad save format or precision.
        DatasetNotFoundError: a label cannot be read, has a bad value or another size.
        OutputError: a prediction cannot be written to ``save_dir``.
    """
    check_save_format(save_format, entry)
    check_precision(precision, device)
    info = joined_info()
    rank, world_size = info.rank, info.world_size
    plain = getattr(model, "module", model).eval()
    fast = resolve_fast_settings(device, FastOptions(precision=precision))
    net = optimize_for_inference(plain, entry.model, fast)
    window_batch = recommended_window_batch(device, entry.test)
    mine = shard(samples, rank, world_size)
    targets = (
        shard(prediction_paths(samples, save_dir, save_format), rank, world_size)
        if save_dir
        else []
    )
    dataset = SegmentationDataset(
        mine,
        reduce_zero_label=entry.data.reduce_zero_label,
        num_classes=entry.model.num_classes,
        max_pixels=max_pixels,
    )
    loader = DataLoader(
        _Records(dataset),
        batch_size=1,
        num_workers=workers,
        collate_fn=collate_records,
        worker_init_fn=_init_worker,
    )
    matrix = ConfusionMatrix(entry.model.num_classes, entry.data.ignore_index, device=device)
    done, saved, interrupted = 0, 0, False
    if on_progress is not None and rank == 0:
        on_progress(ProgressEvent("eval", 0, len(mine)))
    start = time.perf_counter()
    previous = set_process_flags(inference_flags(device))  # the caller's come back at the end
    try:
        for batch in loader:
            for record in batch:
                if isinstance(record, IsasegError):
                    raise record
                try:
                    with autocast(device, precision):
                        scores = infer_scores(
                            net,
                            record.image,
                            entry.test,
                            ms_flip=ms_flip,
                            ratios=ratios,
                            device=device,
                            window_batch=window_batch,
                        )
                except Exception as exc:  # e.g. a size the pipeline cannot resize: name the file
                    raise InputError(failure_for(record.image_path, exc)) from None
                mask = scores.argmax(dim=1)[0]  # (H, W) at the label's size
                matrix.update(mask, torch.from_numpy(record.label))
                if targets:
                    _save(targets[done], mask.cpu().numpy(), save_format, palette)
                    saved += 1
                if on_image is not None:
                    on_image(record, mask.cpu().numpy())
                done += 1
                if on_progress is not None and rank == 0:
                    rate = done / max(time.perf_counter() - start, 1e-9)
                    figures = {"img/s": rate, "mIoU": matrix.compute().miou}
                    on_progress(ProgressEvent("eval", done, len(mine), figures))
    except KeyboardInterrupt:
        interrupted = True
    finally:
        set_process_flags(previous)
    seconds = time.perf_counter() - start
    images = done
    if world_size > 1 and not interrupted:
        matrix.all_reduce()
        counts = torch.tensor([done, saved], dtype=torch.int64, device=matrix.counts.device)
        dist.all_reduce(counts)
        images, saved = (int(value) for value in counts.tolist())
    return EvalResult(matrix.compute(classes), images, seconds, interrupted, saved)


def _save(path: Path, mask: np.ndarray, save_format: str, palette: Any) -> None:
    if save_format == "labelids":
        save_index_png(path, to_cityscapes_label_ids(mask))
    else:
        save_index_png(path, mask, palette)
