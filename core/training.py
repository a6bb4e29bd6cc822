"""The one optimisation loop both Imagic stages use (embedding optimisation and model fine-tuning)."""
from __future__ import annotations

import math
from typing import Callable, Iterable

import torch


class NonFiniteLoss(FloatingPointError):
    """The loss became NaN or infinite; carries the step so the node can say where."""

    def __init__(self, step: int, value: float):
        super().__init__(f"loss became {value} at step {step + 1}")
        self.step = step
        self.value = value


def adam_loop(params: Iterable[torch.Tensor], loss_fn: Callable[[int], torch.Tensor], steps: int,
              learning_rate: float, on_step: Callable[[int, float], None] | None = None) -> list[float]:
    """Minimise ``loss_fn(step)`` over ``params`` with Adam for ``steps`` steps; returns the losses.

    The loss is read back once per step (for the progress display and the NaN check); ``on_step`` may
    raise to stop the loop (ComfyUI's Cancel does), and parameters then keep their last update.
    """
    params = [p for p in params if p.requires_grad]
    if steps < 1:
        raise ValueError(f"steps must be at least 1, got {steps}")
    if not params:
        raise ValueError("nothing to optimise: no parameter requires a gradient")
    if not (learning_rate > 0 and math.isfinite(learning_rate)):
        raise ValueError(f"learning_rate must be a positive number, got {learning_rate}")
    optimizer = torch.optim.Adam(params, lr=learning_rate)
    losses: list[float] = []
    for step in range(steps):
        loss = loss_fn(step)
        value = float(loss.detach())
        if not math.isfinite(value):
            raise NonFiniteLoss(step, value)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        losses.append(value)
        if on_step is not None:
            on_step(step, value)
    return losses
