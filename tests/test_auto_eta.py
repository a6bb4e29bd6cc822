"""Imagic Auto Eta: the rules (host-free), and the node on the real executor (tiny model: plumbing and the
score's sign; shapes model: it picks an eta whose edit reaches the target where eta 0 does not)."""
from __future__ import annotations

import json

import pytest
import torch
from PIL import Image

from asserts import assert_clear, validation_message
from graphs import imagic_graph, write_input_image
from pack import ROOT, sub

auto = sub("core.auto_eta")
TUNE = {"method": "lora", "tune_lr": 3e-3, "tune_steps": 40, "embed_steps": 30}


def scores(*gains, distances=None):
    """EtaScores at eta 0.4, 0.5, ... with the given text gains (loss_optimized 1, loss_target 1 - gain)."""
    distances = distances or [0.1 * k for k in range(len(gains))]
    return [auto.EtaScore(eta=round(0.4 + 0.1 * k, 2), loss_target=1.0 - g, loss_optimized=1.0, distance=d)
            for k, (g, d) in enumerate(zip(gains, distances, strict=True))]


def test_rules_choose_by_the_text_gain():
    s = scores(-0.2, -0.05, 0.01, 0.3, 0.5, 0.4)
    assert auto.choose(s, "max_gain") == 4
    assert auto.choose(s, "first_positive") == 2  # the smallest eta the target text explains better
    assert auto.choose(s, "half_gain") == 3  # -0.2 + 0.5 * 0.7 = 0.15: first reached at index 3
    far = scores(-0.2, -0.05, 0.01, 0.3, 0.5, 0.4, distances=[0.0, 0.05, 0.1, 0.6, 0.9, 1.0])
    assert auto.choose(far, "gain_minus_distance") == 2  # 0.01 - 0.1 beats 0.3 - 0.6 and 0.5 - 0.9
    assert auto.choose(s, "gain_minus_distance") == 4  # near ones: 0.5 - 0.4 wins
    none = scores(-0.3, -0.2, -0.1)
    assert [auto.choose(none, r) for r in ("first_positive", "gain_minus_distance")] == [2, 2]  # best gain
    with pytest.raises(ValueError, match="unknown rule"):
        auto.choose(s, "nope")


def test_rules_look_at_eta_order_not_list_order():
    s = scores(-0.2, 0.1, 0.3)
    assert auto.choose(list(reversed(s)), "first_positive") == 1  # eta 0.5 in the reversed list


def test_eta_candidates():
    assert auto.eta_candidates(0.4, 1.0, 7) == [0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0]
    assert auto.eta_candidates(0.7, 0.7, 3) == [0.7]
    assert auto.eta_candidates(0.0, 1.0, 1) == [1.0]


def test_score_table_marks_the_choice():
    s = scores(-0.2, 0.1, 0.3)
    table = auto.score_table(s, 1).splitlines()
    assert "<- chosen" in table[2] and "<- chosen" not in table[1] + table[3]
    assert json.loads(json.dumps(auto.scores_json(s, 1, "first_positive")))["eta"] == 0.5


# ---------------------------------------------------------------------------------------------------------------
# On the real executor, tiny random model.


def auto_eta_graph(image: str, **overrides) -> dict:
    """The test Imagic graph with Imagic Auto Eta (node 20) sampling from the fine-tune, and a Save Image."""
    graph = imagic_graph(image, **TUNE)
    inputs = {"model": ["1", 0], "finetuned_model": ["6", 0], "optimized": ["5", 0], "target": ["2", 0],
              "negative": ["2", 0], "latent": ["4", 0], "vae": ["1", 2], "eta_min": 0.0, "eta_max": 1.0,
              "count": 3, "rule": "max_gain", "seed": 0, "steps": 4, "cfg": 1.0, "sampler_name": "euler",
              "scheduler": "normal", "score_draws": 8}
    inputs.update(overrides)
    graph["20"] = {"class_type": "ImagicAutoEta", "inputs": inputs}
    graph["21"] = {"class_type": "SaveImage", "inputs": {"images": ["20", 2], "filename_prefix": "auto_eta"}}
    for node in ("7", "8", "9", "10"):  # the fixed-eta branch is not needed
        del graph[node]
    return graph


