"""The recipe of `isaseg train`: a zoo entry adapted by the options, its starting weights, and the
resumed run with the options it refuses."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from isaseg_cli.engine.checkpoint import build_meta
from isaseg_cli.engine.train import state as train_state
from isaseg_cli.engine.train.recipe import (
    RecipeChanges,
    adapt_entry,
    resolve_recipe,
    starting_weights,
    weights_source,
)
from isaseg_cli.errors import CheckpointError, InputError, SpecError, ZooLookupError
from isaseg_cli.zoo.catalog import load_zoo, resolve_entry
from isaseg_cli.zoo.classes import DATASETS
from isaseg_cli.zoo.spec import WeightsSpec

CITY = "isanet_r50-d8_4xb2-80k_cityscapes-512x1024"


def never() -> str:
    raise AssertionError("the default model was asked for although a model was given")


def test_new_dataset_and_classes_set_the_class_count_and_reset_the_layout() -> None:
    base = resolve_entry(CITY)
    custom = adapt_entry(base, RecipeChanges(dataset="custom", classes=" road, sky ,,car"))
    assert custom.data.dataset == "custom" and custom.data.classes == ("road", "sky", "car")
    assert (custom.data.img_suffix, custom.data.seg_map_suffix) == ("", "")
    assert custom.model.num_classes == 3 and custom.published is None
    numbered = adapt_entry(base, RecipeChanges(dataset="custom", num_classes=2))
    assert numbered.data.classes == ("class0", "class1") and numbered.model.num_classes == 2
    ade = adapt_entry(base, RecipeChanges(dataset="ade20k"))
    assert ade.data.reduce_zero_label is True and ade.data.classes == ()  # the dataset's own
    assert ade.model.num_classes == len(DATASETS["ade20k"].classes) == 150
    same = adapt_entry(base, RecipeChanges(classes=",".join(DATASETS["cityscapes"].classes)))
    assert same.data == base.data and same.model == base.model  # the same names: not stored


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        (RecipeChanges(dataset="kitti"), "unknown dataset 'kitti'"),
        (RecipeChanges(dataset="custom"), "needs --classes a,b,c or --num-classes N"),
        (RecipeChanges(classes="a,b", num_classes=3), "--num-classes 3 but --classes names 2"),
        (RecipeChanges(settings=("train.lr",)), "--set takes KEY=VALUE, e.g. train.lr=0.02"),
    ],
)
def test_bad_recipe_options_are_input_errors(changes: RecipeChanges, message: str) -> None:
    with pytest.raises(InputError, match=message):
        adapt_entry(resolve_entry(CITY), changes)


def test_crop_lr_and_set_apply_in_order_and_only_train_changes_keep_the_figures() -> None:
    base = resolve_entry(CITY)
    changes = RecipeChanges(crop_size=(64, 96), lr=0.02, settings=("train.lr=0.03",))
    entry = adapt_entry(base, changes)
    assert entry.data.crop_size == (64, 96) and entry.train.lr == 0.03  # --set comes last
    assert entry.published is None  # the crop changed the data: the figures no longer apply
    trained = adapt_entry(base, RecipeChanges(lr=0.02, settings=("train.iters=10",)))
    assert (trained.train.lr, trained.train.iters) == (0.02, 10)
    assert trained.published == base.published is not None
    with pytest.raises(SpecError, match="lrr"):
        adapt_entry(base, RecipeChanges(settings=("train.lrr=1",)))


def test_starting_weights_default_to_the_entrys_backbone(tmp_path: Path) -> None:
    entry = resolve_entry(CITY)
    backbone = load_zoo().pretrained[entry.train.pretrained]
    assert starting_weights(entry, None, None) == (backbone, None)
    assert starting_weights(entry, "none", None) == (None, None)
    local = tmp_path / "mine.pth"
    local.write_bytes(b"weights")
    assert starting_weights(entry, str(local), None) == (local, None)
    assert starting_weights(entry, None, str(local)) == (None, local)
    assert starting_weights(entry, None, CITY) == (None, entry.weights)
    with pytest.raises(InputError, match="exclude each other"):
        starting_weights(entry, "none", str(local))


def test_weights_sources_from_urls_files_and_names(tmp_path: Path) -> None:
    url = "https://example.invalid/backbone-0123abcd.pth"
    assert weights_source(url, "--pretrained") == WeightsSpec(url=url, sha256="0123abcd")
    unhashed = weights_source("file:///tmp/plain.pth", "--pretrained")
    assert isinstance(unhashed, WeightsSpec) and unhashed.sha256 == ""
    with pytest.raises(InputError, match="--from: file missing.pth not found"):
        weights_source("missing.pth", "--from", checkpoint=True)
    with pytest.raises(ZooLookupError):
        weights_source("resnet7_v1c", "--pretrained")


def test_a_new_run_defaults_its_work_dir_and_data_root() -> None:
    recipe = resolve_recipe(None, default_model=lambda: CITY)
    assert recipe.entry == resolve_entry(CITY) and recipe.resume is None
    assert recipe.work_dir == Path("work_dirs") / CITY
    assert recipe.data_root == Path("data/cityscapes")
    assert isinstance(recipe.pretrained, WeightsSpec) and recipe.init_from is None
    named = resolve_recipe(
        "isanet_r50_cityscapes",
        default_model=never,
        work_dir=Path("w"),
        data_root=Path("d"),
        changes=RecipeChanges(pretrained="none"),
    )
    assert named.entry == resolve_entry("isanet_r50_cityscapes")
    assert (named.work_dir, named.data_root, named.pretrained) == (Path("w"), Path("d"), None)


def a_resumable_run(work: Path, data_root: str | None) -> None:
    """A ``latest.pth`` with the resume state of the R-50 Cityscapes entry (no real weights)."""
    entry = resolve_entry(CITY)
    meta = build_meta(entry, DATASETS["cityscapes"].classes, DATASETS["cityscapes"].palette)
    settings = {"data_root": data_root} if data_root else {}
    payload = {
        "meta": meta,
        "state_dict": {},
        "iter": 2,
        "optimizer": {},
        "scheduler": {},
        "rng": {},
        "run": {"seed": 0, "settings": settings},
    }
    work.mkdir()
    torch.save(payload, work / "iter_2.pth")
    (work / "latest.pth").symlink_to("iter_2.pth")


def test_resuming_reads_the_run_once_and_takes_its_data_root(tmp_path: Path) -> None:
    work = tmp_path / "run"
    a_resumable_run(work, "/data/elsewhere")
    recipe = resolve_recipe(None, default_model=never, work_dir=work, resume=True)
    assert recipe.resume is not None and recipe.resume.path == work / "latest.pth"
    assert recipe.entry == recipe.resume.entry == resolve_entry(CITY)
    assert recipe.data_root == Path("/data/elsewhere") and recipe.work_dir == work
    assert (recipe.pretrained, recipe.init_from) == (None, None)
    given = resolve_recipe(
        CITY, default_model=never, work_dir=work, data_root=Path("d"), resume=True
    )
    assert given.data_root == Path("d")
    with pytest.raises(InputError, match=f"{work} holds a run of {CITY}, not of isanet_r101"):
        resolve_recipe("isanet_r101_cityscapes", default_model=never, work_dir=work, resume=True)
    older = tmp_path / "older"
    a_resumable_run(older, None)  # from before settings were stored: the dataset's default
    assert resolve_recipe(None, default_model=never, work_dir=older, resume=True).data_root == (
        Path("data/cityscapes")
    )


def test_resuming_refuses_every_recipe_option_and_names_them_in_order(tmp_path: Path) -> None:
    changes = RecipeChanges(crop_size=(32, 32), lr=0.0, settings=("train.lr=1",), init_from="x")
    with pytest.raises(InputError) as caught:
        resolve_recipe(None, default_model=never, changes=changes, resume=True, overwrite=True)
    assert str(caught.value) == (
        "--resume continues the run's own recipe and weights, so --crop-size, --lr, --set, "
        "--from, --overwrite cannot be given with it (to change them, start a new run: "
        "--from WORK_DIR/latest.pth)"
    )
    assert RecipeChanges().flags() == []


def test_resuming_without_a_checkpoint_says_how_to_go_on(tmp_path: Path) -> None:
    with pytest.raises(InputError, match=r"nothing to resume: .* \(start without --resume\)"):
        resolve_recipe(None, default_model=never, work_dir=tmp_path, resume=True)
    (tmp_path / "log.jsonl").write_text("{}\n")
    with pytest.raises(InputError, match="stopped before its first checkpoint: .* --overwrite"):
        resolve_recipe(None, default_model=never, work_dir=tmp_path, resume=True)
    torch.save({"state_dict": {}}, tmp_path / "latest.pth")
    with pytest.raises(CheckpointError, match="no resume state"):
        resolve_recipe(None, default_model=never, work_dir=tmp_path, resume=True)


def test_the_resume_point_is_the_one_fit_reads(tmp_path: Path) -> None:
    work = tmp_path / "run"
    a_resumable_run(work, "/data/city")
    point = train_state.read_resume_point(work)
    recipe = resolve_recipe(None, default_model=never, work_dir=work, resume=True)
    assert recipe.resume is not None
    assert (recipe.resume.path, recipe.resume.entry) == (point.path, point.entry)
    assert recipe.resume.settings == point.settings == {"data_root": "/data/city"}
