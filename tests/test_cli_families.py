"""cli/edit.py per model family (issue 24 item 3): the family told from a .safetensors file's header alone by
ComfyUI's own model detection (cli/model_family.py), the workflow it picks (imagic_edit, imagic_edit_sdxl,
imagic_edit_sd3, imagic_edit_flux; cli/family_templates.template_for_family), the model files set on that workflow's
loaders (--ckpt, --unet, --clip, --vae), and one clear line for a file that does not fit.

SD 1.x/2.x and SDXL files are written as a header only, from the real architectures built on torch's meta device:
the detection reads no weight (there is none in the file) and ComfyUI does not take the tiny UNets for SDXL. SD3
and Flux are the tiny models of demo/tiny_checkpoint.py, saved for real."""
from __future__ import annotations

import copy
import json
import math
import struct

import pytest

from conftest import HOST, NO_HOST
from pack import ROOT, sub

pytestmark = pytest.mark.skipif(HOST is None, reason=NO_HOST)

# comfy/model_detection.py's own configs of the released UNets (unet_config_from_diffusers_unet)
_SD_UNET = {"use_checkpoint": False, "image_size": 32, "out_channels": 4, "use_spatial_transformer": True,
            "legacy": False, "adm_in_channels": None, "in_channels": 4, "model_channels": 320,
            "num_res_blocks": [2, 2, 2, 2], "transformer_depth": [1, 1, 1, 1, 1, 1, 0, 0], "channel_mult": [1, 2, 4, 4],
            "transformer_depth_middle": 1, "transformer_depth_output": [1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0],
            "use_temporal_attention": False, "use_temporal_resblock": False}
UNETS = {
    "sd15": {**_SD_UNET, "use_linear_in_transformer": False, "context_dim": 768, "num_heads": 8},
    "sd2": {**_SD_UNET, "use_linear_in_transformer": True, "context_dim": 1024, "num_head_channels": 64},
    "sdxl": {**_SD_UNET, "num_classes": "sequential", "adm_in_channels": 2816, "num_res_blocks": [2, 2, 2],
             "transformer_depth": [0, 0, 2, 2, 10, 10], "channel_mult": [1, 2, 4], "transformer_depth_middle": 10,
             "use_linear_in_transformer": True, "context_dim": 2048, "num_head_channels": 64,
             "transformer_depth_output": [0, 0, 0, 2, 2, 2, 10, 10, 10]},
}


def header_only(path, shapes: dict):
    """A .safetensors header naming ``shapes`` (fp16) with no tensor data after it."""
    table, offset = {}, 0
    for name, shape in shapes.items():
        size = 2 * math.prod(shape)
        table[name] = {"dtype": "F16", "shape": list(shape), "data_offsets": [offset, offset + size]}
        offset += size
    text = json.dumps(table).encode()
    path.write_bytes(struct.pack("<Q", len(text)) + text)
    return path


@pytest.fixture(scope="module")
def files(comfy, tmp_path_factory):
    """One file per family: header-only SD 1.5, SD 2 and SDXL checkpoints, the tiny SD3 checkpoint, the tiny Flux
    diffusion model alone, a file with no model (a LoRA's keys) and one that is not a .safetensors file."""
    import safetensors.torch
    import torch

    import comfy.ldm.modules.diffusionmodules.openaimodel as openaimodel
    import comfy.ops

    folder = tmp_path_factory.mktemp("families")
    out = {}
    for family, config in UNETS.items():
        with torch.device("meta"):
            unet = openaimodel.UNetModel(**config, operations=comfy.ops.disable_weight_init)
        shapes = {f"model.diffusion_model.{k}": tuple(v.shape) for k, v in unet.state_dict().items()}
        shapes["first_stage_model.decoder.conv_out.weight"] = (3, 128, 3, 3)
        out[family] = header_only(folder / f"{family}_model.safetensors", shapes)
    tiny = sub("demo.tiny_checkpoint")
    for family, prefix in (("sd3", "model.diffusion_model."), ("flux", "")):
        weights = tiny.build_tiny_checkpoint(family, 0)[0].model.diffusion_model.state_dict()
        out[family] = folder / f"{family}_model.safetensors"
        safetensors.torch.save_file({prefix + k: v.contiguous() for k, v in weights.items()}, out[family])
    out["lora"] = header_only(folder / "a_lora.safetensors", {
        f"lora_unet_down_blocks_0_attentions_0_proj_in.{k}": (4, 4) for k in ("lora_up.weight", "lora_down.weight")})
    out["broken"] = folder / "broken.safetensors"
    out["broken"].write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json")
    out["pickled"] = folder / "old_model.ckpt"  # never opened: a pickle is not unpickled to look
    out["pickled"].write_bytes(b"not read")
    for name in ("clip_l", "clip_g", "t5xxl", "ae"):  # the text encoders and VAE, by name only
        out[name] = folder / f"{name}.safetensors"
        out[name].touch()
    return out


