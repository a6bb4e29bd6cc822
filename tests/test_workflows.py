"""The shipped workflows (workflows/*.json): well-formed frontend files with notes, served as templates by the
real server, valid against its live /object_info once converted to API format (ComfyUI's own validation of
/prompt), and run through /prompt on the tiny model."""
from __future__ import annotations

import json
import uuid

import numpy as np
import pytest
from PIL import Image

from conftest import HOST, NO_HOST
from pack import ROOT, sub
from workflow_env import NAMES, api_prompt, load, named_files, tiny

SD15 = "v1-5-pruned-emaonly.safetensors"
STITCH_GAP = 8  # the spacing_width of the workflows' Image Stitch nodes
GRID = sub("core.grid")
host = pytest.mark.skipif(HOST is None, reason=NO_HOST)


def notes_text(workflow: dict) -> str:
    return "\n".join(n["widgets_values"][0] for n in workflow["nodes"] if n["type"] in ("Note", "MarkdownNote"))


def nodes(workflow: dict, node_type: str) -> list[dict]:
    return [n for n in workflow["nodes"] if n["type"] == node_type]


# ---------------------------------------------------------------------------------------------------------------
# The files themselves (no host needed).


@pytest.mark.parametrize("name", NAMES)
def test_workflow_is_a_frontend_file_with_consistent_links(name):
    workflow = load(name)
    assert workflow["version"] == 0.4 and uuid.UUID(workflow["id"])
    by_id = {n["id"]: n for n in workflow["nodes"]}
    assert len(by_id) == len(workflow["nodes"]) and workflow["last_node_id"] >= max(by_id)
    for link_id, origin, origin_slot, target, target_slot, kind in workflow["links"]:
        assert link_id in by_id[origin]["outputs"][origin_slot]["links"]
        target_input = by_id[target]["inputs"][target_slot]
        assert target_input["link"] == link_id and target_input["type"] in (kind, "*")
    for node in workflow["nodes"]:
        assert {"pos", "size", "mode", "widgets_values"} <= set(node), node["type"]
    assert workflow["groups"] and all(len(g["bounding"]) == 4 for g in workflow["groups"])


@pytest.mark.parametrize("name", NAMES)
def test_notes_say_which_checkpoint_the_workflow_expects(name):
    workflow = load(name)
    text = notes_text(workflow)
    checkpoints = {f for kind, files in named_files(workflow).items() if kind != "input" for f in files}
    if name == "imagic_demo_shapes":  # the built-in model: nothing to download, and the notes say so
        assert not checkpoints and nodes(workflow, "ImagicShapesCheckpoint") and "no download" in text
        return
    assert checkpoints and all(ckpt in text for ckpt in checkpoints), (checkpoints, text[:200])
    for loader in nodes(workflow, "CheckpointLoaderSimple"):  # the frontend's missing-model dialog offers these
        (model,) = loader["properties"]["models"]
        assert model["name"] == loader["widgets_values"][0] and model["url"].startswith("https://huggingface.co/")


def test_imagic_edit_uses_sd15_and_the_node_defaults():
    workflow = load("imagic_edit")
    assert [n["widgets_values"][0] for n in nodes(workflow, "CheckpointLoaderSimple")] == [SD15]
    (embed,) = nodes(workflow, "ImagicOptimizeEmbedding")
    (tune,) = nodes(workflow, "ImagicFinetuneUNet")
    (interp,) = nodes(workflow, "ImagicInterpolateConditioning")
    d = sub("core.defaults")
    assert embed["widgets_values"][:2] == [d.EMBED_STEPS, d.EMBED_LEARNING_RATE]
    assert tune["widgets_values"][:2] == [d.TUNE_STEPS, d.LEARNING_RATE[d.TUNE_METHOD]]
    assert interp["widgets_values"] == [d.ETA]
    # the edit starts from the photo's latent at the default strength (issue 19): KSampler on VAE Encode, denoise
    (ksampler,) = nodes(workflow, "KSampler")
    (latent,) = [k for k in workflow["links"] if k[3] == ksampler["id"] and k[4] == 3]
    assert [n["type"] for n in workflow["nodes"] if n["id"] == latent[1]] == ["VAEEncode"]
    assert ksampler["widgets_values"][-1] == sub("core.defaults").STRENGTH
    # the seed's control widget (the optional low_memory / batch_size widgets follow it): no retraining on every queue
    assert "fixed" in embed["widgets_values"] and "fixed" in tune["widgets_values"]
    (saver,) = nodes(workflow, "ImagicSaveFinetune")
    assert saver["mode"] == 2  # muted until the user wants a file
    text = notes_text(workflow)
    assert "eta" in text and "What to tune first" in text and "0.6 - 0.8" in text


