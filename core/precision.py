"""How a training run computes: in fp32, or mixed precision (autocast to bf16) with fp32 master copies of
what trains. Mixed precision is used only where the hardware computes bf16 natively, where it is both faster
and smaller; elsewhere bf16 would be emulated (slow), so the run stays in fp32."""
from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch


def native_bf16(device: torch.device) -> bool:
    """Whether ``device`` has bf16 arithmetic units (CUDA: Ampere and later; CPU: AVX512-BF16 or AMX)."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported(including_emulation=False)
    if device.type == "cpu":
        cpu = getattr(torch, "cpu", None)
        checks = (getattr(cpu, "_is_avx512_bf16_supported", None), getattr(cpu, "_is_amx_tile_supported", None))
        return any(check() for check in checks if check is not None)
    return False


@dataclass(frozen=True)
class Precision:
    half: torch.dtype | None = None  # the autocast dtype; None: everything in fp32

    @classmethod
    def for_device(cls, device: torch.device, mixed: bool) -> Precision:
        return cls(torch.bfloat16 if mixed and native_bf16(device) else None)

    def autocast(self, device: torch.device):
        if self.half is None:
            return contextlib.nullcontext()
        return torch.autocast(device.type, dtype=self.half)

    def frozen_dtype(self, tensor: torch.Tensor) -> torch.dtype:
        """The dtype a frozen (not trained) tensor is kept in. Mixed: matrices and kernels in the half type,
        converted once (autocast would otherwise cast them at every use, twice with checkpointing: measured
        1.6x slower per step on a CPU), vectors (biases, norm gains) in fp32, which CPU norms require."""
        return self.half if self.half is not None and tensor.ndim >= 2 else torch.float32
