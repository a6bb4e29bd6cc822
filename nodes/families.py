"""Which model families the Imagic nodes support, and a clear error for the others.

Imagic needs three things from a model, and the loss in ``core.diffusion`` is only right when all hold:

1. **Text-token conditioning the sampler feeds straight through.** ComfyUI builds the model's inputs
   from a conditioning entry with the model's own ``extra_conds`` (``nodes.comfy_model.model_kwargs``
   does the same), so the optimised ``cross_attn`` and ``pooled_output`` reach the network with their
   gradient, and every other key (SDXL's sizes, the refiner's aesthetic score, Flux's guidance, an
   unCLIP image embedding) passes through unchanged.
2. **No image input besides the noisy latent.** Inpainting, InstructPix2Pix, Flux Fill, upscaler and
   image-to-video models concatenate an image (and mask) to the latent; Imagic's loss has none to give.
3. **A parameterisation whose loss was verified**: eps and v-prediction on the discrete 1000-step
   schedule, and rectified flow (velocity) on the SD3 and Flux schedules. The loss is the MSE of the raw
   network output against its own target (eps, v, noise - x0); tests/test_families.py checks it against
   a direct call of the diffusion model.

Supported (model_base class; each verified with a tiny real model in tests/test_families.py, SD1.5 in
test_graph.py): ``BaseModel`` (SD1.x eps, SD2.x base eps and 768 v-prediction), ``SD21UNCLIP`` (SD2.1
unCLIP, its image embedding passed through), ``SDXL``, ``SDXLRefiner``, ``SD3`` and ``Flux`` (dev, with
its guidance). Checkpoints ComfyUI loads as the same class with a verified sampling type are accepted
without a test of their own: SSD-1B, Segmind Vega, KOALA and v-prediction SDXL fine-tunes (SDXL), SD3.5
(SD3), Flux schnell (Flux, discrete-flow sampling). Flux Kontext's reference latents are not verified.

``pooled_output`` (SDXL, the refiner, SD3, Flux, where the model consumes it through ``y``) is optimised
jointly with the token embeddings by Imagic Optimize Embedding -- same Adam, same learning rate, same
steps -- because the model reads it in every block (SDXL: pooled + size embeddings -> the time
embedding). Imagic Interpolate Conditioning mixes it with the same eta as the tokens. Families that do
not consume it (SD1.x, SD2.x) leave it unchanged (it gets no gradient).

One family needs a change to its private trainable copy (``prepare_for_training``): ComfyUI's Flux blocks
add their residuals in place (``txt += ...`` in the double-stream blocks, ``x += ...`` in the single-stream
ones) into the very tensor their LayerNorm saved for the backward pass, so autograd refuses to run
through them. The copy's LayerNorms in those blocks get a forward pre-hook that hands them a clone of
their input (same values, same module tree and state dict; the upstream model is not touched).

Everything else raises ``fail(node_id, "<family> models are not supported by Imagic: <why>", "<fix>")``
before any work starts, the family named by its ``supported_models`` config class.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

import comfy.model_base
import comfy.model_sampling

from .errors import fail


def _sdxl_pooled(base) -> int:  # y = pooled + 6 size embeddings of 256
    return base.adm_channels - 6 * 256


def _refiner_pooled(base) -> int:  # y = pooled + 4 size embeddings + aesthetic score, 256 each
    return base.adm_channels - 5 * 256


@dataclass(frozen=True)
class Family:
    names: str  # what users call the checkpoints ComfyUI loads as this class
    pooled_width: Callable | None  # base model -> the width of the pooled_output it consumes; None: not consumed


# model_base class name -> the family: one entry per supported family (a new family is one line here, a tiny model
# in demo/tiny_checkpoint.py and a test in tests/test_families.py)
SUPPORTED = {
    "BaseModel": Family("SD1.x, SD2.x (base and 768-v)", None),
    "SD21UNCLIP": Family("SD2.1 unCLIP", None),
    "SDXL": Family("SDXL", _sdxl_pooled),
    "SDXLRefiner": Family("the SDXL refiner", _refiner_pooled),
    "SD3": Family("SD3", lambda base: base.adm_channels),
    "Flux": Family("Flux", lambda base: base.model_config.unet_config.get("vec_in_dim")),
}
*_FIRST, _LAST = (f.names for f in SUPPORTED.values())
_NAMES = f"{', '.join(_FIRST)} and {_LAST}"
FIX_OTHER = f"use a checkpoint of a supported family: {_NAMES}"

_VIDEO = "a video model: its latents have a frame axis and it generates clips; Imagic edits one image"
_TEXT_UNVERIFIED = ("a text-to-image model whose conditioning (text encoder outputs, attention masks, "
                    "extra inputs) and parameterisation have not been verified with Imagic, so the loss "
                    "could silently be wrong")
# model_base class name -> why Imagic cannot use it (anything not listed gets a generic reason).
UNSUPPORTED = {
    "SD15_instructpix2pix": "an InstructPix2Pix model: it is conditioned on an input image concatenated to the "
                            "latent (c_concat), which Imagic's training does not provide",
    "SDXL_instructpix2pix": "an InstructPix2Pix model: it is conditioned on an input image concatenated to the "
                            "latent (c_concat), which Imagic's training does not provide",
    "SD_X4Upscaler": "an upscaler: it is conditioned on a low-resolution image concatenated to the latent",
    "Stable_Zero123": "a novel-view model conditioned on an image (concatenated latent and CLIP vision "
                      "embedding), not on text",
    "Lotus": "a depth/normal estimation model (image-to-image), not conditioned on text",
    "StableCascade_C": "Stable Cascade generates in two stages (C: a prior in its own compressed space with "
                       "its own noise schedule; B: a decoder conditioned on C's output), and Imagic's "
                       "optimisation and fine-tune would have to span both",
    "StableCascade_B": "Stable Cascade's stage B is a decoder conditioned on stage C's output (the 'effnet' "
                       "prior), not on the text alone",
    "SVD_img2vid": "an image-to-video model conditioned on an image embedding, not on text",
    "SV3D_u": "an image-to-orbit-video model conditioned on an image, not on text",
    "SV3D_p": "an image-to-orbit-video model conditioned on an image, not on text",
    "StableAudio1": "an audio model",
    "ACEStep": "an audio model",
    "Hunyuan3Dv2": "a 3D shape model",
    "Hunyuan3Dv2_1": "a 3D shape model",
    **{name: _VIDEO for name in (
        "GenmoMochi", "LTXV", "HunyuanVideo", "HunyuanVideoI2V", "HunyuanVideoSkyreelsI2V", "CosmosVideo",
        "WAN21", "WAN21_Vace", "WAN21_Camera", "WAN21_HuMo", "WAN22_Animate", "WAN22_S2V", "WAN22")},
    **{name: _TEXT_UNVERIFIED for name in (
        "AuraFlow", "PixArt", "HunyuanDiT", "Lumina2", "HiDream", "Chroma", "ChromaRadiance", "Omnigen2",
        "QwenImage", "HunyuanImage21", "HunyuanImage21Refiner", "CosmosPredict2")},
}

# (prediction, schedule) pairs, by class; the loss was checked for each against the raw network output.
VERIFIED_SAMPLING = {
    (comfy.model_sampling.EPS, comfy.model_sampling.ModelSamplingDiscrete),
    (comfy.model_sampling.V_PREDICTION, comfy.model_sampling.ModelSamplingDiscrete),
    (comfy.model_sampling.CONST, comfy.model_sampling.ModelSamplingDiscreteFlow),
    (comfy.model_sampling.CONST, comfy.model_sampling.ModelSamplingFlux),
}
_PREDICTION_NAMES = {comfy.model_sampling.EPS: "eps", comfy.model_sampling.V_PREDICTION: "v-prediction",
                     comfy.model_sampling.CONST: "rectified flow", comfy.model_sampling.EDM: "EDM",
                     comfy.model_sampling.X0: "x0", comfy.model_sampling.IMG_TO_IMG: "img-to-img (x0)",
                     comfy.model_sampling.COSMOS_RFLOW: "Cosmos rectified flow"}


def family_name(model) -> str:
    """The family's ComfyUI ``supported_models`` class name (SD15, SDXL, Flux ...) of a MODEL."""
    config_cls = type(model.model.model_config)
    for cls in config_cls.__mro__:
        if cls.__module__ == "comfy.supported_models":
            return cls.__name__
    return config_cls.__name__


