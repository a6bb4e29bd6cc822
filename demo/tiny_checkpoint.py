"""Tiny random-weight checkpoints of real ComfyUI model families, built in memory.

Why this exists: the demo workflows and the tests must run a whole Imagic graph (text encode, sample,
fine-tune, decode) without downloading gigabytes of weights. ``build_tiny_checkpoint`` returns the
same kinds of objects CheckpointLoaderSimple does (ModelPatcher, comfy.sd.CLIP, comfy.sd.VAE), made
from ComfyUI's own classes for that family -- the family's ``supported_models`` config and
``model_base`` class, its text encoder and tokenizer, a TAESD VAE -- only shrunk:

* the diffusion model has few channels and blocks, but the family's real conditioning widths
  (cross-attention context, pooled vector, ADM size), model sampling and latent format;
* the text encoders keep their real hidden widths (they *are* the context width) and vocabularies,
  with few layers and a tiny MLP;
* the VAE is a TAESD with the family's latent channel count and scale/shift.

Weights are random but deterministic in ``seed``: every parameter is drawn from a torch.Generator
(normal, std 1/sqrt(fan_in)), biases are zero, normalisation gains one. Nothing is zero-initialised
that would make the output ignore the text, so the outputs depend on prompt and latent. What such a
model produces is noise: it is for wiring graphs and tests, not for judging edits.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import ClassVar

import torch

import comfy.model_base
import comfy.model_management
import comfy.model_patcher
import comfy.rmsnorm
import comfy.sd
import comfy.supported_models
import comfy.supported_models_base
import comfy.taesd.taesd
import comfy.text_encoders.sd3_clip
from comfy.ldm.modules.diffusionmodules.mmdit import get_2d_sincos_pos_embed
from comfy_api.latest import io

# ---------------------------------------------------------------------------------------------------
# Model configs: tiny subclasses of the real supported_models classes.


class TinySD15(comfy.supported_models.SD15):
    unet_extra_config: ClassVar[dict] = {"num_heads": 4, "num_head_channels": -1}


class TinySD20(comfy.supported_models.SD20):
    unet_extra_config: ClassVar[dict] = {"num_heads": -1, "num_head_channels": 16, "attn_precision": torch.float32}


class TinySD20V(TinySD20):
    # SD20.model_type guesses v-prediction from the spread of a norm bias deep in a full-size UNet,
    # which a tiny random UNet does not have; say it outright, as a v-pred checkpoint would.
    def model_type(self, state_dict, prefix=""):
        return comfy.model_base.ModelType.V_PREDICTION


class TinySDXL(comfy.supported_models.SDXL):
    unet_extra_config: ClassVar[dict] = {"num_heads": -1, "num_head_channels": 16}


class TinySDXLRefiner(comfy.supported_models.SDXLRefiner):
    unet_extra_config: ClassVar[dict] = {"num_heads": -1, "num_head_channels": 16}


class TinySD21UnclipH(comfy.supported_models.SD21UnclipH):
    unet_extra_config: ClassVar[dict] = {"num_heads": -1, "num_head_channels": 16, "attn_precision": torch.float32}

    def model_type(self, state_dict, prefix=""):  # the released unCLIP checkpoints are v-prediction
        return comfy.model_base.ModelType.V_PREDICTION


class TinySD3(comfy.supported_models.SD3):
    pass


class TinyFlux(comfy.supported_models.Flux):
    pass


# UNet keys as comfy.model_detection reads them from an SD-style checkpoint, shrunk: 2 levels of
# 32/64 channels, one res block and one transformer block each.
_UNET = {
    "use_checkpoint": False, "image_size": 32, "in_channels": 4, "out_channels": 4,
    "use_spatial_transformer": True, "legacy": False, "adm_in_channels": None,
    "model_channels": 32, "channel_mult": [1, 2], "num_res_blocks": [1, 1],
    "transformer_depth": [1, 1], "transformer_depth_middle": 1, "transformer_depth_output": [1, 1, 1, 1],
    "use_temporal_attention": False, "use_temporal_resblock": False,
}
_SD3_POS_MAX = 64  # pos_embed grid: latents up to 128x128 (1024 px); the real SD3 uses 192
_SD3_DEPTH = 2  # MMDiT: hidden = 64 * depth, heads = depth


@dataclass(frozen=True)
class _Family:
    config: type  # the tiny supported_models subclass
    unet: dict  # full unet_config, as model_detection would produce it
    # Builds the ClipTarget; default is the config's own clip_target(), as the real loader does.
    clip_target: Callable | None = None
    # Offered by the node; else built by build_tiny_checkpoint for the tests only (the SDXL refiner and SD2.1
    # unCLIP, supported variants; an SD1.5 inpainting model, a family Imagic rejects: nodes/families.py).
    offered: bool = True


_SPECS: dict[str, _Family] = {
    "sd15": _Family(TinySD15, {**_UNET, "context_dim": 768, "use_linear_in_transformer": False}),
    "sd2": _Family(TinySD20, {**_UNET, "context_dim": 1024, "use_linear_in_transformer": True}),
    "sd2v": _Family(TinySD20V, {**_UNET, "context_dim": 1024, "use_linear_in_transformer": True}),
    "sdxl": _Family(TinySDXL, {
        **_UNET, "context_dim": 2048, "use_linear_in_transformer": True,
        "adm_in_channels": 2816, "num_classes": "sequential",
        # like SDXL, no attention at the highest resolution
        "transformer_depth": [0, 1], "transformer_depth_output": [0, 0, 1, 1],
    }),
    "sdxl_refiner": _Family(TinySDXLRefiner, {
        **_UNET, "context_dim": 1280, "use_linear_in_transformer": True,
        "adm_in_channels": 2560, "num_classes": "sequential",
        "transformer_depth": [0, 1], "transformer_depth_output": [0, 0, 1, 1],
    }, offered=False),
    "sd21_unclip": _Family(TinySD21UnclipH, {
        **_UNET, "context_dim": 1024, "use_linear_in_transformer": True,
        "adm_in_channels": 2048, "num_classes": "sequential",
    }, offered=False),
    # in_channels 9: the latent + mask + masked image, as the real sd-v1-5-inpainting
    "sd15_inpaint": _Family(TinySD15, {**_UNET, "in_channels": 9, "context_dim": 768,
                                       "use_linear_in_transformer": False}, offered=False),
    "sd3": _Family(TinySD3, {
        "in_channels": 16, "out_channels": 16, "patch_size": 2, "depth": _SD3_DEPTH, "input_size": None,
        "adm_in_channels": 2048, "pos_embed_scaling_factor": None,
        "context_embedder_config": {"target": "torch.nn.Linear",
                                    "params": {"in_features": 4096, "out_features": 64 * _SD3_DEPTH}},
        "num_patches": _SD3_POS_MAX ** 2, "pos_embed_max_size": _SD3_POS_MAX,
        "x_block_self_attn_layers": [],
    },
        # SD3 with its CLIP-L and CLIP-G and no T5 (like sd3_medium_incl_clips): the CLIP output is
        # zero-padded to the 4096-wide T5 context. A T5 would add a 32128x4096 embedding table.
        clip_target=lambda: comfy.supported_models_base.ClipTarget(
            comfy.text_encoders.sd3_clip.SD3Tokenizer,
            comfy.text_encoders.sd3_clip.sd3_clip(clip_l=True, clip_g=True, t5=False))),
    "flux": _Family(TinyFlux, {
        "image_model": "flux", "in_channels": 16, "out_channels": 16, "patch_size": 2,
        "vec_in_dim": 768, "context_in_dim": 4096, "hidden_size": 64, "mlp_ratio": 4.0, "num_heads": 2,
        "depth": 1, "depth_single_blocks": 1, "axes_dim": [8, 12, 12], "theta": 10000,
        "qkv_bias": True, "guidance_embed": True,
    }),
}
FAMILIES = tuple(name for name, spec in _SPECS.items() if spec.offered)  # the node's choices
EXTRA_FAMILIES = tuple(name for name, spec in _SPECS.items() if not spec.offered)

# Text encoders: real hidden width and vocabulary, few layers (3: SD2/SDXL/SD3 read the penultimate
# one), tiny MLP. ComfyUI merges "<model_name>_model_config" over the shipped JSON config.
_TE_OPTIONS = {
    "dtype": torch.float32,
    **{f"clip_{n}_model_config": {"num_hidden_layers": 3, "intermediate_size": 64} for n in "lhg"},
    "t5xxl_model_config": {"num_layers": 2, "num_heads": 2, "d_ff": 64},
}

# ---------------------------------------------------------------------------------------------------
# Deterministic initialisation.

_NORMS = tuple(t for t in (torch.nn.GroupNorm, torch.nn.LayerNorm, comfy.rmsnorm.RMSNorm) if t is not None)


def part_generator(seed: int, part: int) -> torch.Generator:
    return torch.Generator(device="cpu").manual_seed(seed * 4 + part)


@torch.no_grad()
def init_weights(module: torch.nn.Module, gen: torch.Generator) -> None:
    """Overwrite every parameter (comfy.ops layers start as torch.empty) from ``gen``.

    Matrices/kernels ~ N(0, 1/fan_in); biases 0; other vectors (gains of norms ComfyUI writes
    itself: T5LayerNorm, Flux RMSNorm ...) 1; 0-d constants (logit_scale, vae_scale) keep the value
    their constructor gave. Values are drawn on the CPU and copied, so the device does not matter.
    """
    for name, p in module.named_parameters():
        if p.ndim >= 2:
            std = p[0].numel() ** -0.5
            if p.device.type == "cpu" and p.dtype == torch.float32:  # the common case: no extra copy
                p.normal_(0.0, std, generator=gen)
                continue
            value = torch.empty(p.shape).normal_(0.0, std, generator=gen)
        elif p.ndim == 1:
            value = torch.zeros(p.shape) if name.endswith("bias") else torch.ones(p.shape)
        else:
            continue
        p.copy_(value)
    for m in module.modules():
        if isinstance(m, _NORMS):
            if getattr(m, "weight", None) is not None:
                m.weight.fill_(1.0)
            if getattr(m, "bias", None) is not None:
                m.bias.fill_(0.0)


# ---------------------------------------------------------------------------------------------------
# One builder per part.


def _build_model(spec: _Family, seed: int) -> comfy.model_patcher.ModelPatcher:
    config = spec.config(spec.unet)
    config.set_inference_dtype(torch.float32, None)  # random weights may overflow fp16
    model = config.get_model({})  # what load_state_dict_guess_config does, minus the weights
    init_weights(model, part_generator(seed, 0))
    pos_embed = getattr(model.diffusion_model, "pos_embed", None)
    if isinstance(pos_embed, torch.Tensor):  # MMDiT: an uninitialised buffer, a fixed sin-cos table
        max_size = model.diffusion_model.pos_embed_max_size
        table = get_2d_sincos_pos_embed(pos_embed.shape[-1], max_size)
        with torch.no_grad():
            pos_embed.copy_(torch.from_numpy(table).reshape(pos_embed.shape))
    return comfy.model_patcher.ModelPatcher(
        model,
        load_device=comfy.model_management.get_torch_device(),
        offload_device=comfy.model_management.unet_offload_device(),
    )


def _build_clip(spec: _Family, config, seed: int) -> comfy.sd.CLIP:
    target = spec.clip_target() if spec.clip_target else config.clip_target()
    clip = comfy.sd.CLIP(target, model_options=dict(_TE_OPTIONS))
    init_weights(clip.cond_stage_model, part_generator(seed, 1))
    return clip


def _build_vae(config, seed: int) -> comfy.sd.VAE:
    fmt = config.latent_format
    taesd = comfy.taesd.taesd.TAESD(latent_channels=fmt.latent_channels)
    init_weights(taesd, part_generator(seed, 2))
    sd = taesd.state_dict()
    # As VAELoader does for the real taesd*/taef1 files: map the family's VAE latent to TAESD's.
    sd["vae_scale"] = torch.tensor(float(fmt.scale_factor))
    sd["vae_shift"] = torch.tensor(float(getattr(fmt, "shift_factor", 0.0)))
    return comfy.sd.VAE(sd=sd)


def build_tiny_checkpoint(
    family: str = "sd15", seed: int = 0
) -> tuple[comfy.model_patcher.ModelPatcher, comfy.sd.CLIP, comfy.sd.VAE]:
    """Build (ModelPatcher, CLIP, VAE) of a tiny random-weight ``family`` model; see module docstring."""
    if family not in _SPECS:
        raise ValueError(f"unknown family {family!r}; expected one of {', '.join(FAMILIES + EXTRA_FAMILIES)}")
    spec = _SPECS[family]
    model = _build_model(spec, seed)
    config = model.model.model_config
    return model, _build_clip(spec, config, seed), _build_vae(config, seed)


# ---------------------------------------------------------------------------------------------------
# Node.


class ImagicTinyCheckpoint(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="ImagicTinyCheckpoint",
            display_name="Imagic Tiny Checkpoint (demo)",
            category="Imagic/demo",
            description=(
                "Builds a tiny model of the chosen family with random weights, in memory, without "
                "downloads: the real ComfyUI model, text encoder and (TAESD) VAE classes, shrunk. Use "
                "it to try the graph and in tests; its images and edits are meaningless noise."
            ),
            inputs=[
                io.Combo.Input("family", options=list(FAMILIES), default="sd15",
                               tooltip="Model family to imitate: its conditioning widths, sampling and latent format."),
                # No "control after generate": a loader that re-rolls its seed on every Run would build a new
                # model each time and retrain everything downstream.
                io.Int.Input("seed", default=0, min=0, max=2**31 - 1, control_after_generate=False,
                             tooltip="Seed of the random weights; the same seed gives the same model (it stays as "
                                     "set: nothing re-rolls it between runs)."),
            ],
            outputs=[
                io.Model.Output(tooltip="The tiny diffusion model."),
                io.Clip.Output(tooltip="The tiny text encoder, with the family's real tokenizer."),
                io.Vae.Output(tooltip="A random-weight TAESD with the family's latent channels."),
            ],
        )

    @classmethod
    def execute(cls, family: str, seed: int) -> io.NodeOutput:
        return io.NodeOutput(*build_tiny_checkpoint(family, seed))
