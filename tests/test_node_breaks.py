"""Aimed tests for node glue a reviewer's deliberate breaks got through (issue 22): the node returns what its rule
chose, not another candidate; the Labelled Grid lays out every input in input order, frames in batch order. Each
runs the node's own execute on the booted host with stand-ins only where a model would be (fast)."""
from __future__ import annotations

import json

import pytest
import torch

from pack import sub

auto = sub("core.auto_eta")


class PixelVae:
    """decode: a latent's mean as a flat 8x8 RGB picture (the picture says which latent it came from)."""

    def decode(self, samples):
        return samples.float().mean(dim=(1, 2, 3)).view(-1, 1, 1, 1).expand(-1, 8, 8, 3).clone()


@pytest.mark.parametrize("rule, gains", [
    ("max_gain", [-0.1, 0.1, 0.3, 0.2]),  # the best gain: index 2
    ("first_positive", [-0.1, 0.1, 0.3, 0.2]),  # the smallest eta with a positive gain: index 1
    ("gain_minus_distance", [-0.2, 0.4, 0.5, 0.45]),  # distances 0, 0.1, 0.4, 0.9: index 1
])
def test_auto_eta_returns_the_edit_its_rule_chose(comfy, monkeypatch, rule, gains):
    node = sub("nodes.auto_eta")
    # the candidate at eta e is a latent full of e (from the interpolated conditioning), so every output names
    # the candidate it is
    monkeypatch.setattr(node.starts, "sample",
                        lambda start, strength, model, positive, *a: positive[0][0].mean().expand(1, 4, 2, 2).clone())
    distances = [0.0, 0.1, 0.4, 0.9]

    def score(model, latent, outputs, etas, target, optimized, seed, draws):
        assert [float(x.mean()) for x in outputs] == pytest.approx(etas)
        return [auto.EtaScore(eta=e, loss_target=1.0 - g, loss_optimized=1.0, distance=d)
                for e, g, d in zip(etas, gains, distances, strict=True)]

    monkeypatch.setattr(node, "score", score)
    monkeypatch.setattr(node, "check_fit", lambda *a: None)  # no real models here; the fit has its own tests
    expected = auto.choose(score(None, None, [torch.full((1,), e) for e in (0.1, 0.4, 0.7, 1.0)],
                                 [0.1, 0.4, 0.7, 1.0], None, None, 0, 1), rule)
    assert expected != 0 and expected != 3  # neither end: a node returning a fixed end would be caught
    optimized, target = [[torch.zeros(1, 2, 4), {}]], [[torch.ones(1, 2, 4), {}]]
    with torch.inference_mode():
        out = node.ImagicAutoEta.execute(
            model=None, finetuned_model=None, optimized=optimized, target=target, negative=target,
            latent={"samples": torch.zeros(1, 4, 2, 2)}, vae=PixelVae(), eta_min=0.1, eta_max=1.0, count=4, rule=rule,
            seed=0, steps=1, cfg=1.0, sampler_name="euler", scheduler="normal", score_draws=1)
    image, latent, grid, eta, report = out.result
    etas = [0.1, 0.4, 0.7, 1.0]
    assert eta == etas[expected]
    assert torch.allclose(latent["samples"], torch.full((1, 4, 2, 2), etas[expected]))
    assert image.shape == (1, 8, 8, 3) and torch.allclose(image, torch.full_like(image, etas[expected]))
    report = json.loads(report)
    assert report["chosen"] == expected and report["rule"] == rule and report["eta"] == etas[expected]
    assert "<- chosen" in out.ui["text"][0].splitlines()[1 + expected]


def test_labelled_grid_lays_out_every_input_in_input_order_and_frames_in_batch_order(comfy):
    node = sub("nodes.labelled_grid")
    grid = sub("core.grid")

    def frames(*values):
        return torch.stack([torch.full((16, 16, 3), v) for v in values])

    # images, images_2 (two frames), images_5 (a gap before it), images_8 (the last input)
    inputs = {"images": frames(0.1), "images_2": frames(0.2, 0.3), "images_5": frames(0.5), "images_8": frames(0.8)}
    with torch.inference_mode():
        (out,) = node.ImagicLabelledGrid.execute(labels="", columns=0, **inputs).result
    values = [0.1, 0.2, 0.3, 0.5, 0.8]
    assert out.shape == (1, 16, len(values) * 16 + (len(values) - 1) * grid.GAP, 3)
    for i, v in enumerate(values):
        x = i * (16 + grid.GAP) + 8
        assert abs(float(out[0, 8, x, 0]) - v) < 1 / 255 + 1e-6, (i, float(out[0, 8, x, 0]), v)
