"""The same SD1.5-style UNet twice, with the same random weights: as diffusers' ``UNet2DConditionModel``
(for the reference) and as ComfyUI's model (``comfy.supported_models.SD15`` + its ``unet_config``, wrapped in a
ModelPatcher the way a checkpoint loader returns it).

``sd15`` is Stable Diffusion 1.5's real architecture (860M parameters); ``mini`` is the same layout shrunk, for
the smoke test. Weights come from diffusers' default initialisation under a fixed seed and are mapped into
ComfyUI's layout with ComfyUI's own key map, so both sides compute the same function (``check_same_output``).
"""
from __future__ import annotations

import torch

DIFFUSERS_CONFIGS = {
    # Stable Diffusion 1.5's unet/config.json (the values that differ from diffusers' defaults included).
    "sd15": dict(sample_size=64, in_channels=4, out_channels=4, layers_per_block=2,
                 block_out_channels=(320, 640, 1280, 1280), cross_attention_dim=768, attention_head_dim=8,
                 down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
                 up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3),
    "mini": dict(sample_size=8, in_channels=4, out_channels=4, layers_per_block=1,
                 block_out_channels=(32, 64), cross_attention_dim=768, attention_head_dim=8,
                 down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
                 up_block_types=("UpBlock2D", "CrossAttnUpBlock2D")),
}
CONTEXT_TOKENS = 77  # CLIP-L: 77 tokens of width cross_attention_dim


def comfy_unet_config(cfg: dict) -> dict:
    """ComfyUI's ``unet_config`` for an SD1.5-style diffusers config (for ``sd15`` it equals the dict
    ``comfy.model_detection`` detects from an SD1.5 checkpoint)."""
    base, levels, layers = cfg["block_out_channels"][0], len(cfg["block_out_channels"]), cfg["layers_per_block"]
    attn = [int(t.startswith("CrossAttn")) for t in cfg["down_block_types"]]
    return {
        "use_checkpoint": False, "image_size": 32, "out_channels": cfg["out_channels"], "use_spatial_transformer": True,
        "legacy": False, "adm_in_channels": None, "in_channels": cfg["in_channels"], "model_channels": base,
        "num_res_blocks": [layers] * levels, "transformer_depth": [a for a in attn for _ in range(layers)],
        "channel_mult": [c // base for c in cfg["block_out_channels"]], "transformer_depth_middle": 1,
        "use_linear_in_transformer": False, "context_dim": cfg["cross_attention_dim"],
        "num_heads": cfg["attention_head_dim"],
        "transformer_depth_output": [a for a in attn for _ in range(layers + 1)],
        "use_temporal_attention": False, "use_temporal_resblock": False,
    }


def diffusers_unet(name: str, seed: int):
    """diffusers' UNet2DConditionModel of ``name`` with its default random initialisation under ``seed`` (fp32)."""
    from diffusers import UNet2DConditionModel

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return UNet2DConditionModel(**DIFFUSERS_CONFIGS[name])


def comfy_model(name: str, seed: int, device: torch.device):
    """ComfyUI's SD15 model (a ModelPatcher, as CheckpointLoaderSimple gives) with the weights of
    ``diffusers_unet(name, seed)``, stored in the dtype ComfyUI picks for the device (fp16 on most GPUs)."""
    import comfy.model_management as mm
    import comfy.model_patcher
    import comfy.supported_models
    import comfy.utils

    unet_config = comfy_unet_config(DIFFUSERS_CONFIGS[name])
    source = diffusers_unet(name, seed).state_dict()
    weights = {comfy_key: source.pop(key) for key, comfy_key in comfy.utils.unet_to_diffusers(unet_config).items()
               if key in source}
    if source:
        raise RuntimeError(f"diffusers weights without a ComfyUI key: {sorted(source)[:5]}")
    config = comfy.supported_models.SD15(unet_config)
    params = sum(v.numel() for v in weights.values())
    dtype = mm.unet_dtype(device, params, config.supported_inference_dtypes)
    config.set_inference_dtype(dtype, mm.unet_manual_cast(dtype, device, config.supported_inference_dtypes))
    model = config.get_model({})
    missing, unexpected = model.diffusion_model.load_state_dict(weights, strict=False)
    if missing or unexpected:
        raise RuntimeError(f"weights do not fit ComfyUI's SD15 model: missing {missing[:5]}, "
                           f"unexpected {unexpected[:5]}")
    return comfy.model_patcher.ModelPatcher(model, load_device=device, offload_device=mm.unet_offload_device())


def sd15_matches_comfy_detection() -> bool:
    """The ``sd15`` config mapped here is the one ComfyUI detects for SD1.5 checkpoints."""
    import comfy.model_detection

    detected = comfy.model_detection.unet_config_from_diffusers_unet(diffusers_unet_shapes("sd15"))
    expected = comfy_unet_config(DIFFUSERS_CONFIGS["sd15"])
    return detected is not None and all(detected.get(k) == v for k, v in expected.items())


def diffusers_unet_shapes(name: str) -> dict:
    """The state dict of ``name`` as meta tensors (shapes only, no memory)."""
    from diffusers import UNet2DConditionModel

    with torch.device("meta"):
        return UNet2DConditionModel(**DIFFUSERS_CONFIGS[name]).state_dict()