def test_eta_grid_samples_six_etas_from_one_finetune():
    workflow = load("imagic_eta_grid")
    assert len(nodes(workflow, "ImagicFinetuneUNet")) == 1
    assert sorted(n["widgets_values"][0] for n in nodes(workflow, "ImagicInterpolateConditioning")) == GRID_ETAS


GRID_ETAS = [0.8, 1.0, 1.25, 1.5, 1.75, 2.0]  # around the default eta, 1.5, from the default start


def test_every_template_has_its_place_and_one_line_in_the_template_index():
    """js/templates.json orders the template browser (the demo first) and gives each template its one line;
    64 characters fit the two lines a card shows (frontend 1.27, 16rem cards: ~38 characters a line)."""
    index = json.loads((ROOT / "js" / "templates.json").read_text(encoding="utf-8"))
    names = [t["name"] for t in index]
    assert names[0] == "imagic_demo_shapes" and len(set(names)) == len(names)
    shipped = {p.stem for p in (ROOT / "workflows").glob("*.json")}
    assert shipped <= set(names), f"templates without a line in js/templates.json: {shipped - set(names)}"
    assert set(names) - shipped <= {"imagic_demo_shapes"}, "js/templates.json names a workflow that is not there"
    assert all(0 < len(t["description"]) <= 64 for t in index)


# ---------------------------------------------------------------------------------------------------------------
# Against the real server.


@pytest.fixture(scope="module")
def object_info(workflow_server):
    return workflow_server.get("/object_info")


def saved_images(server, result: dict) -> list[Image.Image]:
    files = [img for out in result["outputs"].values() for img in out.get("images", []) if img["type"] == "output"]
    return [Image.open(server.base / "output" / img["subfolder"] / img["filename"]) for img in files]


def assert_success(result: dict) -> None:
    errors = [m[1] for m in result["status"]["messages"] if m[0] == "execution_error"]
    assert result["status"]["status_str"] == "success", errors[:1]


def test_every_shipped_workflow_is_listed_where_a_user_reads_about_them():
    """README's Workflows section and docs/workflows.md name every workflows/*.json (listed, not counted: a
    count went stale once) and NAMES, which the other tests load, is every file."""
    shipped = sorted(p.stem for p in (ROOT / "workflows").glob("*.json"))
    assert shipped == sorted(NAMES)
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = readme.split("\n## Workflows\n", 1)[1].split("\n## ", 1)[0]
    guide = (ROOT / "docs" / "workflows.md").read_text(encoding="utf-8")
    for name in shipped:
        assert f"`{name}`" in section, f"README's Workflows section does not list {name}"
        assert name in guide, f"docs/workflows.md does not list {name}"


@host
def test_workflows_are_served_as_templates(workflow_server):
    templates = workflow_server.get("/api/workflow_templates")
    assert sorted(templates["comfyui-imagic"]) == sorted(NAMES)
    assert workflow_server.get("/api/workflow_templates/comfyui-imagic/imagic_edit.json") == load("imagic_edit")


@host
@pytest.mark.parametrize("name", NAMES)
def test_api_format_validates_against_the_live_object_info(workflow_server, object_info, name):
    prompt = api_prompt(load(name), object_info)
    status, body = workflow_server.post_status("/prompt", {"prompt": prompt, "client_id": "imagic-validate"})
    # Valid: it is queued (and stops at the empty stand-in checkpoint file, which is not what this checks).
    assert status == 200 and body.get("node_errors") == {}, body


def samplers_of_the_edit(prompt: dict) -> list[str]:
    """The samplers whose positive is Imagic Interpolate Conditioning's output (through Flux Guidance on Flux)."""
    def mixed(link) -> bool:
        node = prompt[str(link[0])]
        if node["class_type"] == "FluxGuidance":
            return mixed(node["inputs"]["conditioning"])
        return node["class_type"] == "ImagicInterpolateConditioning"

    return [k for k, v in prompt.items() if v["class_type"] in ("KSampler", "SamplerCustom") and mixed(
        v["inputs"]["positive"])]


