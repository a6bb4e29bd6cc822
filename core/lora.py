"""Low-rank adapters beside the linear and convolution layers of a frozen network.

An adapted layer computes ``layer(x) + up(down(x))`` (a forward hook): the adapter runs on the activations
as two thin products, and the frozen weight is used as it is, never rebuilt as ``W + up @ down`` per forward.
The tensors have the conventional LoRA shapes (kohya, ComfyUI's loader): linear ``up`` (out, r), ``down``
(r, in); convolution ``up`` (out, r, 1, ...), ``down`` (r, in, *kernel). Since a convolution is linear in its
weight, conv(x, W + up·down) = conv(x, W) + conv1x1(conv(x, down), up): applying the pair as a weight patch
(alpha = rank, scale 1) gives the same network as the trained one.
"""
from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F

_POINTWISE = {3: F.conv1d, 4: F.conv2d, 5: F.conv3d}  # the 1x1 "up" convolution, by weight ndim


def adaptable(module: torch.nn.Module) -> bool:
    """Linear layers and ungrouped, non-transposed convolutions (every weight layer of ComfyUI's diffusion models)."""
    if isinstance(module, torch.nn.Linear):
        return True
    conv = torch.nn.modules.conv._ConvNd
    return isinstance(module, conv) and not module.transposed and module.groups == 1


class Lora(torch.nn.Module):
    """``up`` initialised like ``nn.Linear`` (Kaiming uniform) and ``down`` zero: the adapted layer starts unchanged."""

    def __init__(self, layer: torch.nn.Module, rank: int, generator: torch.Generator):
        super().__init__()
        weight = layer.weight
        self.rank = min(rank, weight.shape[0], weight[0].numel())
        up = torch.empty((weight.shape[0], self.rank) + (1,) * (weight.ndim - 2))
        torch.nn.init.kaiming_uniform_(up, a=math.sqrt(5), generator=generator)  # drawn on the CPU: same on any device
        self.up = torch.nn.Parameter(up.to(weight.device))
        self.down = torch.nn.Parameter(torch.zeros((self.rank,) + tuple(weight.shape[1:]), device=weight.device))

    def forward(self, layer: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
        if self.up.ndim == 2:
            return F.linear(F.linear(x, self.down), self.up)
        # the layer's own stride, padding (mode), dilation for the kernel-sized ``down``
        return _POINTWISE[self.up.ndim](layer._conv_forward(x, self.down, None), self.up)

    def hook(self, layer: torch.nn.Module, args: tuple, output: torch.Tensor) -> torch.Tensor:
        return output + self(layer, args[0])


def attach(root: torch.nn.Module, rank: int, seed: int,
           keep: Callable[[str], bool] | None = None) -> dict[str, Lora]:
    """A ``Lora`` on every adaptable layer under ``root`` (hooked in place), by module name; seeded init (drawn in
    module order). ``keep``: which module names to adapt (``core.blocks.chooser``); None = every one."""
    generator = torch.Generator(device="cpu").manual_seed(int(seed))
    adapters = {}
    for name, module in root.named_modules():
        if adaptable(module) and (keep is None or keep(name)):
            adapters[name] = Lora(module, rank, generator)
            module.register_forward_hook(adapters[name].hook)
    return adapters


# ---------------------------------------------------------------------------------------------------------------
# A weight delta as LoRA factors (how a full fine-tune is saved as a LoRA)


def svd_extract(diff: torch.Tensor, rank: int, *, lowrank: bool = False,
                clamp_quantile: float | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """ComfyUI's LoRA extraction (``comfy_extras/nodes_lora_extract.extract_lora``): (up, down) with
    ``up @ down`` the best rank-``rank`` approximation of ``diff`` (flattened for convolutions), singular
    values folded into ``up``, conv shapes (out, r, 1, 1) / (r, in, kh, kw).

    Differences from ComfyUI's function:

    * no clamping by default. ComfyUI clamps both factors at the 0.99 quantile of their values
      (``clamp_quantile=0.99`` does the same), a kohya heritage for half-precision files. The factors here
      stay float32, and the clamp only adds error -- and an error that depends on the delta's absolute
      scale (it compares ``U*S`` with the unit-norm ``Vh``): on a rank-6 test matrix it makes the
      rank-6 extraction 20 % off instead of 0.25 %.
    * the thin SVD (``full_matrices=False``; the full one also builds an n x n matrix never used), and no
      ``squeeze`` of 1x1 convolutions (which would also drop a dimension of size 1). Same result.
    * ``lowrank`` uses ``torch.svd_lowrank`` (randomised, same shapes, near-optimal factors): only for
      benchmarks on a CPU, where the exact SVD of SD1.5's 1280 x 11520 kernels takes minutes.
    """
    shape = diff.shape
    matrix = diff.reshape(shape[0], -1).float()
    rank = max(1, min(rank, *matrix.shape))
    if lowrank:
        u, s, v = torch.svd_lowrank(matrix, q=min(rank + 10, *matrix.shape), niter=2)
        vh = v.T
    else:
        u, s, vh = torch.linalg.svd(matrix, full_matrices=False)
    up = u[:, :rank] @ torch.diag(s[:rank])
    down = vh[:rank, :]
    if clamp_quantile is not None:
        values = torch.cat([up.flatten(), down.flatten()])
        if values.numel() > 1 << 24:  # torch.quantile's input limit; a strided subsample estimates it
            values = values[:: math.ceil(values.numel() / (1 << 24))]
        hi = torch.quantile(values, clamp_quantile)
        up, down = up.clamp(-hi, hi), down.clamp(-hi, hi)
    if len(shape) > 2:
        up = up.reshape(shape[0], rank, *([1] * (len(shape) - 2)))
        down = down.reshape(rank, *shape[1:])
    return up.contiguous(), down.contiguous()
