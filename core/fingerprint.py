"""A cheap identity of a diffusion model's weights, stored in a saved fine-tune and compared when it is loaded onto
a model (another base model: refused or warned about). Torch-only."""
from __future__ import annotations

import hashlib
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import torch

# Fingerprint: how many weight tensors are sampled, how many values from each, and the relative L2
# distance under which two samples count as the same weights (fp32 vs fp16/bf16 copies of one checkpoint
# differ by < 0.4 % per value).
SAMPLED_TENSORS = 32
VALUES_PER_TENSOR = 8
SAME_WEIGHTS_TOLERANCE = 1e-2



def _sample_positions(name: str, numel: int, count: int) -> list[int]:
    digest = hashlib.sha256(name.encode()).digest()
    return [int.from_bytes(digest[4 * j: 4 * j + 4], "little") % numel for j in range(count)]


def fingerprint(shapes: Mapping[str, tuple], value: Callable[[str], torch.Tensor]) -> dict:
    """A cheap identity of a diffusion model's weights.

    ``architecture``: SHA-256 of every weight name and shape (sorted). ``sample``: ``VALUES_PER_TENSOR``
    values (positions derived from the name) from each of ``SAMPLED_TENSORS`` matrices/kernels spread
    evenly over the sorted names; ``value(name)`` returns that tensor as the model computes with it
    (its patches applied). Only the sampled tensors are read.
    """
    names = sorted(shapes)
    text = "\n".join(f"{n}:{','.join(str(int(d)) for d in shapes[n])}" for n in names)
    matrices = [n for n in names if len(shapes[n]) >= 2 and math.prod(shapes[n]) > 0]
    count = min(SAMPLED_TENSORS, len(matrices))
    picked = [matrices[round(i * (len(matrices) - 1) / max(count - 1, 1))] for i in range(count)]
    sample = []
    for name in dict.fromkeys(picked):
        tensor = value(name)
        flat = tensor.detach().reshape(-1)
        idx = torch.tensor(_sample_positions(name, flat.numel(), VALUES_PER_TENSOR), device=flat.device)
        sample.extend(float(v) for v in flat[idx].float().cpu())
    return {"architecture": hashlib.sha256(text.encode()).hexdigest()[:32], "tensors": len(names),
            "sample": [float(f"{v:.7g}") for v in sample]}


@dataclass(frozen=True)
class FingerprintCheck:
    same: bool
    architecture_differs: bool
    detail: str


def compare_fingerprints(saved: dict, current: dict) -> FingerprintCheck:
    if saved.get("architecture") != current.get("architecture"):
        return FingerprintCheck(False, True, f"the model has another architecture (weight names/shapes: "
                                             f"{current.get('tensors')} tensors, hash {current.get('architecture')}; "
                                             f"the file's base: {saved.get('tensors')} tensors, hash "
                                             f"{saved.get('architecture')})")
    a = torch.tensor(saved.get("sample", []), dtype=torch.float64)
    b = torch.tensor(current.get("sample", []), dtype=torch.float64)
    if a.shape != b.shape:
        return FingerprintCheck(False, False, "the weight samples have different lengths")
    if a.numel() == 0:
        return FingerprintCheck(True, False, "same architecture (no weights to sample)")
    distance = float((a - b).norm() / a.norm().clamp_min(1e-12))
    if distance == 0.0:
        return FingerprintCheck(True, False, "same weights")
    if distance <= SAME_WEIGHTS_TOLERANCE:
        return FingerprintCheck(True, False, f"same weights at another precision (sampled values differ by "
                                             f"{100 * distance:.2g} %)")
    return FingerprintCheck(False, False, f"same architecture but other weights (sampled values differ by "
                                          f"{100 * distance:.3g} %)")