def test_family_is_told_from_the_header_by_comfyuis_detection(files):
    detect, choose = sub("cli.model_family").detect, sub("cli.family_templates").template_for_family
    found = {name: detect(files[name]) for name in ("sd15", "sd2", "sdxl", "sd3", "flux", "lora")}
    assert {k: (v.family, v.config, v.checkpoint) for k, v in found.items() if v} == {
        "sd15": ("sd15", "SD15", True), "sd2": ("sd2", "SD20", True), "sdxl": ("sdxl", "SDXL", True),
        "sd3": ("sd3", "SD3", True), "flux": ("flux", "Flux", False)}
    assert found["lora"] is None
    assert [choose(found[k].family) for k in ("sd15", "sd2", "sdxl", "sd3", "flux")] == [
        "imagic_edit", "imagic_edit", "imagic_edit_sdxl", "imagic_edit_sd3", "imagic_edit_flux"]
    with pytest.raises(sub("cli.edit_inputs").InputError, match="cannot read .*broken.safetensors as a .safetensors"):
        detect(files["broken"])


@pytest.fixture
def session(comfy, tmp_path):
    """cli/headless.Headless in this process (ComfyUI is booted already); ComfyUI's model folders as they were
    after the test (the command adds the folders of the files it is given)."""
    import folder_paths

    before = copy.deepcopy(folder_paths.folder_names_and_paths)
    yield sub("cli.headless").Headless(HOST, tmp_path, cpu=True)
    folder_paths.folder_names_and_paths.clear()
    folder_paths.folder_names_and_paths.update(before)
    folder_paths.filename_list_cache.clear()


def prompt_for(session, *args):
    edit = sub("cli.edit")
    return edit.build_prompt(session, edit.parse_args(["--image", "x.png", "--text", "t", *map(str, args)]))


def inputs_of(prompt: dict, class_type: str) -> list[dict]:
    return [n["inputs"] for n in prompt.values() if n["class_type"] == class_type]


def test_each_family_runs_its_own_template_with_the_files_given(session, files):
    sd15 = prompt_for(session, "--ckpt", files["sd15"])
    assert inputs_of(sd15, "CheckpointLoaderSimple") == [{"ckpt_name": "sd15_model.safetensors"}]
    assert inputs_of(sd15, "KSampler")[0]["steps"] == 50 and inputs_of(sd15, "ImageScale")[0]["width"] == 512
    pickled = prompt_for(session, "--ckpt", files["pickled"])  # a .ckpt is not opened: the SD 1.x/2.x workflow
    assert inputs_of(pickled, "CheckpointLoaderSimple") == [{"ckpt_name": "old_model.ckpt"}]
    assert inputs_of(pickled, "KSampler")[0]["steps"] == 50
    sdxl = prompt_for(session, "--ckpt", files["sdxl"])
    assert inputs_of(sdxl, "CheckpointLoaderSimple") == [{"ckpt_name": "sdxl_model.safetensors"}]
    assert inputs_of(sdxl, "KSampler")[0]["steps"] == 25 and inputs_of(sdxl, "ImageScale")[0]["width"] == 1024
    sd3 = prompt_for(session, "--ckpt", files["sd3"], "--clip", files["clip_l"], files["clip_g"], files["t5xxl"])
    assert inputs_of(sd3, "TripleCLIPLoader") == [{"clip_name1": "clip_l.safetensors",
                                                   "clip_name2": "clip_g.safetensors",
                                                   "clip_name3": "t5xxl.safetensors"}]
    assert inputs_of(sd3, "ModelSamplingSD3") and inputs_of(sd3, "KSampler")[0]["steps"] == 28
    flux = prompt_for(session, "--unet", files["flux"], "--clip", files["clip_l"], files["t5xxl"], "--vae",
                      files["ae"], "--size", 256)
    assert inputs_of(flux, "UNETLoader")[0]["unet_name"] == "flux_model.safetensors"
    assert {k: v for k, v in inputs_of(flux, "DualCLIPLoader")[0].items() if k.startswith("clip")} == {
        "clip_name1": "clip_l.safetensors", "clip_name2": "t5xxl.safetensors"}
    assert inputs_of(flux, "VAELoader") == [{"vae_name": "ae.safetensors"}] and inputs_of(flux, "FluxGuidance")
    assert inputs_of(flux, "ImageScale")[0]["width"] == 256 and not inputs_of(flux, "CheckpointLoaderSimple")


