"""Dataset layouts, checks and label decoding, on synthetic datasets written in each real layout."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from isaseg_cli.data.cityscapes import convert_label_ids
from isaseg_cli.data.datasets import dataset_classes, default_data_root, list_samples, load_label
from isaseg_cli.data.image import read_image_bgr
from isaseg_cli.data.synthetic import custom_classes, write_synthetic_dataset
from isaseg_cli.errors import DatasetNotFoundError, SpecError
from isaseg_cli.zoo.spec import DataSpec

SPECS = {
    "cityscapes": DataSpec(dataset="cityscapes"),
    "ade20k": DataSpec(dataset="ade20k", reduce_zero_label=True),
    "voc12aug": DataSpec(dataset="voc12aug"),
    "custom": DataSpec(dataset="custom", img_suffix=".png", classes=custom_classes()),
}
NUM_CLASSES = {"cityscapes": 19, "ade20k": 150, "voc12aug": 21, "custom": 4}


@pytest.fixture(scope="module")
def roots(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("datasets")
    return {kind: write_synthetic_dataset(kind, base / kind, num_images=3) for kind in SPECS}


@pytest.mark.parametrize("kind", list(SPECS))
@pytest.mark.parametrize("split", ["train", "val"])
def test_each_layout_lists_pairs_whose_labels_fit_their_images(
    roots: dict[str, Path], kind: str, split: str
) -> None:
    spec = SPECS[kind]
    samples = list_samples(spec, roots[kind], split)
    expected = 6 if (kind, split) == ("voc12aug", "train") else 3  # VOC train = train + aug
    assert len(samples) == expected
    assert len({s.image_path for s in samples}) == expected
    for image_path, label_path in samples:
        label = load_label(label_path, spec.reduce_zero_label, NUM_CLASSES[kind])
        assert label.dtype == np.uint8
        assert label.shape == read_image_bgr(image_path).shape[:2]
        assert set(np.unique(label)) - {255} <= set(range(NUM_CLASSES[kind]))


def test_cityscapes_scans_cities_recursively_sorted_by_relative_path(
    roots: dict[str, Path],
) -> None:
    samples = list_samples(SPECS["cityscapes"], roots["cityscapes"], "train")
    image_dir = roots["cityscapes"] / "leftImg8bit" / "train"
    relative = [s.image_path.relative_to(image_dir).as_posix() for s in samples]
    assert relative == sorted(relative)
    assert {r.split("/")[0] for r in relative} == {"aachen", "bochum"}
    for image_path, label_path in samples:
        stem = image_path.name.removesuffix("_leftImg8bit.png")
        assert label_path == (
            roots["cityscapes"]
            / "gtFine"
            / "train"
            / image_path.parent.name
            / f"{stem}_gtFine_labelTrainIds.png"
        )


def test_ade20k_maps_split_names_to_release_folders(roots: dict[str, Path]) -> None:
    samples = list_samples(SPECS["ade20k"], roots["ade20k"], "val")
    assert all(s.image_path.parent.name == "validation" for s in samples)
    assert all(
        s.label_path.parent == roots["ade20k"] / "annotations" / "validation" for s in samples
    )


def test_voc_train_is_train_txt_with_official_labels_then_aug_txt_with_sbd_labels(
    roots: dict[str, Path],
) -> None:
    root = roots["voc12aug"]
    split_dir = root / "ImageSets" / "Segmentation"
    train = split_dir.joinpath("train.txt").read_text().split()
    aug = split_dir.joinpath("aug.txt").read_text().split()
    samples = list_samples(SPECS["voc12aug"], root, "train")
    assert samples == list_samples(SPECS["voc12aug"], root, "trainaug")
    expected = [(n, "SegmentationClass") for n in train] + [
        (n, "SegmentationClassAug") for n in aug
    ]
    assert [(s.image_path.stem, s.label_path.parent.name) for s in samples] == expected
    assert all(s.image_path.parent == root / "JPEGImages" for s in samples)


def test_voc_palette_labels_are_read_as_indices(roots: dict[str, Path]) -> None:
    sample = list_samples(SPECS["voc12aug"], roots["voc12aug"], "val")[0]
    with Image.open(sample.label_path) as image:
        assert image.mode == "P"
        colours = np.array(image.convert("RGB"))
    label = load_label(sample.label_path, num_classes=21)
    assert label.ndim == 2
    # The void border is index 255, painted (224, 224, 192) by the VOC palette.
    assert (label == 255).any()
    assert (colours[label == 255] == (224, 224, 192)).all()


def test_ade20k_reduce_zero_label(tmp_path: Path) -> None:
    raw = np.arange(256, dtype=np.uint8).reshape(16, 16)
    raw[raw > 150] = 255
    Image.fromarray(raw).save(tmp_path / "label.png")
    reduced = load_label(tmp_path / "label.png", reduce_zero_label=True, num_classes=150)
    expected = np.where((raw == 0) | (raw == 255), 255, raw.astype(int) - 1)
    np.testing.assert_array_equal(reduced, expected)
    np.testing.assert_array_equal(load_label(tmp_path / "label.png"), raw)


def test_missing_labels_are_named_and_counted(tmp_path: Path) -> None:
    root = write_synthetic_dataset("cityscapes", tmp_path / "cs", num_images=4)
    samples = list_samples(SPECS["cityscapes"], root, "val")
    for sample in (samples[1], samples[3]):
        sample.label_path.unlink()
        sample.label_path.with_name(
            sample.label_path.name.replace("labelTrainIds", "labelIds")
        ).unlink()
    with pytest.raises(DatasetNotFoundError, match="2 of 4 label files are missing") as info:
        list_samples(SPECS["cityscapes"], root, "val")
    assert str(samples[1].label_path) in str(info.value)


def test_cityscapes_without_train_ids_says_to_convert(tmp_path: Path) -> None:
    root = write_synthetic_dataset("cityscapes", tmp_path / "cs", num_images=2)
    for path in (root / "gtFine").rglob("*_labelTrainIds.png"):
        path.unlink()
    with pytest.raises(DatasetNotFoundError, match="convert"):
        list_samples(SPECS["cityscapes"], root, "train")


def test_voc_missing_image_from_split_file_is_named(tmp_path: Path) -> None:
    root = write_synthetic_dataset("voc12aug", tmp_path / "voc", num_images=2)
    with (root / "ImageSets" / "Segmentation" / "val.txt").open("a") as handle:
        handle.write("2012_999999\n")
    with pytest.raises(DatasetNotFoundError, match="1 of 3 image files") as info:
        list_samples(SPECS["voc12aug"], root, "val")
    assert str(root / "JPEGImages" / "2012_999999.jpg") in str(info.value)


def test_empty_split_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "leftImg8bit" / "val" / "aachen").mkdir(parents=True)
    (tmp_path / "gtFine" / "val").mkdir(parents=True)
    with pytest.raises(DatasetNotFoundError, match="no images found"):
        list_samples(SPECS["cityscapes"], tmp_path, "val")


@pytest.mark.parametrize(
    ("kind", "expected"),
    [
        ("cityscapes", "leftImg8bit/val"),
        ("ade20k", "images/validation"),
        ("voc12aug", "ImageSets/Segmentation/val.txt"),
        ("custom", "images/val"),
    ],
)
def test_missing_root_names_path_and_layout(tmp_path: Path, kind: str, expected: str) -> None:
    missing = tmp_path / "nowhere"
    with pytest.raises(DatasetNotFoundError) as info:
        list_samples(SPECS[kind], missing, "val")
    assert str(missing) in str(info.value) and expected in str(info.value)


def test_missing_split_folder_names_it(roots: dict[str, Path]) -> None:
    with pytest.raises(DatasetNotFoundError, match="leftImg8bit/test"):
        list_samples(SPECS["cityscapes"], roots["cityscapes"], "test")


def test_wrong_label_value_names_file_and_value(tmp_path: Path) -> None:
    label = np.zeros((8, 8), dtype=np.uint8)
    label[2, 3] = 30
    label[0, 0] = 255
    Image.fromarray(label).save(tmp_path / "bad.png")
    with pytest.raises(DatasetNotFoundError, match="holds value 30") as info:
        load_label(tmp_path / "bad.png", num_classes=19)
    assert str(tmp_path / "bad.png") in str(info.value)
    assert load_label(tmp_path / "bad.png", num_classes=31)[2, 3] == 30


def test_unreadable_or_multichannel_label_is_named(tmp_path: Path) -> None:
    (tmp_path / "broken.png").write_bytes(b"not a png")
    with pytest.raises(DatasetNotFoundError, match="broken.png"):
        load_label(tmp_path / "broken.png")
    Image.new("RGB", (4, 4)).save(tmp_path / "rgb.png")
    with pytest.raises(DatasetNotFoundError, match="rgb.png"):
        load_label(tmp_path / "rgb.png")


def test_convert_label_ids_writes_train_ids_by_lookup(tmp_path: Path) -> None:
    root = write_synthetic_dataset("cityscapes", tmp_path / "cs", num_images=2)
    originals = {p: load_label(p) for p in sorted(root.rglob("*_labelTrainIds.png"))}
    for path in originals:
        path.unlink()
    # One file also holds every possible byte, to check the table and the 255 fallback.
    all_ids = next(iter(sorted(root.rglob("*_labelIds.png"))))
    everything = np.arange(256, dtype=np.uint8).reshape(16, 16)
    Image.fromarray(everything).save(all_ids)
    progress: list[tuple[int, int]] = []

    count = convert_label_ids(root, on_progress=lambda done, total: progress.append((done, total)))

    assert count == 4 and progress[-1] == (4, 4) and len(progress) == 4
    # trainIds from the cityscapesScripts table (FAITHFULNESS.md#datasets-and-labels); all other
    # ids, 34..255, -> 255.
    table = {7: 0, 8: 1, 11: 2, 12: 3, 13: 4, 17: 5, 19: 6, 20: 7, 21: 8, 22: 9, 23: 10, 24: 11}
    table |= {25: 12, 26: 13, 27: 14, 28: 15, 31: 16, 32: 17, 33: 18}
    expected = np.array([table.get(i, 255) for i in range(256)], dtype=np.uint8).reshape(16, 16)
    converted = all_ids.with_name(all_ids.name.replace("labelIds", "labelTrainIds"))
    np.testing.assert_array_equal(load_label(converted), expected)
    for path, original in originals.items():
        if path != converted:
            np.testing.assert_array_equal(load_label(path), original)
    assert not list(root.rglob("*.tmp"))


def test_convert_label_ids_without_sources_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(DatasetNotFoundError, match="labelIds"):
        convert_label_ids(tmp_path)


def test_default_data_root_follows_env_or_data_folder(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ISASEG_DATA", raising=False)
    assert default_data_root("cityscapes") == Path("data/cityscapes")
    monkeypatch.setenv("ISASEG_DATA", "/datasets")
    assert default_data_root("cityscapes") == Path("/datasets/cityscapes")
    assert default_data_root("ade20k") == Path("/datasets/ade/ADEChallengeData2016")
    assert default_data_root("voc12aug") == Path("/datasets/VOCdevkit/VOC2012")
    with pytest.raises(DatasetNotFoundError, match="custom"):
        default_data_root("custom")


def test_classes_and_unknown_datasets() -> None:
    assert len(dataset_classes(SPECS["ade20k"])) == 150
    assert dataset_classes(SPECS["custom"]) == custom_classes()
    with pytest.raises(SpecError, match="class names"):
        dataset_classes(DataSpec(dataset="custom"))
    with pytest.raises(SpecError, match="unknown dataset"):
        list_samples(DataSpec(dataset="kitti"), Path("."), "val")


def test_custom_suffixes_come_from_the_spec(roots: dict[str, Path]) -> None:
    jpg_spec = DataSpec(dataset="custom", img_suffix=".jpg", classes=custom_classes())
    with pytest.raises(DatasetNotFoundError, match="no images found"):
        list_samples(jpg_spec, roots["custom"], "train")


def test_custom_without_a_suffix_takes_every_image_type(roots: dict[str, Path]) -> None:
    root = roots["custom"]
    png = root / "images" / "train" / "img_000.png"
    jpg = png.with_name("img_000b.jpg")
    jpg.write_bytes(png.read_bytes())  # the content does not matter for pairing
    (root / "labels" / "train" / "img_000b.png").write_bytes(
        (root / "labels" / "train" / "img_000.png").read_bytes()
    )
    spec = DataSpec(dataset="custom", classes=custom_classes())
    names = [sample.image_path.name for sample in list_samples(spec, root, "train")]
    assert names[:2] == ["img_000.png", "img_000b.jpg"] and len(set(names)) == len(names)


def test_voc_train_without_the_sbd_set_explains_aug(tmp_path: Path) -> None:
    root = write_synthetic_dataset("voc12aug", tmp_path / "voc", num_images=1)
    (root / "ImageSets" / "Segmentation" / "aug.txt").unlink()
    with pytest.raises(DatasetNotFoundError, match="aug.txt.*SBD"):
        list_samples(SPECS["voc12aug"], root, "train")
    assert len(list_samples(SPECS["voc12aug"], root, "val")) == 1


def test_labels_wider_than_8_bits_are_refused(tmp_path: Path) -> None:
    Image.fromarray(np.full((4, 4), 300, np.uint16)).save(tmp_path / "wide.png")
    with pytest.raises(DatasetNotFoundError, match="wide.png holds value 300"):
        load_label(tmp_path / "wide.png")
