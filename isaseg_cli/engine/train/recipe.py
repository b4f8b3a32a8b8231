"""The recipe a training command asks for: a zoo entry adapted to the user's dataset, classes,
crop, lr and ``--set`` overrides with the weights it starts from, or the run it resumes."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from isaseg_cli.data.datasets import default_data_root
from isaseg_cli.engine.train.pretrained import WeightsSource
from isaseg_cli.engine.train.state import ResumePoint, read_resume_point
from isaseg_cli.errors import InputError
from isaseg_cli.zoo.catalog import resolve_entry
from isaseg_cli.zoo.spec import WeightsSpec, ZooEntry, override, override_all

WORK_DIRS = Path("work_dirs")


@dataclass(frozen=True, kw_only=True, slots=True)
class RecipeChanges:
    """What the options change in a zoo entry's recipe or starting weights (None: nothing)."""

    dataset: str | None = None  # another dataset layout (cityscapes, ade20k, voc12aug, custom)
    classes: str | None = None  # "a,b,c": the class names, which set the class count
    num_classes: int | None = None
    crop_size: tuple[int, int] | None = None
    lr: float | None = None
    settings: tuple[str, ...] = ()  # --set KEY=VALUE, applied after the options above
    pretrained: str | None = None  # none, a backbone name, a file or a URL
    init_from: str | None = None  # a zoo model or a checkpoint file to fine-tune from

    def flags(self) -> list[str]:
        """The command-line flags of the changes given, in the order of ``--help``."""
        shown = {
            "--dataset": self.dataset,
            "--classes": self.classes,
            "--num-classes": self.num_classes,
            "--crop-size": self.crop_size,
            "--lr": self.lr,
            "--set": self.settings,
            "--pretrained": self.pretrained,
            "--from": self.init_from,
        }
        return [flag for flag, value in shown.items() if value not in (None, ())]


@dataclass(frozen=True, kw_only=True, slots=True)
class Recipe:
    """A run to start or continue, before any of its options is checked against the data."""

    entry: ZooEntry
    work_dir: Path
    data_root: Path  # the root the run reads: given, the resumed run's, else the dataset's default
    pretrained: WeightsSource | None = None
    init_from: WeightsSource | None = None
    resume: ResumePoint | None = None


def resolve_recipe(
    model: str | None,
    *,
    default_model: Callable[[], str],
    work_dir: Path | None = None,
    data_root: Path | None = None,
    changes: RecipeChanges = RecipeChanges(),
    resume: bool = False,
    overwrite: bool = False,
) -> Recipe:
    """The recipe of ``model`` with ``changes``, or (``resume``) the run in the work dir.

    Args:
        model: a zoo name or alias; None: ``default_model()`` (called only then), or with
            ``resume`` the run's own model.
        default_model: the zoo entry used when ``model`` is not given.
        work_dir: default ``work_dirs/<entry name>``.
        data_root: default the resumed run's, else the dataset's ``default_data_root``.
        changes: the recipe options; a resumed run keeps its own recipe, so it refuses them.
        resume: continue ``work_dir``'s run from its ``latest.pth`` (read here, once).
        overwrite: refused with ``resume`` (it would delete the run being continued).

    Raises:
        InputError: conflicting options, an unknown dataset, classes that disagree, a missing
            weights file, nothing to resume or a run of another model.
        SpecError, ZooLookupError: a bad ``--set`` key or value, an unknown model name.
        CheckpointError: an unreadable ``latest.pth`` or one without resume state.
    """
    if resume:
        given = changes.flags() + (["--overwrite"] if overwrite else [])
        if given:
            raise InputError(
                f"--resume continues the run's own recipe and weights, so {', '.join(given)} "
                "cannot be given with it (to change them, start a new run: "
                "--from WORK_DIR/latest.pth)"
            )
        work = work_dir or WORK_DIRS / resolve_entry(model or default_model()).name
        point = read_resume_point(work)
        if model is not None and resolve_entry(model).name != point.entry.name:
            raise InputError(f"{work} holds a run of {point.entry.name}, not of {model}")
        saved = point.settings.get("data_root")
        root = data_root or (Path(saved) if saved else default_data_root(point.entry.data.dataset))
        return Recipe(entry=point.entry, work_dir=work, data_root=root, resume=point)
    base = resolve_entry(model or default_model())
    entry = adapt_entry(base, changes)
    pretrained, init_from = starting_weights(entry, changes.pretrained, changes.init_from)
    return Recipe(
        entry=entry,
        work_dir=work_dir or WORK_DIRS / base.name,
        data_root=data_root or default_data_root(entry.data.dataset),
        pretrained=pretrained,
        init_from=init_from,
    )


