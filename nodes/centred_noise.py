"""Imagic Centred Noise: MODEL -> MODEL whose sampler start noise has no per-channel mean (core/noise.py).

Stock nodes cannot change the noise a KSampler adds (only SamplerCustomAdvanced takes a NOISE, and no stock NOISE
is centred), so this patches the one place every ComfyUI sampler turns its noise into the starting latent: the
model's ``model_sampling.noise_scaling``, the way ComfyUI's ModelSampling* nodes patch ``model_sampling``.
"""
from __future__ import annotations

import copy

from comfy_api.latest import io

from ..core.noise import centred

NODE_ID = "ImagicCentredNoise"


def _noise_scaling(self, sigma, noise, latent_image, max_denoise=False):
    return type(self).__mro__[1].noise_scaling(self, sigma, centred(noise), latent_image, max_denoise)


def centred_sampling(sampling):
    """A copy of ``sampling`` (a ComfyUI model_sampling object, left as it is) whose ``noise_scaling`` centres the
    noise first; one already centred is returned as it is."""
    cls = type(sampling)
    if getattr(cls, "imagic_centred", False):
        return sampling
    out = copy.copy(sampling)  # shares the (read-only) sigma tables
    # a subclass per call, not cached: ComfyUI makes a model_sampling class per loaded model
    out.__class__ = type(f"Centred{cls.__name__}", (cls,), {"noise_scaling": _noise_scaling, "imagic_centred": True})
    return out


class ImagicCentredNoise(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id=NODE_ID,
            display_name="Imagic Centred Noise",
            category="Imagic",
            description=(
                "The model with its sampler's starting noise centred: each channel's mean taken out of the noise "
                "a KSampler adds to the latent. A draw's mean shifts the brightness of a picture sampled from the "
                "photo (denoise below 1) by the seed; without it the background keeps its shade. Put it between "
                "Imagic Finetune UNet and the KSampler (after the training nodes). Works with every sampler and "
                "model family; ancestral samplers' later noise is left as it is."),
            inputs=[io.Model.Input("model", tooltip="The model the KSampler samples with (e.g. from Imagic "
                                                    "Finetune UNet). It is not changed: the output is a patched "
                                                    "copy.")],
            outputs=[io.Model.Output(tooltip="The same model whose sampler start noise has zero mean per channel; "
                                             "connect it to the KSampler's model.")],
        )

    @classmethod
    def execute(cls, model) -> io.NodeOutput:
        patched = model.clone()
        patched.add_object_patch("model_sampling", centred_sampling(model.get_model_object("model_sampling")))
        return io.NodeOutput(patched)
