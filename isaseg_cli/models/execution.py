"""How a model runs, chosen when it is built: kernels and memory trade-offs that keep its maths
and its state dict (keys and values) as they are."""

from __future__ import annotations

from dataclasses import dataclass

ATTENTION_KINDS = ("matmul", "sdpa")


@dataclass(frozen=True, kw_only=True, slots=True)
class ExecutionSpec:
    """The execution choices of ``build_model``; the defaults are the reference code path.

    Attributes:
        attention: ``matmul`` (mmseg's explicit matmul-softmax-matmul, bit-faithful) or
            ``sdpa`` (``F.scaled_dot_product_attention``) for both ISA relations.
        fast_interlace: keep the ISA groups token-major, channels last, from one relation to
            the next (the same maths with fewer copies; equal up to float rounding).
        split_regroups: regroup ISA's tokens in mmseg's layouts with two swaps of two axes
            per 6-d permute (bit-identical; for exported graphs: ``heads._regroup_in_two``).
        matmul_resize: while autograd records, resize the logits by matrix products
            (``models/interpolate.py``: float32 logits, a fast backward on CUDA).
        recompute_tail: each bottleneck recomputes bn2-ReLU-conv3 in the backward pass
            instead of keeping it (``models/recompute.py``; plain BatchNorm only).
    """

    attention: str = "matmul"
    fast_interlace: bool = False
    split_regroups: bool = False
    matmul_resize: bool = False
    recompute_tail: bool = False

    def __post_init__(self) -> None:
        if self.attention not in ATTENTION_KINDS:
            raise ValueError(f"attention must be one of {ATTENTION_KINDS}, not {self.attention!r}")


REFERENCE = ExecutionSpec()
