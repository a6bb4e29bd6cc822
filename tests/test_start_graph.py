"""cli/start_graph.py: the stock nodes of each start (noise, photo, inversion), found again in a prompt and
replaced, with whatever took the edit's latent relinked (the headless --start and --eta auto use it): pure
prompt dicts, no host needed; and the benchmark's finishing sampler (``Sampling.finish``) on the real executor."""
from __future__ import annotations

import pytest
import torch

from graphs import imagic_graph, write_input_image
from pack import sub

sg = sub("cli.start_graph")


def graph_with_empty() -> dict:
    """The test Imagic graph sampled from an Empty Latent Image (the paper's start)."""
    g = imagic_graph("in.png")
    g["11"] = {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 1}}
    g["8"]["inputs"].update(latent_image=["11", 0], cfg=2.0)  # guided inversion: at the sampler's cfg, not 1
    return g


def links_to_missing_nodes(prompt: dict) -> list:
    return [(k, name, v) for k, node in prompt.items() for name, v in node["inputs"].items()
            if isinstance(v, list) and len(v) == 2 and str(v[0]) not in prompt]


@pytest.mark.parametrize("start", [sg.Start("noise", 1.0), sg.Start("photo", 0.7), sg.Start("inversion", 0.9),
                                   sg.Start("inversion", 1.0, guided=True)])
def test_each_start_is_found_again_with_the_sampler_settings(start):
    g = graph_with_empty()
    out = sg.set_start(g, start)
    found = sg.find(out)
    assert found.start == start
    assert found.sampling == sg.Sampling(0, 8, 2.0, "euler", "normal")
    assert out["9"]["inputs"]["samples"] == [found.node, 0]  # VAE Decode takes the new start's latent
    assert not links_to_missing_nodes(out)
    assert g["8"]["class_type"] == "KSampler" and "8" not in out  # a copy; the old sampler is gone


def test_photo_start_is_ksampler_on_the_photo_latent_with_denoise():
    out = sg.set_start(graph_with_empty(), sg.Start("photo", 0.6))
    (k,) = [v for v in out.values() if v["class_type"] == "KSampler"]
    assert k["inputs"]["latent_image"] == ["4", 0] and k["inputs"]["denoise"] == 0.6


def test_inversion_runs_the_photo_back_with_e_opt_at_cfg_1_and_forward_on_the_same_sigmas():
    out = sg.set_start(graph_with_empty(), sg.Start("inversion", 0.8))
    found = sg.find(out)
    forward = out[found.node]["inputs"]
    inversion = out[forward["latent_image"][0]]["inputs"]
    assert inversion["latent_image"] == ["4", 0] and inversion["positive"] == ["5", 0] and inversion["cfg"] == 1.0
    assert inversion["add_noise"] is False and forward["add_noise"] is False
    flip = out[inversion["sigmas"][0]]
    assert flip["class_type"] == "FlipSigmas" and flip["inputs"]["sigmas"] == forward["sigmas"]
    assert out[forward["sigmas"][0]]["inputs"]["denoise"] == 0.8
    assert out[inversion["sampler"][0]]["inputs"]["sampler_name"] == "euler"


def test_switching_back_and_forth_leaves_no_stray_nodes():
    g = graph_with_empty()
    back = sg.set_start(sg.set_start(sg.set_start(g, sg.Start("inversion", 1.0)), sg.Start("photo", 0.8)),
                        sg.Start("noise", 1.0))
    kinds = sorted(v["class_type"] for v in back.values())
    assert kinds == sorted(v["class_type"] for v in g.values()), kinds
    assert not links_to_missing_nodes(back)


def test_a_noise_start_without_an_empty_latent_gets_one_of_the_given_size():
    g = sg.set_start(graph_with_empty(), sg.Start("photo", 0.8))
    del g["11"]
    out = sg.set_start(g, sg.Start("noise", 1.0), (96, 64))
    (empty,) = [v for v in out.values() if v["class_type"] == "EmptyLatentImage"]
    assert empty["inputs"]["width"] == 96 and empty["inputs"]["height"] == 64
    with pytest.raises(ValueError, match="size of the empty latent"):
        sg.set_start(g, sg.Start("noise", 1.0))


@pytest.mark.parametrize("text, start", [("noise", sg.Start("noise", 1.0)), ("photo:0.8", sg.Start("photo", 0.8)),
                                         ("inversion", sg.Start("inversion", 1.0)),
                                         ("inversion_cfg:0.9", sg.Start("inversion", 0.9, guided=True))])
def test_start_parse(text, start):
    assert sg.Start.parse(text) == start


@pytest.mark.parametrize("kind, strength", [("noise", 0.0), ("photo", 1.5), ("pixels", 0.5)])
def test_bad_starts_are_refused(kind, strength):
    with pytest.raises(ValueError):
        sg.Start(kind, strength)


# ---------------------------------------------------------------------------------------------------------------
# On the real executor: the finishing sampler (bench/edit_quality.py --finish) splits KSampler's steps exactly.


@pytest.mark.parametrize("kind, strength", [("photo", 0.7), ("noise", 1.0)])
def test_a_finish_with_the_same_sampler_is_ksampler_and_another_sampler_changes_the_tail(comfy, kind, strength):
    image = write_input_image(comfy.base / "input", "start_graph_input.png")
    base = {
        "1": {"class_type": "ImagicTinyCheckpoint", "inputs": {"family": "sd15", "seed": 0}},
        "2": {"class_type": "CLIPTextEncode", "inputs": {"clip": ["1", 1], "text": "a photo of a sitting dog"}},
        "3": {"class_type": "LoadImage", "inputs": {"image": image}},
        "4": {"class_type": "VAEEncode", "inputs": {"pixels": ["3", 0], "vae": ["1", 2]}},
        "13": {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 1}},
    }
    links = {"model": ["1", 0], "positive": ["2", 0], "negative": ["2", 0], "optimized": None, "photo": ["4", 0],
             "empty": ["13", 0]}
    latents = {}
    for finish in (None, ("euler", 3), ("euler_ancestral", 3)):
        prompt = dict(base)
        sampling = sg.Sampling(5, 6, 2.0, "euler", "normal", *(finish or (None, 0)))
        out = sg.add_start(prompt, sg.Start(kind, strength), sampling, prefix="8", **links)
        prompt["9"] = {"class_type": "VAEDecode", "inputs": {"samples": [out, 0], "vae": ["1", 2]}}
        prompt["10"] = {"class_type": "PreviewImage", "inputs": {"images": ["9", 0]}}
        comfy.run(prompt)
        latents[finish and finish[0]] = comfy.output(out)["samples"]
        if finish:
            first, tail = prompt["8k"]["inputs"], prompt["8t"]["inputs"]
            assert (first["start_at_step"], first["end_at_step"], tail["start_at_step"]) == (
                (2, 5, 5) if kind == "photo" else (0, 3, 3))  # int(6 / 0.7) = 8 steps, the last 6 sampled
    assert torch.allclose(latents["euler"], latents[None], atol=1e-5), (latents["euler"] - latents[None]).abs().max()
    assert not torch.allclose(latents["euler_ancestral"], latents[None], atol=1e-3)
