"""A ComfyUI MODEL as a ``core.diffusion.Denoiser``, on a private trainable copy.

ComfyUI caches the MODEL a node receives and shares its weights with every clone; inside the graph
they are inference tensors, which autograd cannot save. So training works on a private copy of the
model as the given MODEL would run (its patches and object patches applied), and never writes to the
given one. Everything model-specific (noise scaling, sigma <-> timestep, parameterisation, latent
scaling, extra conditioning such as SDXL's pooled/size vector) comes from the model itself.
"""
from __future__ import annotations

import copy

import torch

import comfy.ldm.modules.attention
import comfy.model_management

from ..core.precision import Precision
from .errors import fail
from .families import check_family, family_name, prepare_for_training

FP32 = Precision()  # no mixed precision: every weight in float32


def latent_channels(model) -> int | None:
    return getattr(model.get_model_object("latent_format"), "latent_channels", None)


def context_width(model) -> int | None:
    """The conditioning width the diffusion model expects, where its config says it."""
    config = getattr(model.model.model_config, "unet_config", {}) or {}
    for key in ("context_dim", "context_in_dim"):
        if isinstance(config.get(key), int):
            return config[key]
    embedder = config.get("context_embedder_config") or {}
    return (embedder.get("params") or {}).get("in_features")


def check_inputs(node_id: str, model, conditioning: list, latent: dict) -> None:
    """Reject input the Imagic loops cannot use, with the fix, before any work starts."""
    check_family(node_id, model, conditioning)  # an unsupported family, or a pooled_output it cannot use
    if not conditioning:
        raise fail(node_id, "the conditioning input is an empty list",
                   "connect the output of a text encode node (CLIP Text Encode) with the target text")
    samples = latent.get("samples") if isinstance(latent, dict) else None
    if samples is None:
        raise fail(node_id, "the latent input has no 'samples'", "connect a VAE Encode output of the input image")
    if samples.shape[0] != 1:
        raise fail(node_id, f"the latent holds {samples.shape[0]} images; Imagic edits one image at a time",
                   "encode a single image (or pick one with Latent From Batch)")
    if samples.ndim >= 2:
        check_channels(node_id, model, "latent", samples.shape[1])
    if not torch.isfinite(samples).all():
        raise fail(node_id, "the latent contains NaN or infinite values", "re-encode the input image")
    check_width(node_id, model, "conditioning", conditioning, "the target text")


def check_channels(node_id: str, model, name: str, found: int | None) -> None:
    """Refuse latents (of the input ``name``: a latent or a VAE) with another channel count than ``model``'s."""
    expected = latent_channels(model)
    if expected is not None and found is not None and found != expected:
        raise fail(node_id, f"the {name} has {found} channels but this {family_name(model)} model works on "
                            f"{expected}-channel latents (the {name} comes from another model family's VAE)",
                   "encode the image with the VAE of the same checkpoint as the model")


def check_width(node_id: str, model, name: str, conditioning: list, text: str) -> None:
    """Refuse a ``conditioning`` (the input ``name``, encoding ``text``) of another width than ``model`` expects."""
    width = context_width(model)
    for tensor, _ in conditioning:
        if width is not None and tensor.shape[-1] != width:
            raise fail(node_id, f"the {name} input is {tensor.shape[-1]} wide but this {family_name(model)} model "
                                f"expects {width} (text encoder of another model family)",
                       f"encode {text} with the CLIP of the same checkpoint as the model")


def private_model(model, train_weights: bool = False, precision: Precision = FP32):
    """A copy of ``model.model`` (a ComfyUI BaseModel) to train on, on the model's load device, in eval mode,
    every parameter with ``requires_grad`` off (the trainer turns on what it trains).

    The given model is loaded the way a sampler loads it (patches applied by ComfyUI's own mechanism, fully,
    since training touches every layer). With ``train_weights`` the parameters are fp32 copies (master
    weights); otherwise they stay frozen in the dtype ``precision.frozen_dtype`` gives, and a tensor already
    in that dtype is not copied but shared with the given model (no second copy of the weights). Buffers are
    fp32, shared likewise. Nothing of the given model is ever written.
    """
    comfy.model_management.load_models_gpu([model], force_full_load=True)
    source = model.model
    with torch.inference_mode(False):
        memo = {}
        for p in source.parameters():
            dtype = torch.float32 if train_weights else precision.frozen_dtype(p)
            memo[id(p)] = torch.nn.Parameter(_private_tensor(p, dtype, share=not train_weights), requires_grad=False)
        for b in source.buffers():
            memo[id(b)] = _private_tensor(b, torch.float32 if b.is_floating_point() else b.dtype, share=True)
        base = copy.deepcopy(source, memo)  # the module tree, with the tensors above in place of the source's
    base.eval()
    for module in base.modules():  # the weights are in their compute dtype now: plain torch forwards
        if hasattr(module, "comfy_cast_weights"):
            module.comfy_cast_weights = False
    if hasattr(base.diffusion_model, "dtype"):
        base.diffusion_model.dtype = torch.float32
    base.manual_cast_dtype = None
    prepare_for_training(base)  # e.g. Flux: in-place residual adds autograd cannot run through
    return base


