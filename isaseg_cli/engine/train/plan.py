"""What a training run will do, decided and checked before the process group, the model or any
download exists: ``plan_run`` turns ``fit``'s options into a frozen ``TrainPlan``."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from isaseg_cli.data.datasets import Sample, dataset_classes, default_data_root, list_samples
from isaseg_cli.engine.device import check_precision, resolve_device
from isaseg_cli.engine.infer.cuda_graphs import use_cuda_graphs
from isaseg_cli.engine.ranks import DistInfo
from isaseg_cli.engine.train import state as train_state
from isaseg_cli.engine.train import workdir as train_workdir
from isaseg_cli.engine.train.fast_path import TrainingPath, resolve_training_path
from isaseg_cli.engine.train.pretrained import WeightsSource
from isaseg_cli.engine.train.state import ResumePoint, RunSettings
from isaseg_cli.errors import DatasetNotFoundError, InputError, SpecError
from isaseg_cli.zoo.spec import ZooEntry

# The option that sets each field of ``TrainOverrides``, for the notes on a resumed run.
_TRAIN_FLAGS = {
    "iters": "--max-iters",
    "batch_size": "--batch-size",
    "workers": "--workers",
    "eval_interval": "--val-interval",
    "checkpoint_interval": "--checkpoint-interval",
}


@dataclass(frozen=True, kw_only=True, slots=True)
class TrainOverrides:
    """The ``train`` values given for this run; None keeps the entry's (or the resumed run's)."""

    iters: int | None = None
    batch_size: int | None = None
    workers: int | None = None
    eval_interval: int | None = None  # 0: no validation
    checkpoint_interval: int | None = None

    def given(self) -> dict[str, int]:
        """The fields that were given, by ``TrainSpec`` name."""
        return {name: value for name in _TRAIN_FLAGS if (value := getattr(self, name)) is not None}

    def apply(self, entry: ZooEntry) -> ZooEntry:
        """``entry`` with the given values in its ``train`` spec.

        Raises:
            InputError: a count below 1, or a negative number of workers or interval.
        """
        train = dataclasses.replace(entry.train, **self.given())
        for name in ("iters", "batch_size", "checkpoint_interval"):
            if getattr(train, name) < 1:
                raise InputError(f"train.{name} must be at least 1, not {getattr(train, name)}")
        if train.workers < 0 or train.eval_interval < 0:
            raise InputError("the number of workers and the validation interval cannot be negative")
        return dataclasses.replace(entry, train=train)

    def notes(self, entry: ZooEntry) -> list[str]:
        """One note for each given value that changes ``entry``'s (a resumed run's own)."""
        return [
            f"{_TRAIN_FLAGS[name]} {value} instead of the run's {getattr(entry.train, name)}"
            for name, value in self.given().items()
            if value != getattr(entry.train, name)
        ]


@dataclass(frozen=True, kw_only=True, slots=True)
class TrainPlan:
    """A checked run: everything ``fit`` needs before it joins the process group."""

    entry: ZooEntry  # the recipe with the overrides (a resumed run's own entry)
    work_dir: Path
    settings: RunSettings
    device: torch.device  # this process's device (``cuda:LOCAL_RANK`` under torchrun)
    cuda_graphs: bool
    path: TrainingPath  # the model's execution choices and memory format on ``device``
    seed: int
    info: DistInfo
    train_samples: list[Sample]
    val_samples: list[Sample]  # empty when validation is off
    resume: ResumePoint | None
    clear: bool  # delete an earlier run's files first (``overwrite`` on a new run)
    notes: tuple[str, ...]  # what the given options change in a resumed run
    pretrained: WeightsSource | None
    init_from: WeightsSource | None
    trust: bool

    @property
    def payload(self) -> dict[str, Any] | None:
        """The resumed checkpoint's contents, or None for a new run."""
        return self.resume.payload if self.resume is not None else None

    @property
    def sync_bn(self) -> bool:
        """BatchNorm statistics are shared across processes on CUDA (SyncBatchNorm)."""
        return self.info.distributed and self.device.type == "cuda"


