"""zoo.catalog: the 16 published entries agree with their names and URLs; lookups; validation."""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from isaseg_cli.errors import SpecError, ZooLookupError
from isaseg_cli.zoo.catalog import (
    load_zoo,
    parse_zoo,
    resolve_entry,
    zoo_path,
)
from isaseg_cli.zoo.classes import dataset_meta
from isaseg_cli.zoo.spec import ZooEntry

ROOT = Path(__file__).resolve().parents[3]
ZOO = load_zoo()
ENTRIES = ZOO.entries
NAME = re.compile(
    r"isanet_r(?P<depth>\d+)-d8_(?P<gpus>\d)xb(?P<per_gpu>\d)-(?P<kiters>\d+)k_"
    r"(?P<dataset>[a-z0-9]+)-(?P<h>\d+)x(?P<w>\d+)"
)
BASE = "https://download.openmmlab.com/mmsegmentation/v0.5/isanet/"


def raw_zoo() -> dict[str, Any]:
    return yaml.safe_load((ROOT / "model_zoo.yaml").read_text())


def test_the_zoo_has_the_16_published_rows_and_three_backbones() -> None:
    assert len(ENTRIES) == 16
    assert len({entry.name for entry in ENTRIES}) == 16
    assert sorted(ZOO.pretrained) == ["resnet101_v1c", "resnet18_v1c", "resnet50_v1c"]


def test_packaged_file_is_the_repository_file() -> None:
    assert zoo_path().read_text() == (ROOT / "model_zoo.yaml").read_text()


@pytest.mark.parametrize("entry", ENTRIES, ids=lambda e: e.name)
def test_name_agrees_with_the_entry(entry: ZooEntry) -> None:
    match = NAME.fullmatch(entry.name)
    assert match, entry.name
    crop = (int(match["h"]), int(match["w"]))
    assert entry.model.backbone.depth == int(match["depth"])
    assert entry.train.gpus == int(match["gpus"])
    assert entry.train.batch_size == int(match["gpus"]) * int(match["per_gpu"])
    assert entry.train.iters == int(match["kiters"]) * 1000
    assert entry.data.dataset == match["dataset"]
    assert entry.data.crop_size == crop
    depth, kiters, dataset = match["depth"], match["kiters"], match["dataset"]
    assert entry.legacy_name == f"isanet_r{depth}-d8_{crop[0]}x{crop[1]}_{kiters}k_{dataset}"


@pytest.mark.parametrize("entry", ENTRIES, ids=lambda e: e.name)
def test_urls_agree_with_the_legacy_name_and_hash(entry: ZooEntry) -> None:
    assert entry.weights is not None
    folder, _, filename = entry.weights.url.rpartition("/")
    assert folder == BASE + entry.legacy_name
    match = re.fullmatch(rf"{entry.legacy_name}_(\d{{8}}_\d{{6}})-([0-9a-f]{{8}})\.pth", filename)
    assert match, filename
    assert entry.weights.sha256 == match[2]
    assert entry.weights.log_url == f"{folder}/{entry.legacy_name}_{match[1]}.log.json"


@pytest.mark.parametrize("entry", ENTRIES, ids=lambda e: e.name)
def test_settings_follow_the_spec_rules(entry: ZooEntry) -> None:
    is_769 = entry.data.crop_size == (769, 769)
    assert entry.model.num_classes == len(dataset_meta(entry.data.dataset).classes)
    assert entry.model.align_corners is is_769
    assert entry.test.mode == ("slide" if is_769 else "whole")
    assert entry.test.scale == entry.data.train_scale
    assert entry.data.reduce_zero_label is (entry.data.dataset == "ade20k")
    assert entry.train.eval_interval == entry.train.checkpoint_interval == entry.train.iters // 10
    assert entry.train.pretrained == f"resnet{entry.model.backbone.depth}_v1c"
    assert entry.published is not None and entry.published.device == "V100"
    assert entry.published.miou < entry.published.miou_ms_flip
    # the README's fps column is 1000 / (ms per image), rounded to 2 decimals
    assert entry.published.fps == pytest.approx(1000 / entry.published.inference_ms, abs=0.006)


@pytest.mark.parametrize("entry", ENTRIES, ids=lambda e: e.name)
def test_every_name_of_an_entry_resolves_to_it(entry: ZooEntry) -> None:
    for name in (entry.name, entry.legacy_name, *entry.aliases, entry.name[:-3]):
        assert resolve_entry(name) is entry