def _private_tensor(t: torch.Tensor, dtype: torch.dtype, share: bool) -> torch.Tensor:
    """``t`` in ``dtype`` as a normal (non-inference) tensor: shared storage where allowed and the dtype
    matches, else a copy. ComfyUI's weights are inference tensors, which autograd cannot save for backward;
    a tensor set to the same storage is a normal tensor reading the same memory (frozen: never written)."""
    if share and t.dtype == dtype:
        return torch.empty(0, dtype=dtype, device=t.device).set_(t.untyped_storage(), t.storage_offset(), t.shape,
                                                                t.stride())
    return t.detach().to(dtype, copy=True)


def release_device_memory(device: torch.device) -> None:
    """Unload ComfyUI's cached models from ``device`` (an accelerator): during training only the private copy
    runs there; ComfyUI reloads what it needs afterwards."""
    if device.type != "cpu":
        comfy.model_management.unload_all_models()
        comfy.model_management.soft_empty_cache()


def model_kwargs(base, entry: dict, x: torch.Tensor) -> dict:
    """The keyword arguments ComfyUI's sampler passes to ``apply_model`` for one conditioning entry.

    Built with the model's own ``extra_conds`` (as ``comfy.samplers.encode_model_conds`` does), so the
    tensors in ``entry`` keep their autograd graph into the model.
    """
    params = dict(entry)
    params.update(device=x.device, noise=x, prompt_type="positive")
    params.setdefault("width", x.shape[-1] * 8)
    params.setdefault("height", x.shape[-2] * 8)
    out = base.extra_conds(**params)
    return {k: v.process_cond(batch_size=x.shape[0], device=x.device, area=None).concat([]) for k, v in out.items()}


def _sdpa(attention, *args, **kwargs):
    """ComfyUI's attention override: PyTorch's scaled_dot_product_attention, whatever ComfyUI picked for
    sampling (on a CPU it picks sub-quadratic attention, which is slower; sage attention has no backward)."""
    return comfy.ldm.modules.attention.attention_pytorch(*args, **kwargs)


class ComfyDenoiser:
    """``core.diffusion.Denoiser`` over a ComfyUI BaseModel (normally a ``private_model`` copy)."""

    def __init__(self, base):
        self.base = base
        self.sampling = base.model_sampling
        # sigma draws happen on the CPU: reading a value from the device copy would wait for the device
        self.cpu_sampling = copy.deepcopy(base.model_sampling).to("cpu")

    def add_noise(self, x0, noise, sigma):
        return self.sampling.noise_scaling(sigma, noise, x0)

    def predict_x0(self, x_t, sigma, cond):
        options = {"optimized_attention_override": _sdpa}
        return self.base.apply_model(x_t, sigma, transformer_options=options, **model_kwargs(self.base, cond, x_t))

    def output_scale(self, sigma, like):
        ones = torch.ones((sigma.shape[0],) + (1,) * (like.ndim - 1), device=like.device, dtype=torch.float32)
        return self.sampling.calculate_denoised(sigma.float(), ones, torch.zeros_like(ones))

    def sample_sigmas(self, n, generator):
        # Uniform over the model's own timestep range (the paper's t ~ U{1..T}), ends excluded.
        u = torch.rand(n, generator=generator, dtype=torch.float64) * 0.998 + 0.001
        return torch.tensor([self.cpu_sampling.percent_to_sigma(float(p)) for p in u], dtype=torch.float32)


def clean_latent(base, latent: dict, device) -> torch.Tensor:
    """The input image's latent in the model's own space (its latent_format, e.g. SD1's scale factor)."""
    return base.process_latent_in(latent["samples"].to(device, torch.float32).clone())
