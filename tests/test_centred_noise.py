"""Imagic Centred Noise on the real executor: the sampler's start noise loses its per-channel mean and, with
``low_frequencies``, its coarsest waves (on an eps and a flow model family), the given model is left as it was, and
on the shapes model the seed no longer shifts the shade of a background sampled from the photo nor leaves blotches
on it."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from pack import ROOT, sub

world = sub("demo.shapes_world")
noise_core = sub("core.noise")


def test_centred_removes_each_samples_channel_mean_and_nothing_else():
    g = torch.Generator().manual_seed(0)
    noise = torch.randn(2, 4, 8, 8, generator=g) + torch.tensor([0.3, -0.2, 0.1, 0.0]).view(1, 4, 1, 1)
    out = noise_core.centred(noise)
    assert out.mean(dim=(2, 3)).abs().max() < 1e-6
    assert torch.allclose(out - noise, -noise.mean(dim=(2, 3), keepdim=True).expand_as(noise))
    video = torch.randn(1, 4, 3, 8, 8, generator=g) + 0.5
    assert noise_core.centred(video).mean(dim=(2, 3, 4)).abs().max() < 1e-6


def test_low_frequencies_removes_the_coarsest_waves_and_nothing_else():
    g = torch.Generator().manual_seed(2)
    noise = torch.randn(2, 4, 16, 12, generator=g)
    out = noise_core.centred(noise, 2)
    assert out.shape == noise.shape and out.dtype == noise.dtype
    before, after = torch.fft.fft2(noise.double()), torch.fft.fft2(out.double())

    def cycles(n):
        return (torch.fft.fftfreq(n) * n).round().abs()

    coarse = (cycles(16).view(-1, 1) <= 2) & (cycles(12).view(1, -1) <= 2)
    assert int(coarse.sum()) == 25  # 5 x 5 waves: 0, +-1, +-2 cycles each way
    assert after[..., coarse].abs().max() < 1e-4
    assert torch.allclose(after[..., ~coarse], before[..., ~coarse], atol=1e-4)
    assert torch.equal(noise_core.centred(noise, 0), noise_core.centred(noise))
    video = torch.randn(1, 16, 3, 8, 8, generator=g) + 0.5
    centred_video = noise_core.centred(video.half(), 1)
    assert centred_video.dtype == torch.float16
    assert centred_video.float().mean(dim=(2, 3, 4)).abs().max() < 1e-2
    small = torch.randn(1, 4, 8, 8, generator=g)  # at most 4 cycles each way: 4 would leave no noise
    assert noise_core.centred(small, 2).abs().max() > 0.1
    with pytest.raises(ValueError, match="low_frequencies 4 takes all of the noise out.*at most 2"):
        noise_core.centred(small, 4)


@pytest.mark.parametrize("family", ["sd15", "flux"])
def test_the_models_start_noise_is_centred_and_the_given_model_is_not(comfy, family):
    graph = {"1": {"class_type": "ImagicTinyCheckpoint", "inputs": {"family": family, "seed": 0}},
             "2": {"class_type": "ImagicCentredNoise", "inputs": {"model": ["1", 0], "low_frequencies": 0}},
             "3": {"class_type": "ImagicCentredNoise", "inputs": {"model": ["2", 0], "low_frequencies": 0}},
             "4": {"class_type": "PreviewAny", "inputs": {"source": ["3", 0]}},
             "5": {"class_type": "ImagicCentredNoise", "inputs": {"model": ["3", 0], "low_frequencies": 2}},
             "6": {"class_type": "PreviewAny", "inputs": {"source": ["5", 0]}}}
    comfy.run(graph)
    given, once, twice = comfy.output("1"), comfy.output("2"), comfy.output("3")
    coarse = comfy.output("5").get_model_object("model_sampling")
    stock = given.get_model_object("model_sampling")
    centred = once.get_model_object("model_sampling")
    assert not getattr(stock, "imagic_centred", False), "the given model was patched"
    assert twice.get_model_object("model_sampling") is centred, "a second node wrapped it again"
    g = torch.Generator().manual_seed(1)
    latent = torch.randn(1, 16 if family == "flux" else 4, 8, 8, generator=g)
    noise = torch.randn(latent.shape, generator=g) - 0.3  # a draw with a clear offset
    sigma = torch.tensor([0.7 if family == "flux" else 5.0])
    with torch.inference_mode():
        got = centred.noise_scaling(sigma, noise.clone(), latent)
        want = stock.noise_scaling(sigma, noise_core.centred(noise), latent)
        plain = stock.noise_scaling(sigma, noise.clone(), latent)
    assert torch.allclose(got, want, atol=1e-6)
    assert not torch.allclose(got, plain, atol=1e-3)
    with torch.inference_mode():  # a second node with another setting replaces the first's, not on top of it
        got = coarse.noise_scaling(sigma, noise.clone(), latent)
        want = stock.noise_scaling(sigma, noise_core.centred(noise, 2), latent)
    assert torch.allclose(got, want, atol=1e-5)
    assert not torch.allclose(got, plain, atol=1e-3)
    assert torch.equal(centred.sigmas, stock.sigmas)  # the same schedule


def test_a_setting_that_takes_all_the_noise_out_stops_the_sampler_with_the_fix(comfy):
    """On the real executor: the shapes model's 16x16 latent has at most 8 cycles each way, so low_frequencies 8
    would leave the sampler no noise; the run stops at the KSampler with the largest setting that works."""
    s = sub("demo.shapes_checkpoint").SAMPLING
    graph = {**shapes_photo("red", "circle", "left", 100, "a blue circle on the left"),
             "6": {"class_type": "ImagicCentredNoise", "inputs": {"model": ["1", 0], "low_frequencies": 8}},
             "7": {"class_type": "KSampler", "inputs": {
                 "model": ["6", 0], "positive": ["4", 0], "negative": ["5", 0], "latent_image": ["3", 0], "seed": 0,
                 **s, "denoise": 0.8}},
             "8": {"class_type": "PreviewAny", "inputs": {"source": ["7", 0]}}}
    comfy.run(graph, expect_success=False)
    message = comfy.error_message()
    assert message.startswith("KSampler:") and "low_frequencies 8 takes all of the noise out" in message, message
    assert "at most 6" in message, message


def shapes_photo(colour: str, shape: str, position: str, seed: int, text: str) -> dict:
    """The shapes model, a held-out scene's picture as its VAE latent (node 3), ``text`` (4) and the empty text
    (5): what a start from the photo samples from."""
    return {"1": {"class_type": "ImagicShapesCheckpoint", "inputs": {}},
            "2": {"class_type": "ImagicShapesScene",
                  "inputs": {"colour": colour, "shape": shape, "position": position, "seed": seed}},
            "3": {"class_type": "VAEEncode", "inputs": {"pixels": ["2", 0], "vae": ["1", 2]}},
            "4": {"class_type": "CLIPTextEncode", "inputs": {"clip": ["1", 1], "text": text}},
            "5": {"class_type": "CLIPTextEncode", "inputs": {"clip": ["1", 1], "text": ""}}}


def test_centred_noise_keeps_the_background_shade_the_seed_shifts(comfy):
    """SDEdit on the shapes model from a held-out picture, the same seed with and without the node: that seed's
    noise averages -0.077 over the colour channels and darkens the background; centred, the shade stays."""
    s = sub("demo.shapes_checkpoint").SAMPLING
    scene = world.scene_for_seed("red", "circle", "left", 100)
    graph = {**shapes_photo("red", "circle", "left", 100, "a red circle on the left"),
             "6": {"class_type": "ImagicCentredNoise", "inputs": {"model": ["1", 0]}}}
    for node, model in (("7", ["1", 0]), ("8", ["6", 0])):
        graph[node] = {"class_type": "KSampler", "inputs": {
            "model": model, "positive": ["4", 0], "negative": ["5", 0], "latent_image": ["3", 0], "seed": 4, **s,
            "denoise": 0.8}}
        graph[f"{node}d"] = {"class_type": "VAEDecode", "inputs": {"samples": [node, 0], "vae": ["1", 2]}}
        graph[f"{node}p"] = {"class_type": "PreviewImage", "inputs": {"images": [f"{node}d", 0]}}
    comfy.run(graph)
    stock, centred = (world.read(comfy.output(f"{n}d")[0].numpy()) for n in ("7", "8"))
    drift_stock, drift_centred = stock.background - scene.background, centred.background - scene.background
    print(f"background {scene.background:.3f}: stock seed 4 {drift_stock:+.3f}, centred {drift_centred:+.3f}")
    assert drift_stock < -0.04, "the seed no longer shifts the shade: the test lost its point"
    assert abs(drift_centred) < 0.5 * abs(drift_stock)
    assert (stock.colour, stock.shape, stock.position) == (centred.colour, centred.shape, centred.position) == (
        "red", "circle", "left")
    assert np.isfinite(centred.background_spread)


def test_low_frequencies_flatten_the_blotches_a_rough_seed_leaves(comfy):
    """SDEdit 0.8 on the shapes model from a held-out picture with seed 0, whose noise has more coarse waves than
    most (bench/RESULTS.md): centred, the background comes out blotchy; without the noise's coarsest waves its
    spread is within 1.5x the VAE round trip's, as flat as the input's."""
    s = sub("demo.shapes_checkpoint").SAMPLING
    scene = world.scene_for_seed("red", "circle", "left", 100)
    graph = {**shapes_photo("red", "circle", "left", 100, "a red circle on the left"),
             "rt": {"class_type": "VAEDecode", "inputs": {"samples": ["3", 0], "vae": ["1", 2]}}}
    for node, low in (("7", 0), ("8", 2)):
        graph[f"{node}n"] = {"class_type": "ImagicCentredNoise", "inputs": {"model": ["1", 0], "low_frequencies": low}}
        graph[node] = {"class_type": "KSampler", "inputs": {
            "model": [f"{node}n", 0], "positive": ["4", 0], "negative": ["5", 0], "latent_image": ["3", 0], "seed": 0,
            **s, "denoise": 0.8}}
        graph[f"{node}d"] = {"class_type": "VAEDecode", "inputs": {"samples": [node, 0], "vae": ["1", 2]}}
        graph[f"{node}p"] = {"class_type": "PreviewImage", "inputs": {"images": [f"{node}d", 0]}}
    graph["rtp"] = {"class_type": "PreviewImage", "inputs": {"images": ["rt", 0]}}
    comfy.run(graph)
    trip, mean_only, coarse = (world.read(comfy.output(n)[0].numpy()) for n in ("rt", "7d", "8d"))
    print(f"background spread: round trip {trip.background_spread:.4f}, centred {mean_only.background_spread:.4f}, "
          f"without the coarsest waves {coarse.background_spread:.4f}")
    assert mean_only.background_spread > 2 * trip.background_spread, "seed 0 left no blotches: the test lost its point"
    assert coarse.background_spread < 1.5 * trip.background_spread
    assert abs(coarse.background - scene.background) < 0.06
    assert (coarse.colour, coarse.shape, coarse.position) == ("red", "circle", "left")


def test_schema_has_a_description_tooltips_and_a_help_page(comfy):
    node = comfy.nodes.NODE_CLASS_MAPPINGS["ImagicCentredNoise"]
    schema = node.define_schema()
    assert schema.description and all(i.tooltip for i in schema.inputs) and all(o.tooltip for o in schema.outputs)
    assert (ROOT / "js" / "docs" / "ImagicCentredNoise" / "en.md").is_file()


def test_the_benchmarks_centred_start_puts_the_node_before_the_sampler(comfy):
    """cli/start_graph.Sampling.centred (bench/edit_quality.py's default, off with --stock-noise): the start's
    sampler samples the centred model, and the edit's latent differs from the stock start's with the same seed."""
    sg = sub("cli.start_graph")
    base = {**shapes_photo("blue", "square", "left", 3, "a blue circle on the left"),
            "6": {"class_type": "EmptyLatentImage", "inputs": {"width": 128, "height": 128, "batch_size": 1}}}
    links = {"model": ["1", 0], "positive": ["4", 0], "negative": ["5", 0], "optimized": None, "photo": ["3", 0],
             "empty": ["6", 0]}
    latents = {}
    for centred in (False, True):
        prompt = dict(base)
        sampling = sg.Sampling(4, 8, 2.0, "euler", "normal", centred=centred)
        out = sg.add_start(prompt, sg.Start("photo", 0.8), sampling, prefix="8", **links)
        assert prompt[out]["inputs"]["model"] == (["8n", 0] if centred else ["1", 0])
        prompt["9"] = {"class_type": "PreviewAny", "inputs": {"source": [out, 0]}}
        comfy.run(prompt)
        latents[centred] = comfy.output(out)["samples"]
    assert prompt["8n"] == {"class_type": "ImagicCentredNoise", "inputs": {"model": ["1", 0], "low_frequencies": 0}}
    assert not torch.allclose(latents[True], latents[False], atol=1e-3)
