"""CUDA graphs: the training forward and backward, and inference per input shape.

A training step of ISANet R-101 launches about two thousand kernels; on a fast GPU the CPU
needs longer to launch them than the GPU needs to run them (docs/PERFORMANCE.md has the
figures), so the step is bound by Python and the launch overhead. Capturing the forward and
the backward once and replaying them costs a few launches per step. The loss, the optimizer
and everything else stay eager.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import torch
from torch import Tensor, nn

from isaseg_cli.engine.device import autocast
from isaseg_cli.errors import InputError
from isaseg_cli.models.segmentor import Segmentor


def use_cuda_graphs(
    asked: bool | None, device: torch.device, *, compile: bool = False, distributed: bool = False
) -> bool:
    """Whether to replay CUDA graphs: ``asked``, or when ``None`` wherever they can run (a
    CUDA device, one process, no ``torch.compile``, which captures graphs its own way).

    Raises:
        InputError: graphs asked for where they cannot run.
    """
    possible = device.type == "cuda" and not compile and not distributed
    if asked is None:
        return possible
    if asked and not possible:
        needs = ["a CUDA device"]
        if distributed:
            needs.append("a single process")
        if compile:
            needs.append("no --compile")
        listed = needs[0] if len(needs) == 1 else f"{', '.join(needs[:-1])} and {needs[-1]}"
        raise InputError(f"CUDA graphs need {listed}")
    return asked


class GraphedTraining(nn.Module):
    """``model``'s training forward (and its backward) replayed from CUDA graphs.

    Built on ``torch.cuda.make_graphed_callables``: in training mode, images of
    ``sample_images``' shape and dtype are copied into the captured input and the graphs
    replay; in eval mode or for another shape the model's own forward runs, so validation and
    an odd-sized batch still work. ``model`` itself is not changed: train with this module,
    save and validate ``model``. Build it with the first batch, after any weights are loaded
    (the graphs read the parameters in place, so later in-place updates such as the
    optimizer's and ``load_state_dict``'s are seen). Build it under no autocast of its own;
    the forward is captured under ``autocast(precision, cache=False)``, so the caller's step
    must use the same precision.

    ``make_graphed_callables`` runs the model three times before capturing (so that cuDNN's
    autotuning and other lazy set-up stay out of the graphs); the BatchNorm statistics those
    runs record are put back, so the first real step updates them once, as it would eagerly.

    Not for distributed training (DDP's communication hooks are not captured here).

    Raises:
        ValueError: ``sample_images`` are not on a CUDA device.
    """

    def __init__(self, model: Segmentor, sample_images: Tensor, precision: str) -> None:
        super().__init__()
        if sample_images.device.type != "cuda":
            raise ValueError("CUDA graphs need a CUDA model and batch")
        self.model = model
        self.shape, self.dtype = sample_images.shape, sample_images.dtype
        buffers = list(model.buffers())
        saved = [buffer.clone() for buffer in buffers]
        # make_graphed_callables replaces the forward of the module it is given: give it a
        # wrapper of our own (kept out of the module tree, so the state dict is model's).
        capture = _Forward(model)
        with autocast(sample_images.device, precision, cache=False):
            torch.cuda.make_graphed_callables(capture, (sample_images,), num_warmup_iters=3)
        with torch.no_grad():
            for buffer, value in zip(buffers, saved, strict=True):
                buffer.copy_(value)
        self._graphed: tuple[nn.Module] = (capture,)

    def forward(self, images: Tensor) -> dict[str, Tensor]:
        if self.model.training and images.shape == self.shape and images.dtype == self.dtype:
            return self._graphed[0](images)
        return self.model(images)


class _Forward(nn.Module):
    def __init__(self, model: Segmentor) -> None:
        super().__init__()
        self.model = model

    def forward(self, images: Tensor) -> dict[str, Tensor]:
        return self.model(images)


class GraphedInference:
    """Calls ``forward`` (images -> a tensor) through a CUDA graph per input shape, once that
    shape comes back.

    Inference of a fused, bf16 ISANet on a fast GPU takes a few milliseconds, about what the
    CPU needs to launch its kernels one by one; replaying a captured graph costs one launch.
    The first call with a shape runs eagerly (it also lets cuDNN autotune and the fused-conv
    fallbacks settle); the second captures the graph (one more forward's time); later ones
    replay it. At most ``max_graphs`` shapes are captured, each with its own memory pool
    (about one eager forward's activations); other shapes keep running eagerly. The output is
    copied out of the graph's buffer, so each call returns a tensor of its own: keep it small
    (``InferenceSegmentor`` captures the low-resolution logits and resizes them outside).

    Only without autograd (``torch.no_grad`` or ``torch.inference_mode``), on CUDA inputs.
    """

    def __init__(self, forward: Callable[[Tensor], Tensor], max_graphs: int = 3):
        self.forward = forward
        self.max_graphs = max_graphs
        self.seen: set[tuple[object, ...]] = set()
        self.graphs: dict[tuple[object, ...], _Captured] = {}

    def __call__(self, images: Tensor) -> Tensor:
        if torch.is_grad_enabled() or not images.is_cuda:
            return self.forward(images)
        key = (tuple(images.shape), images.dtype, images.device, images.stride())
        captured = self.graphs.get(key)
        if captured is None:
            if key not in self.seen or len(self.graphs) >= self.max_graphs:
                self.seen.add(key)
                return self.forward(images)
            captured = self.graphs[key] = _capture(self.forward, images)
        captured.images.copy_(images)
        captured.graph.replay()
        return captured.output.clone()


class _Captured(NamedTuple):
    graph: torch.cuda.CUDAGraph
    images: Tensor
    output: Tensor


def _capture(forward: Callable[[Tensor], Tensor], images: Tensor) -> _Captured:
    static = images.clone()
    side = torch.cuda.Stream(device=images.device)
    side.wait_stream(torch.cuda.current_stream(images.device))
    with torch.cuda.stream(side):  # a warm-up on the capture stream, as PyTorch asks
        forward(static)
    torch.cuda.current_stream(images.device).wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        output = forward(static)
    return _Captured(graph, static, output)
