"""The one optimisation loop both Imagic stages use (embedding optimisation and model fine-tuning)."""
from __future__ import annotations

import math
from collections.abc import Callable, Iterable

import torch

from . import defaults


class NonFiniteLoss(FloatingPointError):
    """The loss became NaN or infinite; carries the step so the node can say where."""

    def __init__(self, step: int, value: float):
        super().__init__(f"loss became {value} at step {step + 1}")
        self.step = step
        self.value = value


class EarlyStop:
    """Stop when converged: every ``every`` steps, ``heldout()`` (the loss on fixed held-out draws, computed under
    ``torch.no_grad``) is checked; training stops once the best value of the last ``patience`` checks (the window)
    is not below ``(1 - margin)`` x the best value before them, never before ``min_checks`` checks. ``checks``
    holds (step, value) of every check, ``stopped_at`` the step count it stopped after (None: it did not stop).
    A non-finite value counts as no improvement."""

    def __init__(self, heldout: Callable[[], float | torch.Tensor], every: int = defaults.EARLY_STOP_EVERY,
                 patience: int = defaults.EARLY_STOP_PATIENCE, margin: float = defaults.EARLY_STOP_MARGIN,
                 min_checks: int = defaults.EARLY_STOP_MIN_CHECKS):
        if every < 1 or patience < 1 or min_checks < 1:
            raise ValueError(f"every, patience and min_checks must be at least 1, got {every}, {patience}, "
                             f"{min_checks}")
        if not 0 <= margin < 1:
            raise ValueError(f"margin must be in [0, 1), got {margin}")
        self.heldout = heldout
        self.every, self.patience, self.margin, self.min_checks = every, patience, margin, min_checks
        self.checks: list[tuple[int, float]] = []
        self.stopped_at: int | None = None

    def __call__(self, done: int) -> bool:
        """After ``done`` training steps: whether to stop now."""
        if done % self.every:
            return False
        with torch.no_grad():
            value = float(self.heldout())
        self.checks.append((done, value if math.isfinite(value) else math.inf))
        values = [v for _, v in self.checks]
        if len(values) < max(self.min_checks, self.patience + 1):
            return False
        if min(values[-self.patience:]) < min(values[:-self.patience]) * (1 - self.margin):
            return False
        self.stopped_at = done
        return True


def adam(params: list[torch.Tensor], learning_rate: float) -> torch.optim.Adam:
    """Adam, with the fused kernel where the parameters' device has one (one pass over the weights instead
    of one per Adam operation: ~8x faster on a CPU for a 860M-parameter UNet)."""
    try:
        return torch.optim.Adam(params, lr=learning_rate, fused=True)
    except (RuntimeError, ValueError):  # a device or dtype without a fused Adam
        return torch.optim.Adam(params, lr=learning_rate)


FLAT_MAX_VALUES = 1 << 26  # 256 MB in fp32: beyond that the per-tensor overhead is nothing next to the arithmetic


class FlatParameters:
    """Many small parameters trained as one tensor: their values and gradients become views into two contiguous
    buffers, and the optimiser steps the buffer. Adam is elementwise, so this is the same update (to the last bit,
    but for a tensor's last ``numel % 16`` values, which the fused kernel computes without SIMD). What it saves is
    the optimiser's per-tensor cost (Python bookkeeping and a kernel call per tensor): for the 264 LoRA tensors of
    the shapes model, Adam's step 2.6 -> 0.6 ms, 2-5 % of the step on a CPU (bench/RESULTS.md, "Per-step levers").

    The gradients accumulate in place into the buffer (``zero_grad`` zeroes it), so a parameter that gets no
    gradient in a step is stepped with a zero gradient instead of skipped; the training loop runs the same graph
    every step, where every parameter gets one or none ever (then its moments stay zero and it never moves).
    """

    ALIGN = 16  # values: each tensor starts 64 bytes (fp32) into the buffer, as an allocation would

    def __init__(self, params: list[torch.Tensor]):
        starts, end = [], 0
        for p in params:
            starts.append(end)
            end += -(-p.numel() // self.ALIGN) * self.ALIGN
        first = params[0]
        self.values = torch.zeros(end, dtype=first.dtype, device=first.device)  # the gaps stay 0 (zero gradient)
        self.values.grad = torch.zeros_like(self.values)
        for p, start in zip(params, starts, strict=True):
            view = slice(start, start + p.numel())
            self.values[view].copy_(p.detach().reshape(-1))
            p.data = self.values[view].view_as(p)
            p.grad = self.values.grad[view].view_as(p)

    @staticmethod
    def worth_it(params: list[torch.Tensor]) -> bool:
        """More than one leaf tensor, one device and dtype, no gradients yet, and not so large that the one-off
        copy into the buffer would matter."""
        first = params[0]
        return (len(params) > 1 and sum(p.numel() for p in params) <= FLAT_MAX_VALUES
                and all(p.is_leaf and p.grad is None and p.device == first.device and p.dtype == first.dtype
                        for p in params))

    def zero_grad(self) -> None:
        self.values.grad.zero_()


SCHEDULES = ("linear_decay", "constant")


def rate_at(schedule: str, learning_rate: float, step: int, steps: int) -> float:
    """The learning rate of step ``step`` (0-based) of ``steps``. constant: ``learning_rate`` throughout.
    linear_decay: ``learning_rate`` at the first step, down in equal steps to ``learning_rate`` / ``steps`` at the
    last (never above the rate given, as a rate tuned for constant may be near what a model tolerates; the mean is
    about half the rate), so the last draws' updates are small."""
    if schedule == "constant":
        return learning_rate
    if schedule == "linear_decay":
        return learning_rate * (steps - step) / steps
    raise ValueError(f"unknown learning-rate schedule {schedule!r}: one of {', '.join(SCHEDULES)}")


def adam_loop(params: Iterable[torch.Tensor], loss_fn: Callable[[int], torch.Tensor], steps: int,
              learning_rate: float, on_step: Callable[[int, float], None] | None = None,
              early_stop: EarlyStop | None = None, schedule: str = "constant") -> list[float]:
    """Minimise ``loss_fn(step)`` over ``params`` with Adam for ``steps`` steps, or until ``early_stop`` says
    the held-out loss has converged; returns the losses (one per step taken). ``schedule`` moves the rate over
    the steps (``rate_at``).

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
    rate_at(schedule, learning_rate, 0, steps)  # an unknown schedule fails before anything trains
    flat = FlatParameters(params) if FlatParameters.worth_it(params) else None
    optimizer = adam([flat.values] if flat else params, learning_rate)
    zero_grad = flat.zero_grad if flat else lambda: optimizer.zero_grad(set_to_none=True)
    losses: list[float] = []
    for step in range(steps):
        if schedule != "constant":
            for group in optimizer.param_groups:
                group["lr"] = rate_at(schedule, learning_rate, step, steps)
        loss = loss_fn(step)
        zero_grad()
        loss.backward()
        value = float(loss.detach())  # the step's one host read: an accelerator has the backward queued by now
        if not math.isfinite(value):
            raise NonFiniteLoss(step, value)  # before the update: parameters keep their last finite values
        optimizer.step()
        losses.append(value)
        if on_step is not None:
            on_step(step, value)
        if early_stop is not None and step + 1 < steps and early_stop(step + 1):
            break
    return losses
