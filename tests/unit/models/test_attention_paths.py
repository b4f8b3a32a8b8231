"""The opt-in fast attention paths compute what mmseg's path computes.

``attention="sdpa"`` (scaled_dot_product_attention, value wider than key) against the explicit
matmul-softmax-matmul, and ``fast_interlace`` (token-major groups, projections where the tokens lie)
against the regrouping reference, at sizes that need padding, in eval and in training mode;
``split_regroups`` (the export's two-step regrouping copies) bit for bit.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from isaseg_cli.models.heads import ISAHead, SelfAttentionBlock

SIZES = [(45, 61), (1, 1), (3, 50), (50, 3), (16, 24), (9, 8)]


def _head(dropout: float = 0.1) -> ISAHead:
    torch.manual_seed(0)
    head = ISAHead(16, 24, 8, 3, feature_index=0, dropout=dropout).eval()
    for module in head.modules():  # non-trivial BN statistics so no layer is an identity
        if isinstance(module, nn.BatchNorm2d):
            module.running_mean.uniform_(-0.5, 0.5)
            module.running_var.uniform_(0.5, 1.5)
    return head


def _configure(
    head: ISAHead, attention: str, fast_interlace: bool, split_regroups: bool = False
) -> ISAHead:
    """``head``'s weights in a head built with the given execution choices."""
    dropout = head.dropout.p if isinstance(head.dropout, nn.Dropout2d) else 0.0
    options = {
        "attention": attention,
        "fast_interlace": fast_interlace,
        "split_regroups": split_regroups,
    }
    built = ISAHead(16, 24, 8, 3, feature_index=0, dropout=dropout, **options)
    built.load_state_dict(head.state_dict())
    return built.train(head.training)


def test_defaults_are_the_reference_path() -> None:
    head = _head()
    assert head.fast_interlace is False and head.split_regroups is False
    assert head.global_relation.attention == head.local_relation.attention == "matmul"
    fast = _configure(head, "sdpa", fast_interlace=True)
    assert fast.fast_interlace is True
    assert fast.global_relation.attention == fast.local_relation.attention == "sdpa"


def test_an_unknown_attention_kernel_is_refused() -> None:
    with pytest.raises(ValueError, match="attention"):
        SelfAttentionBlock(12, 4, attention="flash")


@pytest.mark.parametrize("tokens", [1, 7, 64])
def test_sdpa_matches_matmul_with_a_wider_value(tokens: int) -> None:
    torch.manual_seed(1)
    block = SelfAttentionBlock(12, 4).eval()
    query, key = torch.randn(3, tokens, 4), torch.randn(3, tokens, 4)
    value = torch.randn(3, tokens, 12)  # value width 12 != key width 4, as 512 vs 256 in ISA
    reference = block.attend(query, key, value)
    fused = SelfAttentionBlock(12, 4, attention="sdpa").eval()
    assert torch.allclose(fused.attend(query, key, value), reference, atol=1e-6)


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("attention", ["matmul", "sdpa"])
@pytest.mark.parametrize("channels_last", [False, True])
def test_fast_paths_match_the_reference_in_eval(size, attention, channels_last) -> None:
    head = _head()
    feature = torch.randn(2, 16, *size)
    with torch.no_grad():
        reference = head([feature])
        fast = _configure(head, attention, fast_interlace=True)
        if channels_last:
            fast = fast.to(memory_format=torch.channels_last)
            feature = feature.contiguous(memory_format=torch.channels_last)
        ours = fast([feature])
        regrouped_sdpa = _configure(head, attention, fast_interlace=False)([feature])
    assert ours.shape == reference.shape
    assert torch.allclose(ours, reference, atol=1e-5)
    assert torch.allclose(regrouped_sdpa, reference, atol=1e-5)


def test_fast_interlace_matches_in_training_mode() -> None:
    """The projections' BN statistics cover the same pixels (padding included) in both layouts."""
    reference = _head(dropout=0.0).train()
    fast = _configure(reference, "sdpa", fast_interlace=True)
    feature = torch.randn(2, 16, 21, 19)
    ours, theirs = fast([feature]), reference([feature])
    assert torch.allclose(ours, theirs, atol=1e-5)
    ours.square().sum().backward()
    theirs.square().sum().backward()
    # Relative to the largest gradient: some (value_project.bias) are exactly 0 in theory (the
    # training-mode BN after them removes any constant), so they hold only rounding noise.
    scale = max(parameter.grad.abs().max().item() for parameter in reference.parameters())
    fast_params = dict(fast.named_parameters())
    for name, parameter in reference.named_parameters():
        difference = (fast_params[name].grad - parameter.grad).abs().max().item()
        assert difference <= 1e-5 * scale, name
    fast_buffers = dict(fast.named_buffers())
    for name, buffer in reference.named_buffers():
        assert torch.allclose(fast_buffers[name].float(), buffer.float(), atol=1e-5), name


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("group_size", [(8, 8), (4, 8), (8, 2)])
def test_split_regroups_are_the_reference_bit_for_bit(size, group_size) -> None:
    torch.manual_seed(0)
    reference = ISAHead(16, 24, 8, 3, feature_index=0, group_size=group_size).eval()
    split = ISAHead(16, 24, 8, 3, feature_index=0, group_size=group_size, split_regroups=True)
    split.load_state_dict(reference.state_dict())
    feature = torch.randn(2, 16, *size)
    with torch.no_grad():
        assert torch.equal(split.eval()([feature]), reference([feature]))


def test_split_regroups_train_bit_for_bit() -> None:
    """Values, gradients and BN statistics: the copies move the same numbers to the same places."""
    reference = _head(dropout=0.0).train()
    split = _configure(reference, "matmul", False, split_regroups=True)
    feature = torch.randn(2, 16, 21, 19)
    ours, theirs = split([feature]), reference([feature])
    assert torch.equal(ours, theirs)
    ours.square().sum().backward()
    theirs.square().sum().backward()
    split_params = dict(split.named_parameters())
    for name, parameter in reference.named_parameters():
        assert torch.equal(split_params[name].grad, parameter.grad), name
    split_buffers = dict(split.named_buffers())
    for name, buffer in reference.named_buffers():
        assert torch.equal(split_buffers[name], buffer), name


def test_state_dict_keys_do_not_depend_on_the_path() -> None:
    head = _head()
    fast = _configure(head, "sdpa", fast_interlace=True)
    assert list(fast.state_dict()) == list(head.state_dict())
