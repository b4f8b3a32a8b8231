"""Typed, frozen descriptions of a model, its data, test and training settings (stdlib only).

A ``ZooEntry`` is complete on its own: ``model_zoo.yaml`` holds one per published checkpoint, and
checkpoints written by isaseg carry theirs in ``meta``, so any file can rebuild its model.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, TypeVar, Union

from isaseg_cli.errors import InputError, SpecError

T = TypeVar("T")

MS_FLIP_RATIOS: tuple[float, ...] = (0.5, 0.75, 1.0, 1.25, 1.5, 1.75)


@dataclass(frozen=True, kw_only=True, slots=True)
class BackboneSpec:
    """ResNetV1c (deep stem). D8 = strides (1, 2, 1, 1), dilations (1, 1, 2, 4)."""

    depth: int = 50
    stem_channels: int = 64
    base_channels: int = 64
    strides: tuple[int, ...] = (1, 2, 1, 1)
    dilations: tuple[int, ...] = (1, 1, 2, 4)
    contract_dilation: bool = True


@dataclass(frozen=True, kw_only=True, slots=True)
class HeadSpec:
    """ISA decode head (paper §3.2): ``channels`` wide, key/query ``attn_channels`` wide."""

    feature_index: int = 3
    channels: int = 512
    attn_channels: int = 256
    group_size: tuple[int, int] = (8, 8)
    dropout: float = 0.1


@dataclass(frozen=True, kw_only=True, slots=True)
class AuxHeadSpec:
    """FCN auxiliary head, used only for the training loss."""

    feature_index: int = 2
    channels: int = 256
    num_convs: int = 1
    dropout: float = 0.1
    loss_weight: float = 0.4


@dataclass(frozen=True, kw_only=True, slots=True)
class ModelSpec:
    backbone: BackboneSpec = field(default_factory=BackboneSpec)
    head: HeadSpec = field(default_factory=HeadSpec)
    aux_head: AuxHeadSpec | None = field(default_factory=AuxHeadSpec)
    num_classes: int = 19
    align_corners: bool = False


@dataclass(frozen=True, kw_only=True, slots=True)
class TestSpec:
    """The test pipeline: keep-ratio resize to ``scale`` (w, h), then whole or slide inference.

    ``ms_rule`` picks how multi-scale views are sized: ``"scale"`` multiplies the test scale by
    each ratio (mmseg 0.x, which produced the published ms+flip numbers), ``"image"`` multiplies
    the image size (mmseg 1.x).
    """

    __test__ = False  # not a pytest test class, despite its name

    mode: str = "whole"
    crop_size: tuple[int, int] | None = None
    stride: tuple[int, int] | None = None
    scale: tuple[int, int] | None = None
    ms_ratios: tuple[float, ...] = MS_FLIP_RATIOS
    ms_rule: str = "scale"

    def __post_init__(self) -> None:
        if self.mode not in ("whole", "slide"):
            raise SpecError(f"test.mode must be 'whole' or 'slide', not {self.mode!r}")
        if self.mode == "slide" and (self.crop_size is None or self.stride is None):
            raise SpecError("test.mode 'slide' needs test.crop_size and test.stride")
        if self.ms_rule not in ("scale", "image"):
            raise SpecError(f"test.ms_rule must be 'scale' or 'image', not {self.ms_rule!r}")


@dataclass(frozen=True, kw_only=True, slots=True)
class DataSpec:
    """Dataset and training augmentation; ``crop_size`` is (h, w), ``train_scale`` (w, h)."""

    dataset: str = "cityscapes"
    crop_size: tuple[int, int] = (512, 1024)
    train_scale: tuple[int, int] = (2048, 1024)
    ratio_range: tuple[float, float] = (0.5, 2.0)
    cat_max_ratio: float = 0.75
    ignore_index: int = 255
    reduce_zero_label: bool = False
    img_suffix: str = ""
    seg_map_suffix: str = ""
    classes: tuple[str, ...] = ()


@dataclass(frozen=True, kw_only=True, slots=True)
class TrainSpec:
    """The optimisation recipe. ``batch_size`` is the total over all processes."""

    iters: int = 80000
    batch_size: int = 8
    lr: float = 0.01
    momentum: float = 0.9
    weight_decay: float = 0.0005
    min_lr: float = 1e-4
    power: float = 0.9
    eval_interval: int = 8000
    checkpoint_interval: int = 8000
    workers: int = 2
    pretrained: str | None = None
    gpus: int = 4


@dataclass(frozen=True, kw_only=True, slots=True)
class WeightsSpec:
    """A published checkpoint; ``sha256`` is the hex prefix its file name carries."""

    url: str
    sha256: str
    log_url: str | None = None

    @property
    def filename(self) -> str:
        return self.url.rsplit("/", 1)[-1]


@dataclass(frozen=True, kw_only=True, slots=True)
class PublishedSpec:
    """The figures mmsegmentation published for a checkpoint (mIoU in percent)."""

    miou: float
    miou_ms_flip: float
    train_mem_gb: float
    inference_ms: float
    fps: float
    device: str = "V100"


@dataclass(frozen=True, kw_only=True, slots=True)
class ZooEntry:
    name: str
    legacy_name: str = ""
    aliases: tuple[str, ...] = ()
    model: ModelSpec = field(default_factory=ModelSpec)
    data: DataSpec = field(default_factory=DataSpec)
    test: TestSpec = field(default_factory=TestSpec)
    train: TrainSpec = field(default_factory=TrainSpec)
    weights: WeightsSpec | None = None
    published: PublishedSpec | None = None


def from_dict(cls: type[T], data: Any, path: str = "") -> T:
    """Builds dataclass ``cls`` from plain data, rejecting unknown keys and wrong types.

    Raises:
        SpecError: naming the key path (e.g. ``entry.model.head.channels``) that is wrong.
    """
    where = path or cls.__name__
    if not isinstance(data, dict):
        raise SpecError(f"{where}: expected a mapping, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(data) - names)
    if unknown:
        raise SpecError(f"{where}: unknown key {unknown[0]!r} (known: {', '.join(sorted(names))})")
    values = {name: _coerce(hints[name], data[name], f"{where}.{name}") for name in data}
    try:
        return cls(**values)
    except TypeError as exc:  # a required field is missing
        raise SpecError(f"{where}: {exc}") from None


def to_dict(obj: Any) -> Any:
    """The inverse of ``from_dict``: dataclasses to dicts, tuples to lists."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, tuple | list):
        return [to_dict(item) for item in obj]
    return obj


