"""The noise levels the training loops draw (``ComfyDenoiser.sample_sigmas``): the paper's t ~ U{1..T}, i.e.
uniform over the model's own timestep range, for a discrete (SD1) and a flow (SD3) model.

The held-out loss the method checks use draws its noise levels from the same function, so those checks
cannot see a wrong distribution (training at one noise level passed them all); this file tests the
distribution itself. A draw is turned back into the timestep fraction it stands for with the model's own
schedule (``percent_to_sigma`` on a fine grid; for the discrete model also ComfyUI's ``timestep``).
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

from pack import sub

DRAWS = 4000
# Kolmogorov-Smirnov distance of 4000 uniform draws: critical value 1.63/sqrt(n) = 0.026 at p = 0.01.
KS_MAX = 0.026


@pytest.fixture(scope="module", params=["sd15", "sd3"])
def denoiser(request, comfy):
    tiny, cm = sub("demo.tiny_checkpoint"), sub("nodes.comfy_model")
    with torch.inference_mode():
        model = tiny.build_tiny_checkpoint(request.param, 0)[0]
    return request.param, cm.ComfyDenoiser(model.model)


def fractions(denoiser, sigmas: torch.Tensor) -> np.ndarray:
    """The timestep fraction p (0 = clean end, 1 = pure noise end, as in ``percent_to_sigma(1 - p)``) each sigma
    stands for, read off the model's own schedule."""
    grid = np.linspace(0.0, 1.0, 20001)[1:-1]
    schedule = np.array([denoiser.cpu_sampling.percent_to_sigma(float(1 - p)) for p in grid])  # increasing in p
    assert np.all(np.diff(schedule) > 0)
    return np.interp(sigmas.double().numpy(), schedule, grid)


def draw(denoiser, seed: int, n: int = DRAWS) -> torch.Tensor:
    return denoiser.sample_sigmas(n, torch.Generator().manual_seed(seed))


def ks_uniform(p: np.ndarray) -> float:
    p = np.sort(p)
    n = len(p)
    return float(max(np.max(np.arange(1, n + 1) / n - p), np.max(p - np.arange(n) / n)))


def test_noise_levels_cover_the_whole_range_uniformly(denoiser):
    family, d = denoiser
    sigmas = draw(d, 0)
    assert sigmas.shape == (DRAWS,) and sigmas.dtype == torch.float32 and torch.isfinite(sigmas).all()
    p = fractions(d, sigmas)
    ks = ks_uniform(p)
    print(f"\n{family}: fractions min {p.min():.4f} max {p.max():.4f} mean {p.mean():.4f} std {p.std():.4f} "
          f"KS {ks:.4f}")
    assert p.min() < 0.01 and p.max() > 0.99, (p.min(), p.max())  # both ends of the schedule are trained
    assert abs(p.mean() - 0.5) < 0.015, p.mean()  # U(0, 1): mean 1/2, std 1/sqrt(12) = 0.2887
    assert abs(p.std() - 12 ** -0.5) < 0.01, p.std()
    assert ks < KS_MAX, ks
    for lo in np.arange(0.0, 1.0, 0.1):  # every tenth of the range gets its share (400 expected; 4 sigma = 76)
        share = int(((p >= lo) & (p < lo + 0.1)).sum())
        assert abs(share - DRAWS / 10) < 76, (lo, share)
    if family == "sd15":  # the discrete schedule's own sigma -> timestep (0..999) says the same
        t = d.cpu_sampling.timestep(sigmas).double().numpy()
        assert np.allclose(p, t / 999, atol=2e-3)


def test_noise_levels_are_seeded(denoiser):
    _, d = denoiser
    a, b, c = draw(d, 0, 256), draw(d, 0, 256), draw(d, 1, 256)
    assert torch.equal(a, b)
    assert not torch.equal(a, c) and (a != c).float().mean() > 0.99  # another seed, other levels
    assert len(torch.unique(a)) > 250  # not a few fixed levels
