"""demo/tiny_checkpoint.py: real ComfyUI objects of each family, with the family's conditioning
widths, deterministic weights, outputs that depend on the text and the latent, a working VAE, and
the node running in ComfyUI's executor."""
from __future__ import annotations

import uuid
from pathlib import Path

import pytest
import torch

from pack import sub

# family: (model_base class, supported_models class, model type, context width, pooled width, latent channels)
EXPECTED = {
    "sd15": ("BaseModel", "SD15", "EPS", 768, 768, 4),
    "sd2": ("BaseModel", "SD20", "EPS", 1024, 1024, 4),
    "sd2v": ("BaseModel", "SD20", "V_PREDICTION", 1024, 1024, 4),
    "sdxl": ("SDXL", "SDXL", "EPS", 2048, 1280, 4),
    "sd3": ("SD3", "SD3", "FLOW", 4096, 2048, 16),
    "flux": ("Flux", "Flux", "FLUX", 4096, 768, 16),
}


@pytest.fixture(scope="module")
def tc(comfy):
    return sub("demo.tiny_checkpoint")


def _build(tc, family, seed=0):
    with torch.inference_mode():  # as ComfyUI's executor runs nodes
        return tc.build_tiny_checkpoint(family, seed)


@pytest.fixture(scope="module", params=list(EXPECTED))
def built(request, tc):
    return request.param, _build(tc, request.param)


def _encode(clip, text):
    import nodes

    with torch.inference_mode():
        return nodes.CLIPTextEncode().encode(clip, text)[0]


def _sample(model, cond, latent, noise_seed=1):
    import comfy.sample

    noise = torch.randn(latent.shape, generator=torch.Generator().manual_seed(noise_seed))
    with torch.inference_mode():
        # 2 of 4 steps (denoise 0.5), so the input latent survives into the first step for flow models too
        return comfy.sample.sample(model, noise, 4, 1.0, "euler", "normal", cond, cond, latent,
                                   denoise=0.5, disable_pbar=True, seed=noise_seed)


def _state(model, clip, vae):
    return {"model": model.model.state_dict(), "clip": clip.cond_stage_model.state_dict(),
            "vae": vae.first_stage_model.state_dict()}


def test_families(tc):
    assert tc.FAMILIES == tuple(EXPECTED)
    with pytest.raises(ValueError):
        tc.build_tiny_checkpoint("sd9")


def test_real_comfy_objects(built):
    import comfy.model_base
    import comfy.model_patcher
    import comfy.sd
    import comfy.supported_models

    family, (model, clip, vae) = built
    base_cls, config_cls, model_type, *_ = EXPECTED[family]
    real_config = getattr(comfy.supported_models, config_cls)
    assert isinstance(model, comfy.model_patcher.ModelPatcher)
    assert isinstance(clip, comfy.sd.CLIP) and isinstance(vae, comfy.sd.VAE)
    assert type(model.model) is getattr(comfy.model_base, base_cls)
    assert isinstance(model.model.model_config, real_config)
    assert model.model.model_type == getattr(comfy.model_base.ModelType, model_type)
    assert type(model.model.latent_format) is real_config.latent_format
    assert model.model.get_dtype() == torch.float32


def test_conditioning_widths(built):
    family, (model, clip, _) = built
    *_, context, pooled, _ = EXPECTED[family]
    cond = _encode(clip, "a photo of a cat")
    assert len(cond) == 1
    tensor, extra = cond[0]
    assert tensor.ndim == 3 and tensor.shape[0] == 1 and tensor.shape[-1] == context
    assert extra["pooled_output"].shape == (1, pooled)
    # ...and the diffusion model takes exactly these widths
    unet = model.model.model_config.unet_config
    takes = {"sd3": lambda: unet["context_embedder_config"]["params"]["in_features"],
             "flux": lambda: unet["context_in_dim"]}.get(family, lambda: unet["context_dim"])()
    assert takes == context
    if family in ("sdxl", "sd3"):
        assert unet["adm_in_channels"] == (pooled + 6 * 256 if family == "sdxl" else pooled)
    if family == "flux":
        assert unet["vec_in_dim"] == pooled


def test_deterministic(built, tc):
    family, first = built
    same, other = _build(tc, family, 0), _build(tc, family, 1)
    a, b, c = _state(*first), _state(*same), _state(*other)
    for part in a:
        assert a[part].keys() == b[part].keys()
        assert all(torch.equal(a[part][k], b[part][k]) for k in a[part]), f"{family} {part} not reproducible"
        assert any(not torch.equal(a[part][k], c[part][k]) for k in a[part]), f"{family} {part} ignores the seed"