def plan_run(
    entry: ZooEntry,
    *,
    work_dir: Path,
    info: DistInfo,
    overrides: TrainOverrides,
    given: dict[str, Any],
    seed: int | None,
    resume: bool | ResumePoint,
    overwrite: bool,
    pretrained: WeightsSource | None,
    init_from: WeightsSource | None,
    trust: bool,
) -> TrainPlan:
    """Checks ``fit``'s options in the order ``fit`` documents and settles every choice.

    ``given`` holds the ``RunSettings`` fields as passed to ``fit`` (None: not given).

    Raises:
        DatasetNotFoundError, InputError, SpecError, CheckpointError: as ``fit`` says.
    """
    point = _resume_point(entry, work_dir, resume, pretrained, init_from)
    if point is not None:
        entry = point.entry
    notes = overrides.notes(entry) if point is not None else []
    entry = overrides.apply(entry)
    spec = entry.train
    stored = point.settings if point is not None else {}
    settings, more_notes = train_state.resolve_settings(
        given, stored, default_data_root(entry.data.dataset)
    )
    notes += more_notes
    if settings.keep_checkpoints < 0:
        shown = given.get("keep_checkpoints")
        raise InputError(f"--keep-checkpoints must be 0 (keep all) or more, not {shown}")
    if pretrained is not None and init_from is not None:
        raise InputError("start from a pretrained backbone or from a checkpoint, not both")
    device = resolve_device(settings.device)
    if device.type == "cuda" and info.distributed:
        device = torch.device("cuda", info.local_rank)
    check_precision(settings.precision, device)
    cuda_graphs = use_cuda_graphs(settings.cuda_graphs, device, distributed=info.distributed)
    sync_bn = info.distributed and device.type == "cuda"
    path = resolve_training_path(device, sync_bn=sync_bn, recompute=settings.recompute)
    if spec.batch_size % info.world_size:
        raise InputError(f"batch size {spec.batch_size} does not split over {info.world_size}")
    if len(dataset_classes(entry.data)) != entry.model.num_classes:
        raise SpecError(f"{entry.name}: model.num_classes does not match the dataset's classes")
    root = Path(settings.data_root)
    train_samples = list_samples(entry.data, root, "train")
    if -(-len(train_samples) // info.world_size) < spec.batch_size // info.world_size:
        raise InputError(
            f"the train split has {len(train_samples)} images, too few for a batch of "
            f"{spec.batch_size} on {info.world_size} process(es) (--batch-size)"
        )
    val_samples = _val_samples(entry, root) if spec.eval_interval > 0 else []
    if info.is_main:
        train_workdir.check_writable(work_dir)
    if point is None:
        train_workdir.check_unused(work_dir, overwrite=overwrite)
    if seed is None:
        seed = int(point.payload["run"]["seed"]) if point is not None else 0
    return TrainPlan(
        entry=entry,
        work_dir=work_dir,
        settings=settings,
        device=device,
        cuda_graphs=cuda_graphs,
        path=path,
        seed=seed,
        info=info,
        train_samples=train_samples,
        val_samples=val_samples,
        resume=point,
        clear=overwrite and point is None,
        notes=tuple(notes),
        pretrained=pretrained,
        init_from=init_from,
        trust=trust,
    )


def _resume_point(
    entry: ZooEntry,
    work_dir: Path,
    resume: bool | ResumePoint,
    pretrained: WeightsSource | None,
    init_from: WeightsSource | None,
) -> ResumePoint | None:
    """The run to continue (read here unless given), checked against the options."""
    if isinstance(resume, ResumePoint):
        point = resume
    elif resume:
        point = train_state.read_resume_point(work_dir)
    else:
        return None
    if pretrained is not None or init_from is not None:
        raise InputError("a resumed run continues from its own weights, not new ones")
    if entry.name != point.entry.name:
        raise InputError(f"{work_dir} holds a run of {point.entry.name}, not of {entry.name}")
    return point


def _val_samples(entry: ZooEntry, data_root: Path) -> list[Sample]:
    try:
        return list_samples(entry.data, data_root, "val")
    except DatasetNotFoundError as exc:
        raise DatasetNotFoundError(f"{exc} (--val-interval 0 trains without validation)") from None
