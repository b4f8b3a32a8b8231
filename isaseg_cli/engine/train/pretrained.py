"""Starting weights for training: mmseg's initialisation, the ImageNet backbone and a
segmentation checkpoint to fine-tune from.

See docs/FAITHFULNESS.md#pretrained-weights-and-initialisation.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from isaseg_cli.engine.checkpoint import extract_state_dict, read_checkpoint
from isaseg_cli.engine.distributed import ensure_weights_once
from isaseg_cli.engine.ranks import DistInfo
from isaseg_cli.errors import CheckpointError, DownloadError
from isaseg_cli.models.backbone import BasicBlock, Bottleneck
from isaseg_cli.models.layers import ConvModule
from isaseg_cli.models.segmentor import Segmentor
from isaseg_cli.zoo.spec import WeightsSpec

WeightsSource = Path | WeightsSpec

_CLASSIFIER = re.compile(r"(decode_head|auxiliary_head)\.conv_seg\.(weight|bias)")


@dataclass(frozen=True, slots=True)
class WeightsReport:
    """What loading starting weights did; key names are those of the model that was loaded into.

    ``missing`` leaves out ``num_batches_tracked`` counters, as mmcv does.
    """

    source: str
    loaded: int
    missing: tuple[str, ...] = ()
    unexpected: tuple[str, ...] = ()
    reinitialised: tuple[str, ...] = ()

    def summary(self) -> str:
        """One line, e.g. ``loaded 265 tensors from X; 2 unexpected: fc.weight, fc.bias``."""
        parts = [f"loaded {self.loaded} tensors from {self.source}"]
        for label, keys in (
            ("missing", self.missing),
            ("unexpected", self.unexpected),
            ("re-initialised", self.reinitialised),
        ):
            if keys:
                more = f" (+{len(keys) - 6} more)" if len(keys) > 6 else ""
                parts.append(f"{len(keys)} {label}: {', '.join(keys[:6])}{more}")
        return "; ".join(parts)

    def to_dict(self) -> dict[str, object]:
        return {
            "source": self.source,
            "loaded": self.loaded,
            "missing": list(self.missing),
            "unexpected": list(self.unexpected),
            "reinitialised": list(self.reinitialised),
        }


def initialise(
    model: Segmentor,
    *,
    pretrained: WeightsSource | None = None,
    init_from: WeightsSource | None = None,
    info: DistInfo | None = None,
    trust: bool = False,
    on_download: Callable[[int, int | None], None] | None = None,
    on_status: Callable[[str], None] | None = None,
) -> WeightsReport | None:
    """mmseg's initialisation, then the ImageNet backbone or a checkpoint to fine-tune from.

    A ``WeightsSpec`` is downloaded into the cache first (by one process per machine under
    torchrun, see ``ensure_weights_once``).
    ``trust`` allows full unpickling of a local file (only for files you trust).

    Returns:
        What was loaded, or None for random initialisation.
    """
    init_weights(model, backbone=pretrained is None)
    source = init_from if init_from is not None else pretrained
    if source is None:
        return None
    instead = "--from FILE" if init_from is not None else "--pretrained FILE or --pretrained none"
    path = _fetch(source, info or DistInfo(), on_download, on_status, instead)
    if init_from is not None:
        return load_finetune_weights(model, path, trust=trust)
    return load_pretrained_backbone(model, path, trust=trust)


def _fetch(
    source: WeightsSource,
    info: DistInfo,
    on_download: Callable[[int, int | None], None] | None,
    on_status: Callable[[str], None] | None,
    instead: str,
) -> Path:
    if isinstance(source, Path):
        return source
    try:
        return ensure_weights_once(source, info, on_download, on_status)
    except DownloadError as exc:
        raise type(exc)(f"{exc}; or start from a local file instead: {instead}") from None


def init_weights(model: Segmentor, *, backbone: bool = True) -> None:
    """mmseg's training initialisation (MCV13 weight_init; M018 resnet.py, decode_head.py).

    Heads: every ConvModule Kaiming-normal (fan_out, relu) with BN 1/0, each ``conv_seg``
    Normal(0, 0.01) with bias 0; ISA's ``value_project`` keeps PyTorch's default.
    With ``backbone`` (no pretrained file): Kaiming for every Conv2d, BN 1/0, and the last BN
    of each residual block zeroed (zero_init_residual). A pretrained backbone is left alone.
    """
    heads = [model.decode_head, model.auxiliary_head]
    for head in heads:
        if head is None:
            continue
        for module in head.modules():
            if isinstance(module, ConvModule):
                _kaiming(module.conv)
                _constant(module.bn, 1.0)
        nn.init.normal_(head.conv_seg.weight, 0.0, 0.01)
        nn.init.zeros_(head.conv_seg.bias)
    if backbone:
        for module in model.backbone.modules():
            if isinstance(module, nn.Conv2d):
                _kaiming(module)
            elif isinstance(module, nn.modules.batchnorm._BatchNorm):
                _constant(module, 1.0)
        for module in model.backbone.modules():
            if isinstance(module, Bottleneck):
                _constant(module.bn3, 0.0)
            elif isinstance(module, BasicBlock):
                _constant(module.bn2, 0.0)


def _kaiming(conv: nn.Conv2d) -> None:
    nn.init.kaiming_normal_(conv.weight, mode="fan_out", nonlinearity="relu")
    if conv.bias is not None:
        nn.init.zeros_(conv.bias)


def _constant(norm: nn.Module, value: float) -> None:
    nn.init.constant_(norm.weight, value)  # type: ignore[arg-type]
    nn.init.zeros_(norm.bias)  # type: ignore[arg-type]


def load_pretrained_backbone(model: Segmentor, path: Path, *, trust: bool = False) -> WeightsReport:
    """Loads an ImageNet ResNetV1c file into ``model.backbone``, non-strictly, as mmcv does.

    The file's keys are backbone names (``stem.0.weight``, ``layer1.0.conv1.weight``, ...); a
    leading ``module.`` is stripped and ``fc.*`` dropped. A whole segmentor checkpoint also works:
    its ``backbone.`` keys are used and the rest ignored. Tensors of another shape are not loaded
    and are reported as unexpected.

    Raises:
        CheckpointError: the file is unreadable, or not one of its tensors fits the backbone.
    """
    state = extract_state_dict(read_checkpoint(path, trust=trust), str(path))
    if any(key.startswith("backbone.") for key in state):
        state = {
            k.removeprefix("backbone."): v for k, v in state.items() if k.startswith("backbone.")
        }
    state = {k: v for k, v in state.items() if not k.startswith("fc.")}
    expected = model.backbone.state_dict()
    fitting = {k: v for k, v in state.items() if k in expected and v.shape == expected[k].shape}
    if not fitting:
        shown = ", ".join(list(state)[:3]) or "none"
        raise CheckpointError(
            f"{path}: none of its {len(state)} tensors fits the ResNetV1c backbone "
            f"(its first keys: {shown}); is it a ResNetV1c of the same depth?"
        )
    model.backbone.load_state_dict(fitting, strict=False)
    return WeightsReport(
        source=str(path),
        loaded=len(fitting),
        missing=_missing(expected, fitting),
        unexpected=tuple(k for k in state if k not in fitting),
    )


def load_finetune_weights(model: Segmentor, path: Path, *, trust: bool = False) -> WeightsReport:
    """Loads a segmentation checkpoint to fine-tune from; only the classifiers may differ.

    When the number of classes differs, ``decode_head.conv_seg`` and ``auxiliary_head.conv_seg``
    keep their fresh initialisation; a checkpoint without an auxiliary head leaves it fresh too.
    Everything else must match in name and shape.

    Raises:
        CheckpointError: unreadable, or another architecture (the message names the keys).
    """
    state = extract_state_dict(read_checkpoint(path, trust=trust), str(path))
    expected = model.state_dict()
    misshaped = [k for k, v in expected.items() if k in state and state[k].shape != v.shape]
    absent = [k for k in expected if k not in state and not k.startswith("auxiliary_head.")]
    foreign = [k for k in state if k not in expected]
    wrong = [k for k in misshaped if not _CLASSIFIER.fullmatch(k)] + absent + foreign
    if wrong:
        raise CheckpointError(
            f"{path} is another architecture than this model ({len(wrong)} keys differ, e.g. "
            f"{', '.join(wrong[:3])}); --from needs the same model with any number of classes"
        )
    fitting = {k: v for k, v in state.items() if k not in misshaped}
    model.load_state_dict(fitting, strict=False)
    return WeightsReport(
        source=str(path),
        loaded=len(fitting),
        missing=_missing(expected, fitting, skip=tuple(misshaped)),
        reinitialised=tuple(misshaped),
    )


def _missing(
    expected: dict[str, torch.Tensor], loaded: dict[str, torch.Tensor], skip: tuple[str, ...] = ()
) -> tuple[str, ...]:
    return tuple(
        k
        for k in expected
        if k not in loaded and k not in skip and not k.endswith("num_batches_tracked")
    )
