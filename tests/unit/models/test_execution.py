"""Execution choices are build arguments: build_model hands them to every module, the default
is the reference path, and neither the state-dict keys nor the outputs depend on them."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from isaseg_cli.models.backbone import Bottleneck
from isaseg_cli.models.build import build_model
from isaseg_cli.models.execution import REFERENCE, ExecutionSpec
from isaseg_cli.models.heads import ISAHead, SelfAttentionBlock
from tests.helpers import tiny_model_spec

FAST = ExecutionSpec(attention="sdpa", fast_interlace=True, matmul_resize=True, recompute_tail=True)


def _bottleneck_spec():
    spec = tiny_model_spec()
    return dataclasses.replace(spec, backbone=dataclasses.replace(spec.backbone, depth=50))


def test_the_default_is_the_reference_path() -> None:
    assert ExecutionSpec() == REFERENCE
    model = build_model(_bottleneck_spec())
    assert not model.matmul_resize and not model.decode_head.fast_interlace
    assert {m.attention for m in model.modules() if isinstance(m, SelfAttentionBlock)} == {"matmul"}
    assert not any(m.recompute_tail for m in model.modules() if isinstance(m, Bottleneck))


def test_build_model_hands_every_choice_to_its_modules() -> None:
    model = build_model(_bottleneck_spec(), execution=FAST)
    assert model.matmul_resize
    heads = [m for m in model.modules() if isinstance(m, ISAHead)]
    assert len(heads) == 1 and heads[0].fast_interlace
    blocks = [m for m in model.modules() if isinstance(m, SelfAttentionBlock)]
    assert len(blocks) == 2 and all(block.attention == "sdpa" for block in blocks)
    bottlenecks = [m for m in model.modules() if isinstance(m, Bottleneck)]
    assert len(bottlenecks) == 16 and all(block.recompute_tail for block in bottlenecks)


def test_keys_and_outputs_do_not_depend_on_the_choices() -> None:
    torch.manual_seed(0)
    reference = build_model(_bottleneck_spec()).eval()
    fast = build_model(_bottleneck_spec(), execution=FAST).eval()
    assert list(fast.state_dict()) == list(reference.state_dict())
    fast.load_state_dict(reference.state_dict())
    images = torch.randn(1, 3, 45, 61)
    with torch.no_grad():
        ours, theirs = fast(images)["out"], reference(images)["out"]
    assert torch.allclose(ours, theirs, atol=1e-5)


def test_an_unknown_attention_kernel_is_refused() -> None:
    with pytest.raises(ValueError, match="attention"):
        ExecutionSpec(attention="flash")
