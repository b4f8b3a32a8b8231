"""The CUDA-only paths (graphed and recomputing training steps, fused convs, graphed
inference) against their eager counterparts (run on a GPU machine:
``pytest -m gpu``; skipped elsewhere)."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from isaseg_cli.engine.infer.cuda_graphs import GraphedTraining
from isaseg_cli.engine.infer.fast import FastOptions, optimize_for_inference, resolve_fast_settings
from isaseg_cli.engine.train.fast_path import resolve_training_path
from isaseg_cli.engine.train.fit import train_one_iter
from isaseg_cli.engine.train.optim import build_optimizer
from isaseg_cli.models.backbone import Bottleneck
from isaseg_cli.models.build import build_model
from tests.helpers import make_tiny_entry, tiny_model_spec

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]
CUDA = torch.device("cuda")


def _bottleneck_entry():
    entry = make_tiny_entry()
    spec = tiny_model_spec()
    spec = dataclasses.replace(spec, backbone=dataclasses.replace(spec.backbone, depth=50))
    return dataclasses.replace(entry, model=spec)


def _fast_model(entry, recompute: bool) -> torch.nn.Module:
    """The tiny bottleneck model, well conditioned: with PyTorch's random init its gradients
    are chaotic (channels-last alone moved them by 5 % on the CPU, and other kernels' rounding
    by 0.2 to 4 % on the H200), so the last BN of each block starts at 0.1, as in a trained
    network (then channels-last moves them by 1e-5 on the CPU)."""
    path = resolve_training_path(CUDA, recompute=recompute)
    assert path.execution.recompute_tail == recompute and path.channels_last
    torch.manual_seed(0)
    model = build_model(entry.model, execution=path.execution)
    model = model.to(CUDA, memory_format=torch.channels_last).train()
    with torch.no_grad():
        for block in model.modules():
            if isinstance(block, Bottleneck):
                block.bn3.weight.fill_(0.1)
    for module in model.modules():  # dropout draws would differ between the two runs
        if isinstance(module, torch.nn.Dropout2d):
            module.p = 0.0
    return model


def _batches():
    generator = torch.Generator().manual_seed(1)
    return [
        (
            torch.randn(2, 3, 64, 64, generator=generator).to(CUDA),
            torch.randint(0, 5, (2, 64, 64), generator=generator).to(CUDA),
        )
        for _ in range(2)
    ]


def _step(net, entry, images, labels, precision: str) -> tuple[float, dict]:
    """One SGD step of ``net`` (a model, or a ``GraphedTraining`` of one); the loss and the
    gradients it applied to the model (lr 0: weights stay put)."""
    model = net.model if isinstance(net, GraphedTraining) else net
    optimizer = build_optimizer(model, dataclasses.replace(entry.train, lr=0.0))
    scaler = torch.amp.GradScaler("cuda", enabled=False)
    loss = train_one_iter(net, images, labels, optimizer, scaler, entry, CUDA, precision)
    grads = {n: p.grad.detach().float().clone() for n, p in model.named_parameters()}
    return loss["total"].item(), grads


def _relative(ours: dict, theirs: dict) -> float:
    diff = sum((ours[k] - theirs[k]).pow(2).sum() for k in theirs).sqrt()
    return (diff / sum(theirs[k].pow(2).sum() for k in theirs).sqrt()).item()


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_graphed_step_equals_the_eager_step(precision: str) -> None:
    """The same fast model with and without CUDA graphs: the same losses and gradients for
    two different batches (the second replays the graph on new data), and the BatchNorm
    statistics recorded once per step, not during the graphs' warm-up runs."""
    entry = _bottleneck_entry()
    eager, model = _fast_model(entry, True), _fast_model(entry, True)
    batches = _batches()
    graphed = GraphedTraining(model, batches[0][0].clone(), precision)
    assert list(graphed.state_dict()) == ["model." + k for k in model.state_dict()]
    # The same kernels on both sides, up to cuDNN's choices (TF32 convolutions in fp32).
    tolerance = 2e-3 if precision == "fp32" else 2e-2
    for images, labels in batches:
        loss, grads = _step(graphed, entry, images, labels, precision)
        reference_loss, reference_grads = _step(eager, entry, images, labels, precision)
        assert loss == pytest.approx(reference_loss, rel=tolerance)
        assert _relative(grads, reference_grads) <= tolerance
    pairs = zip(model.named_buffers(), eager.buffers(), strict=True)
    for (name, ours), theirs in pairs:
        if name.endswith("num_batches_tracked"):
            assert ours.item() == theirs.item() == 2, name
        else:
            assert torch.allclose(ours, theirs, rtol=tolerance, atol=tolerance), name
    # Eval mode and other shapes run the eager forward.
    graphed.eval()
    with torch.no_grad():
        assert graphed(torch.randn(1, 3, 48, 80, device=CUDA))["out"].shape == (1, 5, 48, 80)


def test_recomputed_tails_give_the_same_gradients_on_the_gpu(monkeypatch) -> None:
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)  # plain float32 kernels
    entry = _bottleneck_entry()
    images, labels = _batches()[0]
    loss, grads = _step(_fast_model(entry, True), entry, images, labels, "fp32")
    reference_loss, reference_grads = _step(
        _fast_model(entry, False), entry, images, labels, "fp32"
    )
    assert loss == pytest.approx(reference_loss, rel=1e-5)
    assert _relative(grads, reference_grads) <= 1e-3


def _fast_inference(spec, model, **options) -> torch.nn.Module:
    settings = resolve_fast_settings(CUDA, FastOptions(precision="bf16", **options))
    return optimize_for_inference(model, spec, settings)


def test_every_conv_runs_fused_on_the_gpu() -> None:
    from isaseg_cli.models.fuse import ConvReLU

    torch.manual_seed(0)
    spec = _bottleneck_entry().model
    model = build_model(spec, with_aux=False).to(CUDA).eval()
    fast = _fast_inference(spec, model)
    images = torch.randn(1, 3, 96, 160, device=CUDA)
    with torch.no_grad():
        fast(images)
    fused = [m.fused for m in fast.modules() if isinstance(m, ConvReLU)]
    assert fused and all(fused), f"{sum(fused)}/{len(fused)} layers fused"


def test_graphed_inference_returns_what_the_eager_fast_path_returns() -> None:
    torch.manual_seed(0)
    spec = _bottleneck_entry().model
    model = build_model(spec, with_aux=False).to(CUDA).eval()
    graphed = _fast_inference(spec, model)
    eager = _fast_inference(spec, model, cuda_graphs=False)
    assert graphed.graphed is not None and eager.graphed is None
    generator = torch.Generator().manual_seed(3)
    shapes = [(1, 3, 96, 160)] * 4 + [(2, 3, 64, 64)] * 3  # capture at the 2nd call of each
    with torch.inference_mode():
        results = []
        for shape in shapes:
            images = torch.randn(*shape, generator=generator).to(CUDA)
            ours, theirs = graphed(images)["out"], eager(images)["out"]
            results.append(ours)
            assert torch.allclose(ours, theirs, atol=1e-3, rtol=1e-3)
    assert len(graphed.graphed.graphs) == 2
    # Each call got its own output, not a view of the graph's buffer.
    assert not torch.equal(results[2], results[3])