def override(obj: T, dotted: str, raw: str) -> T:
    """Returns ``obj`` with the field at ``dotted`` (e.g. ``train.lr``) set from the string ``raw``.

    The string is parsed for the field's type (``"0.02"``, ``"512,1024"``, ``"true"``, ``"none"``);
    nothing is evaluated.
    """
    head, _, rest = dotted.partition(".")
    if not dataclasses.is_dataclass(obj):
        raise SpecError(f"cannot set {dotted!r}: not a nested setting")
    names = {f.name for f in dataclasses.fields(obj)}
    if head not in names:
        raise SpecError(f"unknown setting {head!r} (known: {', '.join(sorted(names))})")
    current = getattr(obj, head)
    if rest:
        if current is None:
            raise SpecError(f"cannot set {dotted!r}: {head!r} is not set in this entry")
        value = override(current, rest, raw)
    else:
        hint = typing.get_type_hints(type(obj))[head]
        value = _coerce(hint, _parse_scalar_or_list(raw), head)
    return dataclasses.replace(obj, **{head: value})  # type: ignore[type-var]


def override_all(obj: T, assignments: Iterable[str], *, example: str) -> T:
    """``obj`` with each ``KEY=VALUE`` of ``assignments`` (the ``--set`` options) applied in turn.

    Raises:
        InputError: an assignment is not ``KEY=VALUE``; the message shows ``example``.
        SpecError: a key names no setting, or a value does not fit its field.
    """
    for item in assignments:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise InputError(f"--set takes KEY=VALUE, e.g. {example}, not {item!r}")
        obj = override(obj, key.strip(), value)
    return obj


def _parse_scalar_or_list(raw: str) -> Any:
    text = raw.strip()
    if text.lower() in ("none", "null"):
        return None
    if text.lower() in ("true", "false"):
        return text.lower() == "true"
    if "," in text or "x" in text.lower() and all(p.isdigit() for p in text.lower().split("x")):
        parts = text.replace("x", ",").replace("X", ",").split(",")
        return [_parse_number(p.strip()) for p in parts if p.strip()]
    return _parse_number(text)


def _parse_number(text: str) -> Any:
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def _coerce(hint: Any, value: Any, where: str) -> Any:
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in (Union, types.UnionType):
        if value is None:
            if type(None) in args:
                return None
            raise SpecError(f"{where}: must not be empty")
        inner = [a for a in args if a is not type(None)]
        return _coerce(inner[0], value, where)
    if dataclasses.is_dataclass(hint):
        return from_dict(hint, value, where)
    if origin is tuple:
        if not isinstance(value, list | tuple):
            raise SpecError(f"{where}: expected a list, got {value!r}")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_coerce(args[0], v, f"{where}[{i}]") for i, v in enumerate(value))
        if len(value) != len(args):
            raise SpecError(f"{where}: expected {len(args)} values, got {len(value)}")
        return tuple(
            _coerce(a, v, f"{where}[{i}]") for i, (a, v) in enumerate(zip(args, value, strict=True))
        )
    if hint is bool:
        if not isinstance(value, bool):
            raise SpecError(f"{where}: expected true or false, got {value!r}")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise SpecError(f"{where}: expected an integer, got {value!r}")
        return value
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise SpecError(f"{where}: expected a number, got {value!r}")
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            raise SpecError(f"{where}: expected a string, got {value!r}")
        return value
    raise SpecError(f"{where}: unsupported type {hint!r}")  # pragma: no cover - spec bug
