"""SGD over all parameters and the 0.x poly schedule, including an exact resume."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from isaseg_cli.engine.train.optim import build_optimizer, build_scheduler, poly_lr
from isaseg_cli.zoo.spec import TrainSpec

SPEC = TrainSpec(lr=0.01, momentum=0.9, weight_decay=0.0005, min_lr=1e-4, power=0.9)


def lrs_over(optimizer: torch.optim.Optimizer, scheduler: object, steps: int) -> list[float]:
    """The lr each of ``steps`` iterations runs at (read before the step, as the loop does)."""
    seen = []
    for _ in range(steps):
        seen.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()  # type: ignore[attr-defined]
    return seen


def test_poly_starts_at_lr_and_ends_above_min_lr_in_the_0x_form() -> None:
    assert poly_lr(0, 10, 0.01, 1e-4, 0.9) == 0.01
    # 0.x divides by T (not T - 1 as mmseg 1.x): iteration 9 of 10 runs at 0.001346..., not 1e-4.
    assert poly_lr(9, 10, 0.01, 1e-4, 0.9) == pytest.approx(0.0013463361576762, abs=1e-15)
    assert poly_lr(5, 10, 0.01, 1e-4, 0.9) == pytest.approx((0.01 - 1e-4) * 0.5**0.9 + 1e-4)
    with pytest.raises(ValueError):
        poly_lr(10, 10, 0.01, 1e-4, 0.9)


def test_scheduler_sets_the_poly_lr_of_every_iteration() -> None:
    optimizer = build_optimizer(nn.Linear(3, 2), SPEC)
    seen = lrs_over(optimizer, build_scheduler(optimizer, SPEC, 10), 10)
    assert seen == [poly_lr(i, 10, 0.01, 1e-4, 0.9) for i in range(10)]
    assert seen[-1] == pytest.approx(0.001346336, rel=1e-6)
    assert all(a > b for a, b in zip(seen, seen[1:], strict=False))


def test_scheduler_state_resumes_exactly() -> None:
    optimizer = build_optimizer(nn.Linear(3, 2), SPEC)
    scheduler = build_scheduler(optimizer, SPEC, 20)
    lrs_over(optimizer, scheduler, 7)
    state = scheduler.state_dict()
    rest = lrs_over(optimizer, scheduler, 13)

    fresh_optimizer = build_optimizer(nn.Linear(3, 2), SPEC)
    fresh = build_scheduler(fresh_optimizer, SPEC, 20)
    fresh.load_state_dict(state)
    fresh_optimizer.param_groups[0]["lr"] = fresh.get_last_lr()[0]  # as optimizer state restores
    assert lrs_over(fresh_optimizer, fresh, 13) == rest


def test_sgd_decays_every_parameter_including_norm_and_bias() -> None:
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Conv2d(4, 2, 1))
    optimizer = build_optimizer(model, SPEC)
    (group,) = optimizer.param_groups
    assert len(group["params"]) == len(list(model.parameters()))
    assert group["momentum"] == 0.9 and group["weight_decay"] == 0.0005
    assert not group["nesterov"] and group["dampening"] == 0
