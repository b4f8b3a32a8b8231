"""One place that turns a ``ModelSpec`` (what the network is) and an ``ExecutionSpec`` (how it
runs) into a ``Segmentor``."""

from __future__ import annotations

import torch

from isaseg_cli.models.backbone import ResNetV1c
from isaseg_cli.models.execution import REFERENCE, ExecutionSpec
from isaseg_cli.models.heads import FCNHead, ISAHead
from isaseg_cli.models.segmentor import Segmentor
from isaseg_cli.zoo.spec import ModelSpec


def build_model(
    spec: ModelSpec,
    *,
    sync_bn: bool = False,
    with_aux: bool = True,
    execution: ExecutionSpec = REFERENCE,
) -> Segmentor:
    """Builds the segmentor described by ``spec`` with freshly initialised weights.

    Args:
        spec: architecture (backbone, heads, number of classes, align_corners).
        sync_bn: SyncBatchNorm everywhere (multi-GPU training).
        with_aux: build the auxiliary head too (needed for training and for loading a
            checkpoint strictly; inference never runs it).
        execution: kernels and memory trade-offs (default: the reference code path); they
            change neither the state-dict keys nor the function computed.

    Raises:
        ValueError: ``execution.recompute_tail`` with ``sync_bn``.
    """
    backbone_spec = spec.backbone
    backbone = ResNetV1c(
        backbone_spec.depth,
        stem_channels=backbone_spec.stem_channels,
        base_channels=backbone_spec.base_channels,
        strides=backbone_spec.strides,
        dilations=backbone_spec.dilations,
        contract_dilation=backbone_spec.contract_dilation,
        sync_bn=sync_bn,
        recompute_tail=execution.recompute_tail,
    )
    head_spec = spec.head
    head = ISAHead(
        backbone.out_channels[head_spec.feature_index],
        head_spec.channels,
        head_spec.attn_channels,
        spec.num_classes,
        group_size=head_spec.group_size,
        dropout=head_spec.dropout,
        feature_index=head_spec.feature_index,
        sync_bn=sync_bn,
        attention=execution.attention,
        fast_interlace=execution.fast_interlace,
        split_regroups=execution.split_regroups,
    )
    aux = None
    if with_aux and spec.aux_head is not None:
        aux_spec = spec.aux_head
        aux = FCNHead(
            backbone.out_channels[aux_spec.feature_index],
            aux_spec.channels,
            spec.num_classes,
            num_convs=aux_spec.num_convs,
            dropout=aux_spec.dropout,
            feature_index=aux_spec.feature_index,
            sync_bn=sync_bn,
        )
    return Segmentor(
        backbone,
        head,
        aux,
        align_corners=spec.align_corners,
        matmul_resize=execution.matmul_resize,
    )


def rebuild(model: Segmentor, spec: ModelSpec, execution: ExecutionSpec) -> Segmentor:
    """A new eval-mode network of ``spec`` run as ``execution`` says, holding a copy of
    ``model``'s weights on ``model``'s device (the auxiliary head left out)."""
    device = next(model.parameters()).device
    with torch.device("meta"):  # no initialisation: every tensor is overwritten below
        fresh = build_model(spec, with_aux=False, execution=execution)
    fresh = fresh.to_empty(device=device)
    state = {k: v for k, v in model.state_dict().items() if not k.startswith("auxiliary_head.")}
    fresh.load_state_dict(state)
    return fresh.eval()
