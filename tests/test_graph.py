"""The foundation graph on the real ComfyUI executor with a tiny real SD1.5-family model.

Loader -> CLIP Text Encode + VAE Encode -> Imagic Optimize Embedding -> Imagic Finetune UNet ->
Imagic Interpolate Conditioning -> KSampler -> VAE Decode -> Save Image, and the checks that the method
works, not just runs.
"""
from __future__ import annotations

import itertools

import pytest
import torch

from graphs import imagic_graph, sampler_only, write_input_image
from pack import sub

TUNE = dict(method="lora", tune_lr=3e-3, tune_steps=120)


def mse(a, b) -> float:
    return float(((a.float() - b.float()) ** 2).mean())


def reconstruction_loss(model, conditioning, latent) -> float:
    """The Imagic loss on held-out noise draws, on the frozen model (same code path as the nodes)."""
    return sub("nodes.training_run").heldout_loss(model, conditioning, latent)


@pytest.fixture(scope="module")
def image(comfy):
    return write_input_image(comfy.base / "input")


@pytest.fixture(scope="module")
def edit(comfy, image):
    """One full run at eta=0; later tests re-run only what changes (ComfyUI's cache keeps the rest)."""
    tiny = sub("demo.tiny_checkpoint")
    with torch.inference_mode():
        reference = {k: v.clone() for k, v in tiny.build_tiny_checkpoint("sd15", 0)[0].model.state_dict().items()}
    graph = imagic_graph(image, eta=0.0, **TUNE)
    comfy.run(graph)
    return {"graph": graph, "reference": reference, "latent": comfy.output("4"), "upstream": comfy.output("1"),
            "e_tgt": comfy.output("2"), "e_opt": comfy.output("5"), "lora": comfy.output("6", 1),
            "tuned": comfy.output("6"), "eta0": comfy.output("8")["samples"]}


def test_graph_runs_and_saves_an_image(comfy, edit):
    saved = comfy.executor.history_result["outputs"]["10"]["images"]
    assert saved and (comfy.base / "output" / saved[0]["filename"]).is_file()
    assert comfy.output("5", 1)["loss"] and len(comfy.output("6", 2)["loss"]) == TUNE["tune_steps"]


def test_training_nodes_keep_their_loss_curve_for_the_chart_of_a_cached_run(comfy, edit):
    """The ui output ComfyUI caches with the node and sends again when it is cached (js/imagic_loss_chart.js)."""
    embed_steps = edit["graph"]["5"]["inputs"]["steps"]
    for node, index, steps in (("5", 1, embed_steps), ("6", 2, TUNE["tune_steps"])):
        (run,) = comfy.executor.caches.ui.get(node)["output"]["imagic_loss"]
        losses = comfy.output(node, index)["loss"]
        assert run["steps"] == steps == len(run["losses"]) and run["elapsed_s"] > 0
        assert run["losses"] == pytest.approx(losses, rel=1e-5) and run["title"].startswith("Imagic: ")


def test_optimized_embedding_keeps_the_conditioning_structure(edit):
    (t_tensor, t_extras), = edit["e_tgt"]
    (o_tensor, o_extras), = edit["e_opt"]
    assert o_tensor.shape == t_tensor.shape and o_tensor.dtype == t_tensor.dtype
    assert set(o_extras) == set(t_extras) and "pooled_output" in o_extras
    assert not torch.equal(o_tensor, t_tensor)


def test_a_embedding_optimisation_lowers_the_reconstruction_loss(edit):
    before = reconstruction_loss(edit["upstream"], edit["e_tgt"], edit["latent"])
    after = reconstruction_loss(edit["upstream"], edit["e_opt"], edit["latent"])
    assert after < 0.9 * before, (before, after)


def test_b_finetuned_model_reconstructs_the_input_at_eta_0(comfy, edit):
    tuned = mse(edit["eta0"], edit["latent"]["samples"])
    comfy.run(sampler_only(edit["graph"], ["1", 0], ["7", 0]))  # un-tuned model, same e_opt, same noise
    untuned = mse(comfy.output("8")["samples"], edit["latent"]["samples"])
    assert tuned < 0.25 * untuned, (tuned, untuned)


def test_c_output_moves_toward_the_eta_1_result_as_eta_grows(comfy, edit, image):
    samples = {}
    for eta in (0.0, 0.25, 0.5, 0.75, 1.0):
        comfy.run(imagic_graph(image, eta=eta, **TUNE))
        samples[eta] = comfy.output("8")["samples"]
    assert torch.equal(samples[0.0], edit["eta0"])  # the fine-tune came from the cache: same run
    dist = [mse(samples[eta], samples[1.0]) for eta in (0.0, 0.25, 0.5, 0.75, 1.0)]
    assert all(a > b for a, b in itertools.pairwise(dist)), dist


