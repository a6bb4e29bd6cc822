"""cli/start_graph.py: the stock nodes of each start (noise, photo, inversion), found again in a prompt and
replaced, with whatever took the edit's latent relinked (the headless --start and --eta auto use it). Pure
prompt dicts: no host needed."""
from __future__ import annotations

import pytest

from graphs import imagic_graph
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