def _defining(obj, names: tuple[str, ...]) -> type:
    """The first class in ``obj``'s MRO that itself defines one of ``names`` (its parameterisation or schedule)."""
    for cls in type(obj).__mro__:
        if any(n in vars(cls) for n in names):
            return cls
    return type(obj)


def sampling_kind(model) -> tuple[type, type]:
    """(prediction class, schedule class) of the model as it will run (Model Sampling patches included)."""
    sampling = model.get_model_object("model_sampling")
    return (_defining(sampling, ("calculate_denoised",)),
            _defining(sampling, ("percent_to_sigma", "sigma", "timestep")))


def pooled_width(model) -> int | None:
    """Width of the ``pooled_output`` the diffusion model consumes, None where it consumes none."""
    family = SUPPORTED.get(type(model.model).__name__)
    width_of = family.pooled_width if family else None
    return width_of(model.model) if width_of else None


def _base_class_name(model) -> str:
    cls = type(model.model)
    return cls.__name__ if cls.__module__ == comfy.model_base.__name__ else f"{cls.__module__}.{cls.__name__}"


def check_family(node_id: str, model, conditioning: list) -> None:
    """Raise a clear error for a model Imagic does not support, or a conditioning it cannot feed it."""
    base = model.model
    family = family_name(model)
    name = _base_class_name(model)
    if type(base).__module__ != comfy.model_base.__name__ or name not in SUPPORTED:
        why = UNSUPPORTED.get(name, f"its model class ({name}) is not one Imagic was verified with")
        raise fail(node_id, f"{family} models are not supported by Imagic: {why}", FIX_OTHER)

    in_channels = base.model_config.unet_config.get("in_channels")
    latent_channels = getattr(base.latent_format, "latent_channels", None)
    if base.concat_keys or (isinstance(in_channels, int) and isinstance(latent_channels, int)
                            and in_channels > latent_channels):
        raise fail(node_id, f"{family} inpainting/image-conditioned models are not supported by Imagic: the "
                            f"network takes {in_channels} input channels, the {latent_channels}-channel latent plus "
                            "a mask and/or image concatenated to it, which Imagic's training does not provide",
                   f"use the plain text-to-image checkpoint of the family ({_NAMES})")

    prediction, schedule = sampling_kind(model)
    if (prediction, schedule) not in VERIFIED_SAMPLING:
        pred = _PREDICTION_NAMES.get(prediction, prediction.__name__)
        raise fail(node_id, f"{family} models are not supported by Imagic with {pred} prediction on "
                            f"{schedule.__name__} sampling: the loss is verified only for eps and v-prediction on "
                            "the discrete schedule and for rectified flow on the SD3/Flux schedules",
                   "connect the model without a Model Sampling node that changes its type (a checkpoint that "
                   "needs one, e.g. EDM-sampled Playground v2.5/CosXL or LCM, is not supported)")

    width = pooled_width(model)
    if width is None:
        return
    for i, entry in enumerate(conditioning or []):
        extras = entry[1] if isinstance(entry, (list, tuple)) and len(entry) > 1 else {}
        pooled = extras.get("pooled_output") if isinstance(extras, dict) else None
        if pooled is None:
            raise fail(node_id, f"conditioning entry {i} has no pooled_output, which {family} models consume",
                       "encode the text with the CLIP of the same checkpoint as the model (CLIP Text Encode)")
        if getattr(pooled, "shape", (None,))[-1] != width:
            raise fail(node_id, f"conditioning entry {i} has a pooled_output {pooled.shape[-1]} wide but {family} "
                                f"models expect {width} (text encoder of another model family)",
                       "encode the text with the CLIP of the same checkpoint as the model")


def _clone_input(module, args):
    return (args[0].clone(),) + tuple(args[1:])


def prepare_for_training(base) -> None:
    """Make a private trainable copy (``nodes.comfy_model.private_model``) differentiable where its family
    needs it: Flux's in-place residual adds (see the module docstring). Idempotent; a no-op elsewhere."""
    if not isinstance(base, comfy.model_base.Flux) or getattr(base, "_imagic_prepared", False):
        return
    net = base.diffusion_model
    for blocks in (getattr(net, "double_blocks", ()), getattr(net, "single_blocks", ())):
        for module in blocks.modules():
            if isinstance(module, torch.nn.LayerNorm):
                module.register_forward_pre_hook(_clone_input)
    base._imagic_prepared = True