def test_d_upstream_model_weights_are_bit_identical_after_the_graph(edit):
    import comfy.model_management

    upstream = edit["upstream"]
    assert upstream.patches == {}  # nothing was added to the cached model
    comfy.model_management.load_models_gpu([upstream], force_full_load=True)
    after = upstream.model.state_dict()
    assert after.keys() == edit["reference"].keys()
    changed = [k for k, v in edit["reference"].items() if not torch.equal(v, after[k])]
    assert not changed, changed[:5]


def test_finetuned_model_output_is_the_lora_model_applied_by_comfyuis_loader(comfy, edit):
    """MODEL output == ComfyUI's LoraModelLoader(upstream, LORA_MODEL); and it stacks with another LoRA."""
    graph = dict(edit["graph"])
    graph["20"] = {"class_type": "LoraModelLoader",
                   "inputs": {"model": ["1", 0], "lora": ["6", 1], "strength_model": 1.0}}
    comfy.run(sampler_only(graph, ["20", 0], ["7", 0]))
    assert torch.allclose(comfy.output("8")["samples"], edit["eta0"], atol=1e-4)
    graph["21"] = {"class_type": "LoraModelLoader",
                   "inputs": {"model": ["6", 0], "lora": ["6", 1], "strength_model": 0.5}}
    comfy.run(sampler_only(graph, ["21", 0], ["7", 0]))
    stacked = comfy.output("8")["samples"]
    assert torch.isfinite(stacked).all() and not torch.allclose(stacked, edit["eta0"], atol=1e-4)


def test_full_method_gives_an_exact_diff_that_comfyui_loads(comfy, image):
    graph = imagic_graph(image, eta=0.0, method="full", tune_lr=1e-3, tune_steps=30)
    graph["20"] = {"class_type": "LoraModelLoader",
                   "inputs": {"model": ["1", 0], "lora": ["6", 1], "strength_model": 1.0}}
    comfy.run(graph)
    direct = comfy.output("8")["samples"]
    lora = comfy.output("6", 1)
    assert lora and all(k.startswith("diffusion_model.") and k.endswith((".diff", ".diff_b")) for k in lora)
    comfy.run(sampler_only(graph, ["20", 0], ["7", 0]))
    assert torch.allclose(comfy.output("8")["samples"], direct, atol=1e-4)


def test_same_seed_and_inputs_give_the_same_result(comfy, edit):
    comfy.executor.reset()  # nothing cached: every node runs again
    comfy.run(edit["graph"])
    (a, _), = edit["e_opt"]
    (b, _), = comfy.output("5")
    assert torch.equal(a, b)
    assert all(torch.equal(v, comfy.output("6", 1)[k]) for k, v in edit["lora"].items())
    assert torch.equal(comfy.output("8")["samples"], edit["eta0"])


def test_e_cancel_stops_within_one_step_and_leaves_the_model_usable(comfy, edit, image):
    import comfy.sample as comfy_sample
    import comfy.utils as comfy_utils

    upstream, e_tgt, latent = edit["upstream"], edit["e_tgt"], edit["latent"]["samples"]

    def sample():
        noise = comfy_sample.prepare_noise(latent, 3)
        return comfy_sample.sample(upstream, noise, 4, 1.0, "euler", "normal", e_tgt, e_tgt, latent)

    with torch.inference_mode():
        before = sample()
    seen = []

    def hook(value, total, preview, prompt_id=None, node_id=None):
        if total == 77:  # the fine-tune's step count below
            seen.append(value)
            if value == 3:
                comfy.nodes.interrupt_processing()  # what the UI's Cancel (/interrupt) calls

    comfy_utils.set_progress_bar_global_hook(hook)
    try:
        comfy.run(imagic_graph(image, eta=0.0, method="lora", tune_steps=77), expect_success=False)
    finally:
        comfy_utils.set_progress_bar_global_hook(None)
    interrupted = comfy.events("execution_interrupted")
    assert interrupted and interrupted[0]["node_type"] == "ImagicFinetuneUNet"
    assert seen == [1, 2, 3]  # the step running when Cancel came was the last
    assert upstream.patches == {}
    with torch.inference_mode():
        assert torch.equal(sample(), before)