@pytest.fixture(scope="module")
def image(comfy):
    return write_input_image(comfy.base / "input", "auto_eta_input.png")


@pytest.mark.parametrize("start, strength", [("noise", 1.0), ("photo", 0.7), ("inversion", 0.9)])
def test_node_outputs_the_chosen_edit_of_the_stock_sampler(comfy, image, start, strength):
    """Every start samples inside the node exactly as the stock nodes do (cli/start_graph.py: KSampler from an
    Empty Latent Image; KSampler with denoise on the photo's latent; BasicScheduler, FlipSigmas and two
    SamplerCustom for the inversion): the chosen latent is theirs at that eta with the same seed."""
    comfy.run(auto_eta_graph(image, start=start, strength=strength))
    report = json.loads(comfy.output("20", 4))
    etas = [s["eta"] for s in report["scores"]]
    assert etas == [0.0, 0.5, 1.0] and report["rule"] == "max_gain"
    assert report["start"] == start and report["starts"] == [start] * 3
    chosen = report["chosen"]
    gains = [s["text_gain"] for s in report["scores"]]
    assert chosen == gains.index(max(gains)) and comfy.output("20", 3) == etas[chosen]
    latent, image_out, grid = comfy.output("20", 1)["samples"], comfy.output("20", 0), comfy.output("20", 2)
    assert image_out.shape[0] == 1 and grid.shape[0] == 1 and grid.shape[2] > 4 * image_out.shape[2]
    ui = comfy.executor.history_result["outputs"]["20"]
    assert ui["images"] and "<- chosen" in ui["text"][0] and ui["imagic_auto_eta"][0] == report
    sg = sub("cli.start_graph")
    stock = imagic_graph(image, eta=etas[chosen], sample_steps=4, **TUNE)
    stock["11"] = {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 1}}
    stock["8"]["inputs"]["latent_image"] = ["11", 0]  # as the imagic_edit workflow samples
    stock = sg.set_start(stock, sg.Start(start, strength))
    comfy.run(stock)
    assert torch.equal(comfy.output(sg.find(stock).node)["samples"], latent)


def test_every_start_at_once_scores_each_eta_from_each_start(comfy, image):
    comfy.run(auto_eta_graph(image, start="every start", count=2))
    report = json.loads(comfy.output("20", 4))
    assert report["starts"] == ["noise", "noise", "photo", "photo", "inversion", "inversion"], report
    assert [s["eta"] for s in report["scores"]] == [0.0, 1.0] * 3
    assert report["start"] == report["starts"][report["chosen"]]


def test_the_input_itself_scores_below_zero(comfy, image):
    """e_opt was optimised to explain the input: the target text explains it worse (negative gain), and the
    distance of the input to itself is 0."""
    comfy.run(auto_eta_graph(image))
    node = sub("nodes.auto_eta")
    model, latent = comfy.output("1"), comfy.output("4")
    (s,) = node.score(model, latent, [latent["samples"]], [0.0], comfy.output("2"), comfy.output("5"), 0, 16)
    assert s.text_gain < 0 and s.distance == 0.0, s


@pytest.mark.parametrize("values, words", [
    ({"eta_min": 0.9, "eta_max": 0.3}, ["eta_min 0.9 is larger than eta_max 0.3", "swap them"]),
    ({"eta_min": float("nan")}, ["eta_min is nan", "not a finite number"]),
    ({"eta_max": float("inf")}, ["eta_max is inf", "not a finite number"]),
])
def test_bad_eta_range_is_refused_before_training(comfy, image, values, words):
    """Checked by /prompt validation (issue 23: it used to fire only after both training nodes had run)."""
    ok, _, _, node_errors = comfy.validate(auto_eta_graph(image, **values))
    assert not ok and set(node_errors) == {"20"}, node_errors
    assert_clear(validation_message(node_errors, "20"), "ImagicAutoEta", *words)


