"""Imagic Centred Noise: MODEL -> MODEL whose sampler start noise has no per-channel mean and, by default, none of
its coarsest waves (core/noise.py).

Stock nodes cannot change the noise a KSampler adds (only SamplerCustomAdvanced takes a NOISE, and no stock NOISE
is centred), so this patches the one place every ComfyUI sampler turns its noise into the starting latent: the
model's ``model_sampling.noise_scaling``, the way ComfyUI's ModelSampling* nodes patch ``model_sampling``.
"""
from __future__ import annotations

import copy

from comfy_api.latest import io

from ..core.noise import centred

NODE_ID = "ImagicCentredNoise"
LOW_FREQUENCIES = 2  # the node's default: how many of the coarsest waves go too (core/noise.py: centred)


def _noise_scaling(self, sigma, noise, latent_image, max_denoise=False):
    noise = centred(noise, type(self).imagic_low_frequencies)
    return type(self).__mro__[1].noise_scaling(self, sigma, noise, latent_image, max_denoise)


def centred_sampling(sampling, low_frequencies: int = 0):
    """A copy of ``sampling`` (a ComfyUI model_sampling object, left as it is) whose ``noise_scaling`` centres the
    noise first (and takes out its ``low_frequencies`` coarsest waves); one already centred the same way is returned
    as it is, one centred otherwise is centred again from its original."""
    cls = type(sampling)
    if getattr(cls, "imagic_centred", False):
        if cls.imagic_low_frequencies == low_frequencies:
            return sampling
        cls = cls.__mro__[1]
    out = copy.copy(sampling)  # shares the (read-only) sigma tables
    # a subclass per call, not cached: ComfyUI makes a model_sampling class per loaded model
    out.__class__ = type(f"Centred{cls.__name__}", (cls,), {
        "noise_scaling": _noise_scaling, "imagic_centred": True, "imagic_low_frequencies": int(low_frequencies)})
    return out


class ImagicCentredNoise(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id=NODE_ID,
            display_name="Imagic Centred Noise",
            category="Imagic",
            description=(
                "The model with its sampler's starting noise centred: each channel's mean, and the coarsest waves "
                "(low_frequencies), taken out of the noise a KSampler adds to the latent. Sampling from the photo "
                "(denoise below 1), a draw's mean shifts the picture's shade by the seed and its coarse waves stay "
                "as blotches on flat areas; without them the background keeps its shade and stays flat. Put it "
                "between Imagic Finetune UNet and the KSampler (after the training nodes). Works with every sampler "
                "and model family; ancestral samplers' later noise is left as it is."),
            inputs=[io.Model.Input("model", tooltip="The model the KSampler samples with (e.g. from Imagic "
                                                    "Finetune UNet). It is not changed: the output is a patched "
                                                    "copy."),
                    io.Int.Input("low_frequencies", default=LOW_FREQUENCIES, min=0, max=16, optional=True, tooltip=(
                        "Also take the noise's coarsest waves out: every wave with at most this many cycles across "
                        "the latent each way (0 = only the mean). Coarse noise is what a sampler from the photo "
                        "keeps as blotches on flat areas."))],
            outputs=[io.Model.Output(tooltip="The same model whose sampler start noise has zero mean per channel "
                                             "and no coarse waves; connect it to the KSampler's model.")],
        )

    @classmethod
    def execute(cls, model, low_frequencies: int = LOW_FREQUENCIES) -> io.NodeOutput:
        patched = model.clone()
        sampling = centred_sampling(model.get_model_object("model_sampling"), low_frequencies)
        patched.add_object_patch("model_sampling", sampling)
        return io.NodeOutput(patched)
