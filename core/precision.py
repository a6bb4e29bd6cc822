"""How a training run computes: in fp32, or mixed precision (autocast to bf16) with fp32 master copies of
what trains.

Mixed precision is used only on a CUDA GPU that computes bf16 natively (Ampere and later), where it is both
faster and smaller. Everywhere else training stays in fp32, CPUs included, whatever their instruction set:

* A CPU's bf16 matrix products run on different kernels by instruction set (oneDNN on AMX tiles, on
  AVX512-BF16, or emulated on AVX2), and a fine-tune's quality followed them: the tiny Flux model's eta=0
  reconstruction (tests/test_families.py) came out 4x worse with AMX than with AVX512-BF16 or AVX2 on the
  same Intel CPU (issue 18). In fp32 the result is the same on every CPU.
* On a CPU, ComfyUI keeps the model's fp32 weights in RAM whatever a node does, so a bf16 copy of the frozen
  weights adds half the model to the memory instead of saving it (bench/RESULTS.md).
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch


def trains_in_bf16(device: torch.device) -> bool:
    """Whether training on ``device`` uses bf16 mixed precision: a CUDA GPU with bf16 units (Ampere and later).
    CPUs train in fp32 (see the module docstring), MPS too (no verified bf16 autocast)."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported(including_emulation=False)
    return False


@dataclass(frozen=True)
class Precision:
    half: torch.dtype | None = None  # the autocast dtype; None: everything in fp32

    @classmethod
    def for_device(cls, device: torch.device, mixed: bool) -> Precision:
        return cls(torch.bfloat16 if mixed and trains_in_bf16(device) else None)

    def autocast(self, device: torch.device):
        if self.half is None:
            return contextlib.nullcontext()
        return torch.autocast(device.type, dtype=self.half)

    def frozen_dtype(self, tensor: torch.Tensor) -> torch.dtype:
        """The dtype a frozen (not trained) tensor is kept in. Mixed: matrices and kernels in the half type,
        converted once (autocast would otherwise cast them at every use, twice with checkpointing: measured
        1.6x slower per step on a CPU), vectors (biases, norm gains) in fp32, which CPU norms require."""
        return self.half if self.half is not None and tensor.ndim >= 2 else torch.float32