OTHER = {"30": {"class_type": "ImagicTinyCheckpoint", "inputs": {"family": "sdxl", "seed": 0}},
         "31": {"class_type": "CLIPTextEncode", "inputs": {"clip": ["30", 1], "text": "a photo of a sitting dog"}},
         "32": {"class_type": "ImagicTinyCheckpoint", "inputs": {"family": "flux", "seed": 0}},
         "33": {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 1}},
         "34": {"class_type": "LoadLatent", "inputs": {"latent": "auto_eta_constant.latent"}}}


@pytest.fixture(scope="module")
def constant_latent(comfy):
    """A latent of one value everywhere (not zero) for Load Latent (node 34)."""
    import safetensors.torch

    safetensors.torch.save_file({"latent_tensor": torch.full((1, 4, 8, 8), 0.5),
                                 "latent_format_version_0": torch.tensor([])},
                                str(comfy.base / "input" / "auto_eta_constant.latent"))


@pytest.mark.parametrize("wiring, words", [
    ({"target": ["31", 0]}, ["the target input is", "another model family",
                             "target text with the CLIP of the same checkpoint"]),
    ({"negative": ["31", 0]}, ["the negative input is", "another model family", "negative text"]),
    ({"vae": ["32", 2]}, ["the vae has 16 channels", "works on 4-channel", "VAE of the same checkpoint"]),
    ({"finetuned_model": ["30", 0]}, ["finetuned_model is a SDXL model but model is SD15", "trained from this"]),
    ({"latent": ["33", 0]}, ["the latent is all zeros", "Empty Latent Image", "VAE Encode output of the input"]),
    ({"latent": ["34", 0]}, ["the latent is constant (every value 0.5)", "VAE Encode output of the input"]),
    ({"model": ["30", 0]}, ["model is a SDXL model but finetuned_model and the target conditioning are SD15",
                            "base model the fine-tune was trained from"]),
    ({"model": ["6", 0], "finetuned_model": ["1", 0]}, ["finetuned_model carries no fine-tune",
                                                        "the two inputs are swapped", "base model to model"]),
], ids=["target of another CLIP", "negative of another CLIP", "VAE of another family",
        "fine-tune of another family", "empty latent", "constant latent", "scoring model of another family",
        "models swapped"])
def test_inputs_that_do_not_belong_together_are_refused_before_sampling(comfy, image, constant_latent, wiring,
                                                                        words):
    """Issue 23: these gave raw torch errors, an error naming another node, distances of 7.5e11, or ran silently."""
    graph = {**auto_eta_graph(image), **OTHER}
    graph["20"]["inputs"].update(wiring)
    comfy.run(graph, expect_success=False)
    error = comfy.events("execution_error")[0]
    assert error["node_type"] == "ImagicAutoEta", error
    assert_clear(error["exception_message"], "ImagicAutoEta", *words)


def test_schema_has_tooltips_and_a_help_page(comfy):
    schema = comfy.nodes.NODE_CLASS_MAPPINGS["ImagicAutoEta"].GET_SCHEMA()
    assert schema.category == "Imagic" and schema.description
    assert all(i.tooltip for i in schema.inputs) and all(o.tooltip for o in schema.outputs)
    assert (sub("cli.comfy_host").PACK_DIR / "js" / "docs" / "ImagicAutoEta" / "en.md").is_file()


# ---------------------------------------------------------------------------------------------------------------
# On the shapes model: an edit whose truth is known.

SHAPES_EDIT = (("red", "circle", "left"), "colour", ("blue", "circle", "left"))  # held out of training