def source_type(prompt: dict, link) -> str:
    return prompt[str(link[0])]["class_type"]


@host
@pytest.mark.parametrize("name", [n for n in NAMES if "ImagicInterpolateConditioning" in
                                  {x["type"] for x in load(n)["nodes"]}])
def test_every_imagic_sampler_samples_centred_noise_from_the_finetune(object_info, name):
    """Issue 19: Imagic Centred Noise (with its default low_frequencies; the masked edit: the mean alone) sits
    between the fine-tune and every sampler of an Imagic edit (and Auto Eta's finetuned_model) in every template
    that samples from the photo, and the headless --start and --eta auto keep it (the shapes benchmark measured the
    defaults with it). The instructpix2pix baseline keeps the paper's noise start, where it was not measured."""
    prompt = api_prompt(load(name), object_info)
    found = samplers_of_the_edit(prompt)
    assert found
    centred = [k for k in found if source_type(prompt, prompt[k]["inputs"]["model"]) == "ImagicCentredNoise"]
    if name == "baseline_instructpix2pix":
        assert centred == []
        return
    assert centred == found, name
    low = object_info["ImagicCentredNoise"]["input"]["optional"]["low_frequencies"][1]["default"]  # as measured
    if name == "imagic_edit_masked":  # the photo is pasted back outside the mask
        low = sub("cli.family_templates").MASKED_LOW_FREQUENCIES
    for node in (k for k, v in prompt.items() if v["class_type"] == "ImagicCentredNoise"):
        assert source_type(prompt, prompt[node]["inputs"]["model"]) in (
            "ImagicFinetuneUNet", "ImagicLoadFinetune", "CheckpointLoaderSimple")  # the last: SDEdit's, as measured
        assert prompt[node]["inputs"]["low_frequencies"] == low, name
    if name != "imagic_edit":
        return
    start_graph, auto = sub("cli.start_graph"), sub("cli.auto_eta_prompt")
    for start in (start_graph.Start("inversion", 0.8), start_graph.Start("noise", 1.0)):
        moved = start_graph.set_start(prompt, start, (512, 512))
        assert {source_type(moved, moved[k]["inputs"]["model"]) for k in samplers_of_the_edit(moved)} == {
            "ImagicCentredNoise"}, start
    chooser = auto.use_auto_eta(prompt, "edit")
    (node,) = [v for v in chooser.values() if v["class_type"] == "ImagicAutoEta"]
    assert source_type(chooser, node["inputs"]["finetuned_model"]) == "ImagicCentredNoise"
    assert source_type(chooser, node["inputs"]["model"]) == "CheckpointLoaderSimple"


@host
def test_in_process_conversion_matches_the_live_server(comfy, object_info):
    """The headless command converts with the in-process node definitions: same result as the server's."""
    local = sub("cli.workflow_api").object_info_in_process()
    for name in NAMES:
        assert api_prompt(load(name), local) == api_prompt(load(name), object_info), name


@host
@pytest.mark.parametrize("name", ["imagic_edit", "imagic_edit_masked", "baseline_sdedit", "baseline_instructpix2pix"])
def test_runs_on_the_tiny_model(workflow_server, object_info, name):
    """The baselines save input | baseline | Imagic side by side. InstructPix2Pix needs an 8-channel UNet,
    which no tiny family has: the tiny SD1.5 model ignores the photo concat, so this run checks the wiring.
    (The masked edit's mask is the server's stand-in picture, resized like the photo.)"""
    result = workflow_server.run_prompt(tiny(api_prompt(load(name), object_info)))
    assert_success(result)
    if name.startswith("imagic_edit"):  # the edit, and input | edit under their labels
        strip = round(GRID.font_size(64) * 1.6)
        assert sorted(i.size for i in saved_images(workflow_server, result)) == [(64, 64), (2 * 64 + GRID.GAP,
                                                                                           strip + 64)]
        return
    (image,) = saved_images(workflow_server, result)
    assert image.size == (3 * 64 + 2 * STITCH_GAP, 64)