def adapt_entry(base: ZooEntry, changes: RecipeChanges) -> ZooEntry:
    """``base`` with the data, class, crop and lr changes, then the ``--set`` overrides.

    An entry whose model, data or test settings changed loses its published figures, which
    no longer apply to it.
    """
    entry = with_classes(base, changes.dataset, changes.classes, changes.num_classes)
    if changes.crop_size is not None:
        data = dataclasses.replace(entry.data, crop_size=changes.crop_size)
        entry = dataclasses.replace(entry, data=data)
    if changes.lr is not None:
        entry = override(entry, "train.lr", str(changes.lr))
    entry = override_all(entry, changes.settings, example="train.lr=0.02")
    if (entry.model, entry.data, entry.test) != (base.model, base.data, base.test):
        entry = dataclasses.replace(entry, published=None)
    return entry


def with_classes(
    entry: ZooEntry, dataset: str | None, classes: str | None, num_classes: int | None
) -> ZooEntry:
    """Another dataset resets the file suffixes to its layout's; classes set the class count.

    Class names equal to the dataset's own are not stored (the dataset's are implied).
    """
    from isaseg_cli.zoo.classes import DATASETS

    data, names = entry.data, None
    if dataset is not None and dataset != data.dataset:
        if dataset not in (*DATASETS, "custom"):
            raise InputError(f"unknown dataset {dataset!r}: use {', '.join(DATASETS)} or custom")
        data = dataclasses.replace(
            data,
            dataset=dataset,
            img_suffix="",
            seg_map_suffix="",
            classes=(),
            reduce_zero_label=dataset == "ade20k",
        )
        names = DATASETS[dataset].classes if dataset in DATASETS else None
    if classes is not None:
        names = tuple(name.strip() for name in classes.split(",") if name.strip())
        if num_classes is not None and num_classes != len(names):
            raise InputError(f"--num-classes {num_classes} but --classes names {len(names)}")
    elif num_classes is not None:
        names = tuple(f"class{i}" for i in range(num_classes))
    if names is None and data.dataset == "custom" and not data.classes:
        raise InputError("a custom dataset needs --classes a,b,c or --num-classes N")
    if names is not None:
        known = DATASETS.get(data.dataset)
        data = dataclasses.replace(data, classes=() if known and known.classes == names else names)
        model = dataclasses.replace(entry.model, num_classes=len(names))
        entry = dataclasses.replace(entry, model=model)
    return dataclasses.replace(entry, data=data)


def starting_weights(
    entry: ZooEntry, pretrained: str | None, init_from: str | None
) -> tuple[WeightsSource | None, WeightsSource | None]:
    """``(pretrained, init_from)`` for ``fit``: by default the entry's ImageNet backbone.

    Raises:
        InputError: both are given, a file is missing, or a zoo model has no checkpoint.
    """
    if init_from is not None and pretrained is not None:
        raise InputError("--from and --pretrained exclude each other (--from sets every weight)")
    if init_from is not None:
        return None, weights_source(init_from, "--from", checkpoint=True)
    if pretrained is None:
        pretrained = entry.train.pretrained or "none"
    if pretrained == "none":
        return None, None
    return weights_source(pretrained, "--pretrained"), None


def weights_source(text: str, flag: str, *, checkpoint: bool = False) -> WeightsSource:
    """A local file, a URL, or a name: a zoo model (``checkpoint``) or a pretrained backbone."""
    from isaseg_cli.hub.cache import url_filename
    from isaseg_cli.hub.fetch import expected_sha256_prefix
    from isaseg_cli.zoo.catalog import load_zoo

    if "://" in text:
        return WeightsSpec(url=text, sha256=expected_sha256_prefix(url_filename(text)) or "")
    path = Path(text).expanduser()
    if path.is_file():
        return path
    if os.sep in text or path.suffix == ".pth":
        raise InputError(f"{flag}: file {text} not found")
    zoo = load_zoo()
    if not checkpoint:
        return zoo.resolve_pretrained(text)
    weights = zoo.resolve(text).weights
    if weights is None:
        raise InputError(f"{flag}: {text} has no published checkpoint")
    return weights
