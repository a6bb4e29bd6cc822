"""The sampler's starting noise without its per-channel mean (Imagic Centred Noise; issue 19).

A sampler that starts from the photo (KSampler's ``denoise`` below 1) adds ``sigma * noise`` to the photo's
latent. A draw of ``noise`` has a per-channel mean of about 1/sqrt(pixels of the latent) (1/16 on a 16x16 latent),
and a model that cannot tell that offset from the picture's own brightness keeps part of it: on the shapes model a
seed whose noise averaged -0.077 over the colour channels left every edit's background 0.09 darker. Removing the
mean takes 4 of the draw's values' worth of freedom out of it and nothing else. ComfyUI-free, like the rest of
``core``.
"""
from __future__ import annotations

import torch


def centred(noise: torch.Tensor) -> torch.Tensor:
    """``noise`` less each sample's mean per channel (over every dimension after batch and channel)."""
    if noise.ndim < 3:
        return noise
    return noise - noise.mean(dim=tuple(range(2, noise.ndim)), keepdim=True)