@host
def test_demo_runs_as_shipped_with_no_download(workflow_server, object_info):
    """The shapes demo needs no file: its model and input picture are built in. Shorter training only."""
    prompt = sub("demo.tiny_prompt").shrink(api_prompt(load("imagic_demo_shapes"), object_info), size=128,
                                           train_steps=3, sample_steps=2)
    result = workflow_server.run_prompt(prompt)
    assert_success(result)
    strip = round(GRID.font_size(128) * 1.6)
    assert sorted(i.size for i in saved_images(workflow_server, result)) == [(128, 128), (3 * 128 + 2 * GRID.GAP,
                                                                                          strip + 128)]
    # issue 23, bug 6: C's eta changed to 0.9 and run again (A and B cached): the picture says 0.9, not the default
    (mix,) = [k for k, n in prompt.items() if n["class_type"] == "ImagicInterpolateConditioning"]
    assert prompt[mix]["inputs"]["eta"] == sub("core.defaults").ETA
    prompt[mix]["inputs"]["eta"] = 0.9
    result = workflow_server.run_prompt(prompt)
    assert_success(result)
    (cached,) = [m[1]["nodes"] for m in result["status"]["messages"] if m[0] == "execution_cached"]
    trained = [k for k, n in prompt.items() if n["class_type"].startswith(("ImagicOptimize", "ImagicFinetune"))]
    assert trained and set(trained) <= set(cached)
    (picture,) = [i for i in saved_images(workflow_server, result) if i.size[0] > 128]
    label = picture.convert("RGB").crop((128 + GRID.GAP, 0, 2 * 128 + GRID.GAP, strip))
    assert np.array_equal(np.asarray(label), np.asarray(GRID.label_strip("Imagic, eta 0.9", 128, strip)))


@host
def test_eta_grid_runs_on_the_tiny_model_as_a_labelled_grid(workflow_server, object_info):
    """The input photo, then one tile per eta, four to a row, each under its label."""
    workflow = load("imagic_eta_grid")
    (grid_node,) = nodes(workflow, "ImagicLabelledGrid")
    etas = sorted(n["widgets_values"][0] for n in nodes(workflow, "ImagicInterpolateConditioning"))
    assert etas == GRID_ETAS
    # each label follows its branch's eta widget (issue 23): "eta {eta}", fed by that branch's Interpolate node
    assert grid_node["widgets_values"] == ["input\n" + "\n".join("eta {eta}" for _ in etas), 4]
    prompt = api_prompt(workflow, object_info)
    (grid_id,) = [k for k, n in prompt.items() if n["class_type"] == "ImagicLabelledGrid"]
    shown = []
    for k in range(2, 8):
        decode, _ = prompt[grid_id]["inputs"][f"images_{k}"]
        sampler, _ = prompt[decode]["inputs"]["samples"]
        mix, _ = prompt[sampler]["inputs"]["positive"]
        assert prompt[grid_id]["inputs"][f"eta_{k}"] == [mix, 1]
        shown.append(prompt[mix]["inputs"]["eta"])
    assert shown == etas
    result = workflow_server.run_prompt(tiny(api_prompt(workflow, object_info)))
    assert_success(result)
    (image,) = saved_images(workflow_server, result)
    strip = round(GRID.font_size(64) * 1.6)
    assert image.size == (4 * 64 + 3 * GRID.GAP, 2 * (strip + 64) + GRID.GAP)


@host
def test_reuse_runs_on_a_finetune_saved_by_imagic_edit(workflow_server, object_info):
    workflow_api = sub("cli.workflow_api")
    loras = workflow_server.base / "models" / "loras"
    before = set(loras.rglob("*.safetensors"))
    edit = workflow_api.set_mode(load("imagic_edit"), "ImagicSaveFinetune", 0)  # un-mute the saver
    assert_success(workflow_server.run_prompt(tiny(api_prompt(edit, object_info))))
    (saved,) = set(loras.rglob("*.safetensors")) - before

    prompt = tiny(api_prompt(load("imagic_reuse_finetune"), object_info))
    for node in prompt.values():
        if node["class_type"] == "ImagicLoadFinetune":
            node["inputs"]["lora_name"] = saved.relative_to(loras).as_posix()
    result = workflow_server.run_prompt(prompt)
    assert_success(result)
    assert saved_images(workflow_server, result)
    shown = sorted(text for out in result["outputs"].values() for text in out.get("text", []))
    (text,) = [n["widgets_values"][0] for n in edit["nodes"] if n.get("title") == "Target text (e_tgt)"]
    assert shown == [str(sub("core.defaults").ETA), text]  # the Preview Any nodes: stored eta and text
