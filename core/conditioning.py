"""Imagic's step C: e = eta * e_tgt + (1 - eta) * e_opt, on any tensor of matching shape."""
from __future__ import annotations

import torch


def interpolate(target: torch.Tensor, optimized: torch.Tensor, eta: float) -> torch.Tensor:
    """Linear interpolation (extrapolation outside [0, 1]) from ``optimized`` (eta=0) to ``target`` (eta=1)."""
    if target.shape != optimized.shape:
        raise ValueError(f"shapes differ: target {tuple(target.shape)} vs optimized {tuple(optimized.shape)}")
    dtype = torch.promote_types(target.dtype, optimized.dtype)
    t = target.to(optimized.device, dtype)
    o = optimized.to(dtype)
    return o + float(eta) * (t - o)