@pytest.mark.parametrize("case", ["flux in --ckpt", "no model", "sdxl in --unet", "sd3 without its encoders",
                                  "--clip for sd15", "too few --clip", "--mask with sdxl",
                                  "masked workflow without --mask", "--mask with a workflow without a mask"])
def test_a_file_or_workflow_that_does_not_fit_is_one_clear_error(session, files, tmp_path, case):
    masked = ROOT / "workflows" / "imagic_edit_masked.json"
    args, words = {
        "flux in --ckpt": (["--ckpt", files["flux"]], ["is Flux's diffusion model alone", "--unet",
                                                       "--clip clip_l.safetensors t5xxl_fp16.safetensors",
                                                       "--vae ae.safetensors"]),
        "no model": (["--ckpt", files["lora"]], ["finds no diffusion model", "a LoRA, a VAE or a text encoder?"]),
        "sdxl in --unet": (["--unet", files["sdxl"]], ["is a SDXL model, not Flux", "with --ckpt"]),
        "sd3 without its encoders": (["--ckpt", files["sd3"]], ["text encoder not found: clip_l.safetensors",
                                                               "pass --clip"]),
        "--clip for sd15": (["--ckpt", files["sd15"], "--clip", files["clip_l"]], ["--clip has no use"]),
        "too few --clip": (["--ckpt", files["sd3"], "--clip", files["clip_l"]],
                           ["--clip takes 3 file(s)", "TripleCLIPLoader", "not 1"]),
        "--mask with sdxl": (["--ckpt", files["sdxl"], "--mask", tmp_path / "m.png"],
                             ["--mask runs workflows/imagic_edit_masked.json", "this model is sdxl"]),
        "masked workflow without --mask": (["--ckpt", files["sd15"], "--workflow", masked],
                                           ["this workflow edits inside a mask", "give the mask with --mask FILE"]),
        "--mask with a workflow without a mask": (["--ckpt", files["sd15"], "--mask", tmp_path / "m.png",
                                                   "--workflow", masked.with_name("imagic_edit.json")],
                                                  ["--mask needs a workflow with one Load Image (as Mask)",
                                                   "this one has 0"]),
    }[case]
    with pytest.raises(sub("cli.edit_inputs").InputError) as error:
        prompt_for(session, *args)
    assert all(w in str(error.value) for w in words), str(error.value)


def test_cli_names_what_to_pass_for_a_flux_file_and_writes_nothing(files, tmp_path):
    from graphs import write_input_image
    from test_cli import run_edit

    photo = tmp_path / write_input_image(tmp_path, "photo.png")
    out = tmp_path / "out"
    result = run_edit("--image", photo, "--text", "a dog", "--ckpt", files["flux"], "--out", out, cwd=tmp_path)
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2 and len(lines) == 1, result.stderr[-2000:]
    assert lines[0].startswith("imagic-edit: error: --ckpt ") and "--unet" in lines[0] and "--vae" in lines[0]
    assert result.stdout == "" and not out.exists()
