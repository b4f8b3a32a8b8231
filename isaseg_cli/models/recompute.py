"""Activation recomputation that keeps BatchNorm's running statistics exact.

``torch.utils.checkpoint`` runs a function a second time during the backward pass instead of
keeping its intermediate tensors. A BatchNorm in training mode inside that function would
then update its running statistics (and ``num_batches_tracked``) twice per step, so the
recomputation here puts those buffers back as the first run left them. It must run the same
operators as the first run (the checkpoint checks that the same tensors are saved), and the
normalisation uses the batch statistics either way: the gradients, the running statistics
and the state dict are those of the plain forward.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence

from torch import Tensor
from torch.nn.modules.batchnorm import _BatchNorm
from torch.utils.checkpoint import checkpoint


@contextlib.contextmanager
def preserved_running_stats(norms: Sequence[_BatchNorm]) -> Iterator[None]:
    """Whatever the BatchNorms record inside, their buffers end as they were."""
    buffers = [
        buffer
        for norm in norms
        for buffer in (norm.running_mean, norm.running_var, norm.num_batches_tracked)
        if buffer is not None
    ]
    saved = [buffer.clone() for buffer in buffers]
    try:
        yield
    finally:
        for buffer, value in zip(buffers, saved, strict=True):
            buffer.copy_(value)


def checkpoint_with_norms(
    fn: Callable[..., Tensor], *args: Tensor, norms: Sequence[_BatchNorm]
) -> Tensor:
    """``fn(*args)``, keeping only ``args`` for the backward pass and running ``fn`` again
    there with the buffers of ``norms`` (the BatchNorms inside ``fn``) preserved.

    ``fn`` must be deterministic and draw no random numbers (the RNG state is not replayed,
    which also keeps it usable inside a CUDA graph capture).
    """
    calls = 0

    def run(*inputs: Tensor) -> Tensor:
        nonlocal calls
        calls += 1
        if calls == 1:
            return fn(*inputs)
        with preserved_running_stats(norms):
            return fn(*inputs)

    return checkpoint(run, *args, use_reentrant=False, preserve_rng_state=False)
