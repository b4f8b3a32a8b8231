"""SGD and the iteration-based poly learning rate of mmseg 0.x.

See docs/FAITHFULNESS.md#training-schedule.
"""

from __future__ import annotations

from torch import nn
from torch.optim import SGD, Optimizer
from torch.optim.lr_scheduler import LRScheduler

from isaseg_cli.zoo.spec import TrainSpec


def build_optimizer(model: nn.Module, spec: TrainSpec) -> SGD:
    """SGD with momentum and weight decay on every parameter (BN and biases too, as mmseg).

    No parameter groups, warm-up or gradient clipping: the published recipe has none. On CUDA
    the fused implementation (one kernel for all parameters; the same update); elsewhere the
    default one.
    """
    params = list(model.parameters())
    fused = bool(params) and all(p.is_cuda for p in params)
    return SGD(
        params,
        lr=spec.lr,
        momentum=spec.momentum,
        weight_decay=spec.weight_decay,
        fused=fused or None,
    )


def poly_lr(iteration: int, max_iters: int, base_lr: float, min_lr: float, power: float) -> float:
    """mmcv's PolyLrUpdaterHook: ``(base_lr - min_lr) * (1 - i / T) ** power + min_lr``.

    ``iteration`` counts from 0, so the first iteration runs at ``base_lr`` and the last (T - 1)
    slightly above ``min_lr`` (mmseg 1.x's PolyLR divides by T - 1 instead; the published
    checkpoints used this 0.x form).
    """
    if not 0 <= iteration < max_iters:
        raise ValueError(f"iteration {iteration} is outside 0..{max_iters - 1}")
    return (base_lr - min_lr) * (1 - iteration / max_iters) ** power + min_lr


class PolyLR(LRScheduler):
    """Sets each group's lr to ``poly_lr(i, ...)`` of its initial lr; step once per iteration.

    The value is computed in closed form from the iteration (``last_epoch``), so a scheduler
    restored with ``load_state_dict`` continues exactly where it stopped.
    """

    def __init__(self, optimizer: Optimizer, max_iters: int, min_lr: float, power: float) -> None:
        if max_iters < 1:
            raise ValueError(f"max_iters must be at least 1, not {max_iters}")
        self.max_iters = max_iters
        self.min_lr = min_lr
        self.power = power
        super().__init__(optimizer)

    def get_lr(self) -> list[float]:  # type: ignore[override]
        # After the last step the iteration equals T; keep the final lr instead of raising.
        iteration = min(self.last_epoch, self.max_iters - 1)
        return [
            poly_lr(iteration, self.max_iters, base, self.min_lr, self.power)
            for base in self.base_lrs
        ]


def build_scheduler(optimizer: Optimizer, spec: TrainSpec, max_iters: int) -> PolyLR:
    """The poly schedule of ``spec`` over ``max_iters`` iterations."""
    return PolyLR(optimizer, max_iters, spec.min_lr, spec.power)