def test_output_depends_on_text_and_latent(built):
    family, (model, clip, _) = built
    channels = EXPECTED[family][-1]
    latent = torch.zeros(1, channels, 8, 8)
    other_latent = torch.randn(latent.shape, generator=torch.Generator().manual_seed(7))
    cat, dog = _encode(clip, "a photo of a cat"), _encode(clip, "a watercolor of a dog on a boat")
    out = _sample(model, cat, latent)
    assert out.shape == latent.shape and torch.isfinite(out).all()
    assert torch.equal(out, _sample(model, cat, latent))  # reproducible
    scale = out.abs().mean()
    assert (out - _sample(model, dog, latent)).abs().mean() > 1e-3 * scale, "output ignores the text"
    assert (out - _sample(model, cat, other_latent)).abs().mean() > 1e-3 * scale, "output ignores the latent"


def test_vae_encode_decode(built):
    import nodes

    family, (_, _, vae) = built
    image = torch.rand(1, 64, 64, 3, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        latent = nodes.VAEEncode().encode(vae, image)[0]["samples"]
        decoded = nodes.VAEDecode().decode(vae, {"samples": latent})[0]
    assert latent.shape == (1, EXPECTED[family][-1], 8, 8) and torch.isfinite(latent).all()
    assert decoded.shape == (1, 64, 64, 3) and 0 <= decoded.min() and decoded.max() <= 1


def test_node_schema(tc):
    schema = tc.ImagicTinyCheckpoint.define_schema()
    assert schema.node_id == "ImagicTinyCheckpoint" and schema.category == "Imagic/demo"
    assert schema.description
    assert [i.id for i in schema.inputs] == ["family", "seed"]
    assert list(schema.inputs[0].options) == list(tc.FAMILIES)
    assert all(p.tooltip for p in schema.inputs + schema.outputs)
    assert len(schema.outputs) == 3


# Nodes that produce a model from nothing but widgets: none of their inputs may re-roll between runs.
LOADERS = ("ImagicTinyCheckpoint", "ImagicLoadFinetune", "ImagicShapesCheckpoint")


def test_no_loader_input_rerolls_by_itself(comfy):
    """The frontend (1.27, widgets/useIntWidget) adds "control after generate" (default randomize) to an INT
    input when its object_info says control_after_generate, or says nothing and the input is named seed or
    noise_seed; a re-rolled loader seed builds a new model and retrains everything after it."""
    info = sub("cli.workflow_api").object_info_in_process(LOADERS)
    assert "ImagicTinyCheckpoint" in info and "ImagicLoadFinetune" in info
    for node, entry in info.items():
        for section in ("required", "optional"):
            for name, spec in entry["input"].get(section, {}).items():
                options = spec[1] if len(spec) > 1 and isinstance(spec[1], dict) else {}
                control = options.get("control_after_generate", name in ("seed", "noise_seed"))
                assert control is False, f"{node}.{name} gets a control-after-generate widget"


@pytest.mark.parametrize("family", ["sd15", "flux"])
def test_runs_in_comfy_executor(comfy, family):
    import folder_paths

    prefix = f"imagic_tiny_{family}_{uuid.uuid4().hex[:8]}"
    prompt = {
        "1": {"class_type": "ImagicTinyCheckpoint", "inputs": {"family": family, "seed": 3}},
        "2": {"class_type": "CLIPTextEncode", "inputs": {"text": "a cat", "clip": ["1", 1]}},
        "3": {"class_type": "CLIPTextEncode", "inputs": {"text": "", "clip": ["1", 1]}},
        "4": {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 1}},
        "5": {"class_type": "KSampler", "inputs": {
            "seed": 0, "steps": 2, "cfg": 2.0, "sampler_name": "euler", "scheduler": "normal", "denoise": 1.0,
            "model": ["1", 0], "positive": ["2", 0], "negative": ["3", 0], "latent_image": ["4", 0]}},
        "6": {"class_type": "VAEDecode", "inputs": {"samples": ["5", 0], "vae": ["1", 2]}},
        "7": {"class_type": "SaveImage", "inputs": {"images": ["6", 0], "filename_prefix": prefix}},
    }
    comfy.run(prompt)
    assert list(Path(folder_paths.get_output_directory()).glob(f"{prefix}_*.png"))