def shapes_auto_eta_graph(image: str, text: str) -> dict:
    """The shapes model's Imagic edit graph (tests/test_shapes_model.py: its recipe, eta 0 on the stock branch)
    with Imagic Auto Eta (node 20) trying eta 0, 0.25, ..., 1 from the same fine-tune."""
    from test_shapes_model import sampling, shapes_imagic_graph

    graph = shapes_imagic_graph(image, text, eta=0.0)
    graph["20"] = {"class_type": "ImagicAutoEta", "inputs": {
        "model": ["1", 0], "finetuned_model": ["6", 0], "optimized": ["5", 0], "target": ["2", 0],
        "negative": ["12", 0], "latent": ["4", 0], "vae": ["1", 2], "eta_min": 0.0, "eta_max": 1.0, "count": 5,
        "rule": sub("core.auto_eta").DEFAULT_RULE, "seed": 0, "steps": sampling()["steps"], "cfg": sampling()["cfg"],
        "sampler_name": "euler", "scheduler": "normal"}}
    graph["21"] = {"class_type": "PreviewImage", "inputs": {"images": ["20", 0]}}
    return graph


def test_on_the_shapes_model_auto_eta_reaches_the_target_where_eta_0_does_not(comfy):
    from test_shapes_model import save_input

    checkpoint = sub("demo.shapes_checkpoint").CHECKPOINT
    if not checkpoint.is_file():
        pytest.skip(f"the shapes model {checkpoint} is not there")
    world = sub("demo.shapes_world")
    source, attribute, target = SHAPES_EDIT
    image = save_input(comfy, source, 100, "shapes_auto_eta.png")
    comfy.run(shapes_auto_eta_graph(image, world.caption(*target)))
    eta0 = world.read(comfy.output("9")[0].float().numpy())  # the stock branch at eta 0
    chosen = world.read(comfy.output("20")[0].float().numpy())
    report = json.loads(comfy.output("20", 4))
    k = ("colour", "shape", "position").index(attribute)
    assert getattr(eta0, attribute) == source[k], (eta0, report)  # eta 0 reconstructs: no edit
    assert getattr(chosen, attribute) == target[k], (chosen, report)  # the chosen eta edits
    assert report["eta"] > 0


def test_cli_eta_auto_writes_the_chosen_edit_the_grid_and_saves_the_chosen_eta(tmp_path):
    from test_cli import run_edit, wrote

    out = tmp_path / "out"
    result = run_edit("--demo", "--eta", "auto", "--save-finetune", "--out", out)
    assert result.returncode == 0, result.stderr[-2000:]
    names = sorted(p.split("/")[-1] for p in wrote(result))
    assert names[:2] == ["demo_auto_00001_.png", "demo_auto_grid_00001_.png"], names
    assert names[-1] == "demo_finetune_00001_.safetensors", names
    chosen = [line for line in result.stdout.splitlines() if line.endswith("<- chosen")]
    assert len(chosen) == 1, result.stdout
    with Image.open(out / "demo_auto_grid_00001_.png") as grid, Image.open(out / "demo_auto_00001_.png") as edit:
        assert grid.width > (sub("core.defaults").AUTO_ETA["count"] + 1) * edit.width  # input + every eta
    import safetensors

    with safetensors.safe_open(out / "demo_finetune_00001_.safetensors", "pt") as f:
        assert float(f.metadata()["imagic.suggested_eta"]) == float(chosen[0].split()[0])


def test_cli_eta_auto_cannot_be_mixed_with_numbers(tmp_path):
    from test_cli import run_edit

    result = run_edit("--demo", "--eta", "auto", "0.5", "--out", tmp_path / "out")
    assert result.returncode == 2 and "give it alone" in result.stderr and not (tmp_path / "out").exists()


def test_each_rule_carries_its_help_the_node_and_its_page_show():
    """One registry of rules (core/auto_eta.RULES): a rule's help is its docstring's first line; the node's
    tooltip is built from it and the help page describes every rule (a new rule without a docstring or a
    line on the page fails here)."""
    page = (ROOT / "js" / "docs" / "ImagicAutoEta" / "en.md").read_text("utf-8")
    for name in auto.RULES:
        assert len(auto.rule_help(name)) > 20, name
        assert f"**{name}**" in page, name
    assert auto.rule_help("max_gain") == "The output the target text explains best (relative to e_opt)"
