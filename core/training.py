"""The one optimisation loop both Imagic stages use (embedding optimisation and model fine-tuning)."""
from __future__ import annotations

import math
from collections.abc import Callable, Iterable

import torch


class NonFiniteLoss(FloatingPointError):
    """The loss became NaN or infinite; carries the step so the node can say where."""

    def __init__(self, step: int, value: float):
        super().__init__(f"loss became {value} at step {step + 1}")
        self.step = step
        self.value = value


def adam(params: list[torch.Tensor], learning_rate: float) -> torch.optim.Adam:
    """Adam, with the fused kernel where the parameters' device has one (one pass over the weights instead
    of one per Adam operation: ~8x faster on a CPU for a 860M-parameter UNet)."""
    try:
        return torch.optim.Adam(params, lr=learning_rate, fused=True)
    except (RuntimeError, ValueError):  # a device or dtype without a fused Adam
        return torch.optim.Adam(params, lr=learning_rate)


def adam_loop(params: Iterable[torch.Tensor], loss_fn: Callable[[int], torch.Tensor], steps: int,
              learning_rate: float, on_step: Callable[[int, float], None] | None = None) -> list[float]:
    """Minimise ``loss_fn(step)`` over ``params`` with Adam for ``steps`` steps; returns the losses.

    The loss is read back once per step (for the progress display and the NaN check), the loop's only
    host-device synchronisation; ``on_step`` may raise to stop the loop (ComfyUI's Cancel does), and
    parameters then keep their last update.
    """
    params = [p for p in params if p.requires_grad]
    if steps < 1:
        raise ValueError(f"steps must be at least 1, got {steps}")
    if not params:
        raise ValueError("nothing to optimise: no parameter requires a gradient")
    if not (learning_rate > 0 and math.isfinite(learning_rate)):
        raise ValueError(f"learning_rate must be a positive number, got {learning_rate}")
    optimizer = adam(params, learning_rate)
    losses: list[float] = []
    for step in range(steps):
        loss = loss_fn(step)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        value = float(loss.detach())  # the step's one host read: an accelerator has the backward queued by now
        if not math.isfinite(value):
            raise NonFiniteLoss(step, value)  # before the update: parameters keep their last finite values
        optimizer.step()
        losses.append(value)
        if on_step is not None:
            on_step(step, value)
    return losses
