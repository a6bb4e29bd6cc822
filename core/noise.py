"""The sampler's starting noise without its per-channel mean and its coarsest waves (Imagic Centred Noise; issue 19).

A sampler that starts from the photo (KSampler's ``denoise`` below 1) adds ``sigma * noise`` to the photo's
latent. A draw of ``noise`` has a per-channel mean of about 1/sqrt(pixels of the latent) (1/16 on a 16x16 latent),
and a model that cannot tell that offset from the picture's own brightness keeps part of it: on the shapes model a
seed whose noise averaged -0.077 over the colour channels left every edit's background 0.09 darker. Removing the
mean takes 4 of the draw's values' worth of freedom out of it and nothing else.

The mean is the coarsest wave of all. The next coarsest (one or two cycles across the latent) are kept the same way
by a deterministic sampler, as blotches on flat areas: on the shapes model a draw's blotchiness followed how much of
its power lay in those waves, and without the waves of at most 2 cycles each way (25 of a 16x16 latent's 256
Fourier components) every seed's background came out as flat as the VAE round trip's (bench/RESULTS.md).
ComfyUI-free, like the rest of ``core``.
"""
from __future__ import annotations

import torch


def centred(noise: torch.Tensor, low_frequencies: int = 0) -> torch.Tensor:
    """``noise`` less each sample's mean per channel (over every dimension after batch and channel); with
    ``low_frequencies`` = K > 0 also less its coarsest waves: every Fourier component with at most K cycles along
    each of those dimensions (K = 2 on a 16x16 latent: 25 of its 256 components, the waves of 8 cells and more)."""
    if noise.ndim < 3:
        return noise
    dims = tuple(range(2, noise.ndim))
    out = noise - noise.mean(dim=dims, keepdim=True)
    if low_frequencies <= 0:
        return out
    coarse = torch.ones((), dtype=torch.bool, device=noise.device)
    for d in dims:  # integer frequency of each index along d: 0, 1, ..., -1
        k = (torch.fft.fftfreq(noise.shape[d], device=noise.device) * noise.shape[d]).round().abs()
        shape = [1] * noise.ndim
        shape[d] = -1
        coarse = coarse & (k <= low_frequencies).view(shape)
    if bool(coarse.all()):
        most = (min(noise.shape[d] for d in dims) - 1) // 2 - 1
        raise ValueError(f"Imagic Centred Noise: low_frequencies {low_frequencies} takes all of the noise out of a "
                         f"latent of {tuple(noise.shape[2:])}; set it to at most {max(most, 0)} (0: the mean alone)")
    spectrum = torch.fft.fftn(out.float(), dim=dims)
    return torch.fft.ifftn(spectrum.masked_fill(coarse, 0), dim=dims).real.to(noise.dtype)
