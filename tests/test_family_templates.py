"""The per-family edit templates (SDXL, SD3, Flux; cli/family_templates.py builds them from imagic_edit.json):
each validates against the live node definitions and runs through the real executor with its loaders swapped
for the tiny model of its family; the saved edit depends on the target text."""
from __future__ import annotations

import json

import numpy as np
import pytest

from conftest import HOST, NO_HOST
from pack import ROOT, sub
from test_workflows import assert_success, saved_images
from workflow_env import TEST_IMAGE, api_prompt, load

host = pytest.mark.skipif(HOST is None, reason=NO_HOST)
FAMILIES = {"sdxl": "imagic_edit_sdxl", "sd3": "imagic_edit_sd3", "flux": "imagic_edit_flux"}
SEPARATE = {"DualCLIPLoader": 1, "TripleCLIPLoader": 1, "VAELoader": 2}  # -> the tiny node's CLIP / VAE slot


def on_tiny(prompt: dict, family: str, text: str) -> dict:
    """The prompt on the tiny ``family`` model (every loader swapped), the test photo, 64 px, 2 steps."""
    (loader,) = [i for i, n in prompt.items() if n["class_type"] in ("CheckpointLoaderSimple", "UNETLoader")]
    swapped = {i: n for i, n in prompt.items() if n["class_type"] in SEPARATE}
    out = {}
    for node_id, node in prompt.items():
        if node_id in swapped:
            continue
        if node_id == loader:
            node = {"class_type": "ImagicTinyCheckpoint", "inputs": {"family": family, "seed": 0}}
        inputs = {}
        for name, value in node["inputs"].items():
            if isinstance(value, list) and value[0] in swapped:
                value = [loader, SEPARATE[swapped[value[0]]["class_type"]]]
            inputs[name] = value
        out[node_id] = {**node, "inputs": inputs}
    tiny_prompt = sub("demo.tiny_prompt")
    out = tiny_prompt.shrink(out, size=64, train_steps=2, sample_steps=2)
    for node in out.values():
        if node["class_type"] == "LoadImage":
            node["inputs"]["image"] = TEST_IMAGE
    out["8"]["inputs"]["text"] = text  # the target text (CLIPTextEncode feeding A and C)
    return out


def test_templates_are_built_from_imagic_edit_as_committed():
    """The committed files are what cli/family_templates.py makes (no hand edit drifts from the generator)."""
    build = sub("cli.family_templates").build
    for family, name in FAMILIES.items():
        assert json.loads((ROOT / "workflows" / f"{name}.json").read_text(encoding="utf-8")) == build(family), name


def test_template_choice_per_family():
    choose = sub("cli.family_templates").template_for_family
    assert [choose(f) for f in ("sd15", "sd2", "sd2v", "sdxl", "sdxl_refiner", "sd3", "flux")] == [
        "imagic_edit", "imagic_edit", "imagic_edit", "imagic_edit_sdxl", "imagic_edit_sdxl", "imagic_edit_sd3",
        "imagic_edit_flux"]
    with pytest.raises(ValueError, match="no Imagic template"):
        choose("cascade")


def test_each_template_says_which_settings_are_measured():
    for name in FAMILIES.values():
        notes = " ".join(n["widgets_values"][0] for n in load(name)["nodes"] if n["type"] == "MarkdownNote")
        assert "starting points" in notes and "measured" in notes and "1024" in notes, name


@pytest.fixture(scope="module")
def object_info(workflow_server):
    return workflow_server.get("/object_info")


@host
@pytest.mark.parametrize("family", list(FAMILIES))
def test_template_validates_and_runs_on_its_tiny_model(workflow_server, object_info, family):
    prompt = api_prompt(load(FAMILIES[family]), object_info)
    status, body = workflow_server.post_status("/prompt", {"prompt": prompt, "client_id": "imagic-validate"})
    assert status == 200 and body.get("node_errors") == {}, body
    edits = []
    for text in ("a photo of a red car", "a watercolour of a mountain lake at night"):
        result = workflow_server.run_prompt(on_tiny(prompt, family, text))
        assert_success(result)
        images = {img.size: np.asarray(img.convert("RGB"), dtype=np.float32)
                  for img in saved_images(workflow_server, result)}
        edits.append(images[(64, 64)])
    assert np.abs(edits[0] - edits[1]).mean() > 0.5, "the edit does not depend on the target text"