def test_aliases_name_the_best_single_scale_row() -> None:
    aliased = [entry for entry in ENTRIES if entry.aliases]
    assert len(aliased) == 6
    for entry in aliased:
        depth, dataset = entry.model.backbone.depth, entry.data.dataset
        assert entry.aliases[0] == f"isanet_r{depth}_{dataset}"
        assert all(re.fullmatch(rf"isanet_r{depth}_[a-z0-9]+", alias) for alias in entry.aliases)
        rivals = [
            other
            for other in ENTRIES
            if (other.model.backbone.depth, other.data.dataset) == (depth, dataset)
        ]
        best = max(rivals, key=lambda other: other.published.miou)  # type: ignore[union-attr]
        assert best is entry


def test_the_issue_example_resolves_to_the_published_file() -> None:
    entry = resolve_entry("isanet_r101_cityscapes")
    assert entry.name == "isanet_r101-d8_4xb2-80k_cityscapes-769x769"
    assert entry.weights is not None
    assert entry.weights.filename == (
        "isanet_r101-d8_769x769_80k_cityscapes_20210903_111319-24f71dfa.pth"
    )
    assert resolve_entry("isanet_r50_voc").name == "isanet_r50-d8_4xb4-20k_voc12aug-512x512"


def test_ambiguous_prefix_lists_the_matches() -> None:
    with pytest.raises(ZooLookupError, match="matches 8 models: isanet_r50-d8_4xb2-40k"):
        resolve_entry("isanet_r50")


def test_unknown_name_suggests_close_ones() -> None:
    with pytest.raises(ZooLookupError, match="closest: isanet_r50_cityscapes"):
        resolve_entry("isanet_r50_citiscapes")
    with pytest.raises(ZooLookupError, match="try one of: isanet_r50_cityscapes"):
        resolve_entry("zzz")


def test_pretrained_backbones_resolve() -> None:
    weights = ZOO.resolve_pretrained("resnet101_v1c")
    assert weights.filename == "resnet101_v1c-e67eebb6.pth" and weights.sha256 == "e67eebb6"
    with pytest.raises(ZooLookupError, match="closest: resnet50_v1c"):
        ZOO.resolve_pretrained("resnet50")


def _first(data: dict[str, Any]) -> dict[str, Any]:
    return next(iter(data["models"].values()))


def _drop_align_corners(data: dict[str, Any]) -> None:
    del _first(data)["model"]["align_corners"]


def _alias_clash(data: dict[str, Any]) -> None:
    _first(data)["aliases"] = ["isanet_r101_cityscapes"]


FIRST = ENTRIES[0].name


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda d: _first(d)["model"]["head"].update(chanels=1), rf"{FIRST}\.model\.head: unknown"),
        (_drop_align_corners, rf"models\.{FIRST}\.model: missing key 'align_corners'"),
        (lambda d: _first(d)["train"].update(lr="fast"), rf"{FIRST}\.train\.lr: expected a number"),
        (lambda d: _first(d)["model"].update(num_classes=20), r"num_classes: 20 does not match"),
        (lambda d: _first(d)["data"].update(dataset="kitti"), r"data\.dataset: unknown dataset"),
        (lambda d: _first(d)["weights"].update(sha256="XYZ"), r"weights\.sha256: expected"),
        (lambda d: _first(d)["train"].update(pretrained="vgg16"), r"train\.pretrained: 'vgg16'"),
        (_alias_clash, r"'isanet_r101_cityscapes' is already used"),
        (lambda d: _first(d).update(name="x"), r"unknown key 'name'"),
        (lambda d: d.update(version=2), r"version 2 is not supported"),
        (lambda d: d.pop("pretrained"), r"missing key 'pretrained'"),
        (lambda d: d["pretrained"]["resnet50_v1c"].pop("url"), r"pretrained\.resnet50_v1c"),
    ],
)
def test_invalid_zoo_names_the_entry_and_field(mutate: Any, message: str) -> None:
    data = copy.deepcopy(raw_zoo())
    parse_zoo(data)  # the untouched file is valid
    mutate(data)
    with pytest.raises(SpecError, match=message):
        parse_zoo(data)


def test_unreadable_zoo_file_is_a_spec_error(tmp_path: Path) -> None:
    bad = tmp_path / "zoo.yaml"
    bad.write_text("models: [unclosed\n")
    with pytest.raises(SpecError, match="not valid YAML"):
        load_zoo(bad)
    with pytest.raises(SpecError, match="cannot read"):
        load_zoo(tmp_path / "missing.yaml")
