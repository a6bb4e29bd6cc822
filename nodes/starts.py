"""Where Imagic's sampling starts (issue 19), as the stock nodes do it, for the nodes that sample themselves.

* ``noise``: the paper's start, an empty latent of the input's shape, every step (KSampler, denoise 1).
* ``photo``: the input's latent noised to ``strength`` (KSampler's denoise on the VAE Encode output, as SDEdit).
* ``inversion``: the input's latent run backwards to the noise level of ``strength`` by the fine-tuned model with
  e_opt and no guidance (BasicScheduler -> FlipSigmas -> SamplerCustom, euler, no noise added), then sampled
  forward from there without added noise (SamplerCustom). At eta 0 this reproduces the input up to the ODE's
  discretisation: e_opt and the fine-tune were trained to reconstruct it.

The graphs (workflows/, cli/) build the same with stock nodes; bench/edit_quality.py measures the three.
"""
from __future__ import annotations

import torch

import comfy.sample
import comfy.samplers
import nodes as comfy_nodes  # ComfyUI's nodes.py (the pack's own package is imported relatively)
from comfy_extras.nodes_custom_sampler import BasicScheduler, FlipSigmas

from ..core import defaults

KINDS = defaults.STARTS
INVERSION_SAMPLER = "euler"  # the deterministic first-order step: DDIM inversion in ComfyUI's sigma space


def sigmas(model, scheduler: str, steps: int, strength: float) -> torch.Tensor:
    """The stock BasicScheduler's sigmas (as KSampler's denoise: the last ``steps`` of ``steps / strength``)."""
    return BasicScheduler().get_sigmas(model, scheduler, steps, strength)[0]


def _custom(model, cfg, sampler_name, sigmas_, positive, negative, samples, seed) -> torch.Tensor:
    noise = torch.zeros_like(samples)
    return comfy.sample.sample_custom(model, noise, cfg, comfy.samplers.sampler_object(sampler_name), sigmas_,
                                      positive, negative, samples, disable_pbar=True, seed=seed)


def invert(model, optimized, negative, samples: torch.Tensor, steps: int, scheduler: str, strength: float,
           seed: int = 0) -> torch.Tensor:
    """The input latent at the noise level of ``strength``, by the model's own ODE backwards (cfg 1, e_opt): the
    stock FlipSigmas of those sigmas."""
    flipped = FlipSigmas().get_sigmas(sigmas(model, scheduler, steps, strength))[0]
    return _custom(model, 1.0, INVERSION_SAMPLER, flipped, optimized, negative, samples, seed)


def sample(start: str, strength: float, model, positive, negative, optimized, latent: dict, seed, steps, cfg,
           sampler_name, scheduler) -> torch.Tensor:
    """One edit's latent from ``start`` (see the module doc): KSampler for noise and photo, the inversion's two
    SamplerCustom passes for inversion."""
    samples = latent["samples"]
    if start == "noise":
        empty = {"samples": torch.zeros_like(samples)}
        return comfy_nodes.common_ksampler(model, seed, steps, cfg, sampler_name, scheduler, positive, negative,
                                           empty, denoise=1.0)[0]["samples"]
    if start == "photo":
        return comfy_nodes.common_ksampler(model, seed, steps, cfg, sampler_name, scheduler, positive, negative,
                                           {"samples": samples}, denoise=strength)[0]["samples"]
    if start != "inversion":
        raise ValueError(f"unknown start {start!r}; expected one of {', '.join(KINDS)}")
    noisy = invert(model, optimized, negative, samples, steps, scheduler, strength, seed)
    return _custom(model, cfg, sampler_name, sigmas(model, scheduler, steps, strength), positive, negative, noisy,
                   seed)
