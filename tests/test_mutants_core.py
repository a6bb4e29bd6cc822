"""Aimed tests for what the mutation campaign over core/ (README, "Development") found the suite let through:
each test names the behaviour it pins. Host-free and fast (the campaign runs them once per mutant)."""
from __future__ import annotations

import dataclasses

import pytest
import torch

from pack import sub
from test_core import ToyDenoiser

auto = sub("core.auto_eta")
diffusion = sub("core.diffusion")


# ---------------------------------------------------------------------------------------------------------------
# core/auto_eta.py


def _latents():
    g = torch.Generator().manual_seed(3)
    x_input = torch.randn(1, 8, generator=g)
    step = torch.randn(1, 8, generator=g)
    return x_input, step


def _conds():
    g = torch.Generator().manual_seed(4)
    return [torch.randn(1, 8, generator=g)], [torch.randn(1, 8, generator=g)]


def test_the_input_scores_distance_0_a_farther_output_a_larger_one_and_the_default_rule_prefers_the_nearer():
    """The distance term of Auto Eta: 0 for the input itself, growing with the change, and what the default
    rule (gain_minus_distance) uses to break a tie of text gains in favour of the smaller change."""
    x_input, step = _latents()
    far, near = x_input + 2.0 * step, x_input + 0.5 * step
    target, optimized = _conds()
    scores = auto.score_edits(ToyDenoiser(), x_input, [far, x_input, near], [1.0, 0.0, 0.5], target, optimized,
                              draws=8)
    assert scores[1].distance == 0.0
    assert 0.0 < scores[2].distance < scores[0].distance
    # the same gain for the near and the far edit: the default rule must take the near one (the far one is first)
    tied = [dataclasses.replace(scores[i], loss_target=0.5, loss_optimized=1.0) for i in (0, 2)]
    assert tied[0].text_gain == tied[1].text_gain > 0
    assert auto.DEFAULT_RULE == "gain_minus_distance"
    assert auto.choose(tied) == 1 and auto.choose(list(reversed(tied))) == 0


def test_distance_is_the_mse_to_the_input_relative_to_the_inputs_variance():
    x_input, step = _latents()
    out = x_input + step
    target, optimized = _conds()
    (s,) = auto.score_edits(ToyDenoiser(), x_input, [out], [0.7], target, optimized, draws=4)
    assert s.distance == pytest.approx(float(((out - x_input) ** 2).mean() / x_input.var()), rel=1e-6)
    # scale-free: the same edit of a 3x brighter input is as far
    (s3,) = auto.score_edits(ToyDenoiser(), 3 * x_input, [3 * out], [0.7], target, optimized, draws=4)
    assert s3.distance == pytest.approx(s.distance, rel=1e-5)
    # a flat input (no variance) must not divide by zero, and any change of it is far
    flat = torch.zeros(1, 8)
    (f,) = auto.score_edits(ToyDenoiser(), flat, [flat + 1e-3], [0.7], target, optimized, draws=4)
    assert f.distance > 1e3 and torch.isfinite(torch.tensor(f.distance))


def test_scores_are_the_frozen_models_losses_under_each_text_on_the_same_seeded_draws():
    den = ToyDenoiser()
    x_input, step = _latents()
    outputs = [x_input + step, x_input - 0.3 * step]
    target, optimized = _conds()
    scores = auto.score_edits(den, x_input, outputs, [0.6, 0.9], target, optimized, seed=5, draws=6)
    assert [s.eta for s in scores] == [0.6, 0.9]
    noise, sigma = diffusion.NoiseDraws(den, x_input, 5, batch=6).draw()  # one draw, shared by every output
    for s, x in zip(scores, outputs, strict=True):
        assert s.loss_target == pytest.approx(float(diffusion.mean_loss(den, x, target, noise, sigma)), rel=1e-6)
        assert s.loss_optimized == pytest.approx(float(diffusion.mean_loss(den, x, optimized, noise, sigma)),
                                                 rel=1e-6)
    assert scores[0].loss_target != scores[0].loss_optimized
    other = auto.score_edits(den, x_input, outputs, [0.6, 0.9], target, optimized, seed=6, draws=6)
    assert other[0].loss_target != scores[0].loss_target  # the seed chooses the draws
    fewer = auto.score_edits(den, x_input, outputs, [0.6, 0.9], target, optimized, seed=5, draws=2)
    assert fewer[0].loss_target != scores[0].loss_target  # draws sets how many
    default = auto.score_edits(den, x_input, outputs, [0.6, 0.9], target, optimized)
    noise, sigma = diffusion.NoiseDraws(den, x_input, 0, batch=32).draw()  # seed 0, 32 draws by default
    assert default[0].loss_target == pytest.approx(float(diffusion.mean_loss(den, x_input + step, target, noise,
                                                                             sigma)), rel=1e-6)


def test_scoring_needs_one_eta_per_output():
    x_input, step = _latents()
    target, optimized = _conds()
    with pytest.raises(ValueError, match=r"^2 outputs for 3 etas$"):
        auto.score_edits(ToyDenoiser(), x_input, [x_input, step], [0.1, 0.2, 0.3], target, optimized)


def test_an_output_in_another_dtype_is_scored_as_the_inputs_dtype():
    x_input, step = _latents()
    target, optimized = _conds()
    a = auto.score_edits(ToyDenoiser(), x_input, [x_input + step], [0.5], target, optimized, draws=4)
    b = auto.score_edits(ToyDenoiser(), x_input, [(x_input + step).double()], [0.5], target, optimized, draws=4)
    assert a == b


def _scores(gains, distances=None):
    distances = distances or [0.0] * len(gains)
    return [auto.EtaScore(eta=round(0.4 + 0.1 * k, 2), loss_target=1.0 - g, loss_optimized=1.0, distance=d)
            for k, (g, d) in enumerate(zip(gains, distances, strict=True))]


def test_text_gain_is_relative_to_the_loss_under_e_opt_and_safe_at_zero():
    s = auto.EtaScore(eta=0.5, loss_target=3.0, loss_optimized=4.0, distance=0.0)
    assert s.text_gain == pytest.approx(0.25)
    assert auto.EtaScore(eta=0.5, loss_target=0.0, loss_optimized=0.0, distance=0.0).text_gain == 0.0
    d = s.as_dict()
    assert d == {"eta": 0.5, "loss_target": 3.0, "loss_optimized": 4.0, "distance": 0.0, "text_gain": s.text_gain}


def test_a_gain_of_exactly_zero_is_not_a_positive_one():
    """The target text explaining an output only as well as e_opt does is no edit: first_positive and the default
    rule skip it for a later, positive one."""
    s = _scores([-0.1, 0.0, 0.2], distances=[0.0, 0.0, 0.1])
    assert auto.choose(s, "first_positive") == 2
    assert auto.choose(s, "gain_minus_distance") == 2


def test_half_gain_measures_from_the_smallest_eta_and_takes_the_first_that_reaches_exactly_half():
    # from the smallest eta's gain (0.0) to the best (1.0): half is 0.5, reached exactly at index 2
    s = _scores([0.0, 0.25, 0.5, 0.75, 1.0])  # exact in binary: 1 - (1 - g) == g
    assert auto.choose(s, "half_gain") == 2
    # measured from index 0 (-0.5), not index 1 (0.0): half is 0.0, first reached at index 1
    s = _scores([-0.5, 0.0, 0.25, 0.5])
    assert auto.choose(s, "half_gain") == 1
    # no gain over the smallest eta's: the best gain (here a tie at the top: the first one)
    flat = _scores([0.3, 0.3, 0.3])
    assert auto.choose(flat, "half_gain") == 0
    falling = _scores([0.3, 0.2, 0.1])
    assert auto.choose(falling, "half_gain") == 0


def test_choose_refuses_an_unknown_rule_and_no_scores_with_clear_messages():
    with pytest.raises(ValueError) as e:
        auto.choose(_scores([0.1]), "nope")
    assert str(e.value) == f"unknown rule 'nope'; expected one of {', '.join(auto.RULES)}"
    with pytest.raises(ValueError, match=r"^no scores to choose from$"):
        auto.choose([], "max_gain")


def test_eta_candidates_round_to_1e_4_and_refuse_no_count():
    assert auto.eta_candidates(0.0, 1.0, 4) == [0.0, 0.3333, 0.6667, 1.0]
    assert auto.eta_candidates(0.0, 1 / 3, 1) == [0.3333]
    with pytest.raises(ValueError, match=r"^count must be at least 1, got 0$"):
        auto.eta_candidates(0.0, 1.0, 0)


def test_score_table_rows_bars_and_mark():
    s = _scores([-0.5, 0.25, 1.0], distances=[0.0, 0.125, 0.5])
    lines = auto.score_table(s, 2).split("\n")
    assert len(lines) == 4 and lines[0] == "   eta   text gain   distance"
    for line, score in zip(lines[1:], s, strict=True):
        assert line.startswith(f"{score.eta:6.2f}  {score.text_gain:+9.4f}  {score.distance:9.4f}  ")
    bars = [line[30:40].strip() for line in lines[1:]]
    assert bars == ["-----", "+" * 2, "+" * 10]  # 10 marks for the largest |gain|, signed, in proportion
    assert lines[3].endswith("  <- chosen") and lines[1].endswith(" ") and not lines[2].endswith("chosen")
    assert lines[1] == lines[1][:40] and len(lines[1]) == 40  # an unchosen row has no mark
    small = auto.score_table(_scores([0.5, 2.0]), 0).split("\n")
    assert small[1][30:40].strip() == "++" and small[2][30:40].strip() == "+" * 10  # relative to the largest
    zero = auto.score_table(_scores([0.0, 0.0]), 0).split("\n")  # no gain at all: empty bars, no division by 0
    assert zero[1][30:40].strip() == "" and zero[2][30:40].strip() == ""


def test_scores_json_names_the_rule_the_choice_its_eta_and_every_score():
    s = _scores([-0.2, 0.1, 0.3])
    report = auto.scores_json(s, 1, "first_positive")
    assert report == {"rule": "first_positive", "chosen": 1, "eta": s[1].eta, "scores": [x.as_dict() for x in s]}
    assert report["scores"][2]["text_gain"] == s[2].text_gain


# ---------------------------------------------------------------------------------------------------------------
# core/conditioning.py, core/precision.py, core/training.py

conditioning = sub("core.conditioning")
precision = sub("core.precision")
training = sub("core.training")


def test_interpolation_between_two_nonzero_embeddings_is_linear_in_eta():
    o, t = torch.full((1, 2, 3), 2.0), torch.full((1, 2, 3), 5.0)
    for eta in (0.0, 0.5, 1.0, 1.5, -0.5):
        assert torch.allclose(conditioning.interpolate(t, o, eta), 2.0 + eta * 3.0 + torch.zeros(1, 2, 3))


def test_interpolation_happens_on_the_optimized_embeddings_device_in_the_wider_dtype():
    o = torch.zeros(1, 2, 3, device="meta")  # a device that is not the target's
    assert conditioning.interpolate(torch.ones(1, 2, 3), o, 0.5).device == o.device
    mixed = conditioning.interpolate(torch.ones(1, 2, 3), torch.zeros(1, 2, 3, dtype=torch.bfloat16), 0.25)
    assert mixed.dtype == torch.float32 and torch.allclose(mixed, torch.full((1, 2, 3), 0.25))


def test_mixed_precision_asks_about_the_given_device(monkeypatch):
    asked = []
    monkeypatch.setattr(precision, "native_bf16", lambda device: asked.append(device) or True)
    device = torch.device("cpu")
    assert precision.Precision.for_device(device, mixed=True).half == torch.bfloat16
    assert asked == [device]


def test_autocast_uses_the_precisions_own_half_type():
    fp16 = precision.Precision(torch.float16)
    with fp16.autocast(torch.device("cpu")):
        assert (torch.randn(2, 4) @ torch.randn(4, 4)).dtype == torch.float16


def _no_cpu_checks(monkeypatch, avx512=None, amx=None):
    for name, answer in (("_is_avx512_bf16_supported", avx512), ("_is_amx_tile_supported", amx)):
        if answer is None:
            monkeypatch.delattr(torch.cpu, name, raising=False)
        else:
            monkeypatch.setattr(torch.cpu, name, lambda answer=answer: answer)


@pytest.mark.parametrize("avx512, amx, native", [
    (True, False, True), (False, True, True), (False, False, False), (None, True, True), (True, None, True),
    (None, None, False), (False, None, False),
])
def test_a_cpu_computes_bf16_natively_with_avx512_bf16_or_amx(monkeypatch, avx512, amx, native):
    _no_cpu_checks(monkeypatch, avx512, amx)
    assert precision.native_bf16(torch.device("cpu")) is native


def test_a_cpu_without_torch_cpu_checks_is_not_native(monkeypatch):
    monkeypatch.delattr(torch, "cpu")
    assert precision.native_bf16(torch.device("cpu")) is False


@pytest.mark.parametrize("supported", [True, False])
def test_cuda_bf16_is_native_only_without_emulation(monkeypatch, supported):
    asked = []
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda **kw: asked.append(kw) or supported)
    _no_cpu_checks(monkeypatch, True, True)  # the CPU's answer must not leak into the CUDA one
    assert precision.native_bf16(torch.device("cuda")) is supported
    assert asked == [{"including_emulation": False}]


def test_other_devices_never_compute_bf16_natively(monkeypatch):
    _no_cpu_checks(monkeypatch, True, True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda **kw: True)
    assert precision.native_bf16(torch.device("mps")) is False
    assert precision.native_bf16(torch.device("meta")) is False


def test_a_non_finite_loss_names_the_value_and_the_step_counted_from_1():
    error = training.NonFiniteLoss(2, float("nan"))
    assert str(error) == "loss became nan at step 3" and error.step == 2


# ---------------------------------------------------------------------------------------------------------------
# core/grid.py

grid = sub("core.grid")


def _draw():
    from PIL import Image, ImageDraw

    return ImageDraw.Draw(Image.new("RGB", (8, 8)))


def test_font_size_is_the_tile_width_over_9_between_14_and_40_px():
    assert [grid.font_size(9 * k) for k in range(14, 41)] == list(range(14, 41))
    assert grid.font_size(9 * 20 + 8) == 20 and isinstance(grid.font_size(200), int)
    assert grid.font_size(1) == grid.font_size(126) == 14 and grid.font_size(9 * 41) == grid.font_size(4000) == 40


def test_fit_keeps_the_largest_font_that_fits_even_exactly():
    draw, text = _draw(), "eta 0.75"
    for size in (14, 17, 23):
        width = draw.textlength(text, font=grid._font(size))  # exactly as wide as the text at that size
        fitted, font = grid._fit(draw, text, width, 30)
        assert fitted == text and font.size == size


def test_fit_goes_down_to_the_minimum_font_then_cuts_the_text_with_an_ellipsis():
    draw = _draw()
    text = "edit: a photo of a sitting dog on a red sofa, eta 0.7"
    for width in range(40, 110, 7):
        fitted, font = grid._fit(draw, text, width, 20)
        assert font.size == grid.MIN_FONT
        assert fitted.endswith("…") and text.startswith(fitted[:-1])
        n = len(fitted) - 1
        assert draw.textlength(fitted, font=font) <= width < draw.textlength(text[:n + 1] + "…", font=font)
    exact = grid._font(grid.MIN_FONT)
    width = draw.textlength(text, font=exact)  # fits only at the minimum size, exactly: not cut
    fitted, font = grid._fit(draw, text, width, 20)
    assert fitted == text and font.size == grid.MIN_FONT


def test_fit_leaves_an_ellipsis_or_nothing_when_even_that_is_too_wide():
    draw = _draw()
    font = grid._font(grid.MIN_FONT)
    ellipsis = draw.textlength("…", font=font)
    assert grid._fit(draw, "WW", ellipsis, 20)[0] == "…"
    assert grid._fit(draw, "W", 1, 20)[0] == ""
    assert grid._fit(draw, "WW", 1, 20)[0] == ""


def test_a_label_that_fits_within_2_px_margins_is_drawn_centred_at_the_tiles_font_size():
    import numpy as np
    from PIL import Image, ImageDraw

    draw, text = _draw(), "eta 0.75 +0.1234"
    for width in range(60, 400):  # a tile on which the label fills the width less the margins (4 px) almost exactly
        if width - 5 < draw.textlength(text, font=grid._font(grid.font_size(width))) <= width - 4:
            break
    else:
        pytest.fail("no width found")
    height = 30
    strip = grid.label_strip(text, width, height)
    expected = Image.new("RGB", (width, height), grid.BACKGROUND)
    ImageDraw.Draw(expected).text((width / 2, height / 2), text, fill=grid.INK, font=grid._font(grid.font_size(width)),
                                  anchor="mm")
    assert np.array_equal(np.asarray(strip), np.asarray(expected))


def _tiles(n, size=(16, 12)):
    from PIL import Image

    return [Image.new("RGB", size, (40 * i, 0, 0)) for i in range(n)]


def test_grid_columns_0_or_default_is_one_row_and_1_is_one_column():
    tiles = _tiles(3)
    row = (3 * 16 + 2 * grid.GAP, 12)
    assert grid.labelled_grid(tiles, ["", "", ""]).size == row
    assert grid.labelled_grid(tiles, ["", "", ""], columns=0).size == row
    assert grid.labelled_grid(tiles, ["", "", ""], columns=-2).size == row
    assert grid.labelled_grid(tiles, ["", "", ""], columns=1).size == (16, 3 * 12 + 2 * grid.GAP)
    assert grid.labelled_grid(tiles, ["", "", ""], columns=9).size == row
    assert grid.labelled_row(tiles, ["", "", ""]).size == row


def test_grid_gaps_are_the_background_colour_and_no_images_is_a_clear_error():
    import numpy as np

    out = np.asarray(grid.labelled_grid(_tiles(2), ["", ""]))
    assert (out[:, 16:16 + grid.GAP] == grid.BACKGROUND).all()
    with pytest.raises(ValueError, match=r"^no images to lay out$"):
        grid.labelled_grid([], [])


def test_tensor_to_pils_saturates_out_of_range_values_and_drops_alpha():
    images = torch.tensor([-0.5, 0.0, 0.5, 1.0, 1.7]).view(1, 1, 5, 1).expand(1, 1, 5, 4).clone()
    (pil,) = grid.tensor_to_pils(images)
    assert pil.mode == "RGB"
    assert [pil.getpixel((x, 0))[0] for x in range(5)] == [0, 0, int(0.5 * 255), 255, 255]


def test_pil_to_tensor_gives_float32_rgb_from_any_mode():
    from PIL import Image

    grey = Image.new("L", (5, 3), 51)
    t = grid.pil_to_tensor(grey)
    assert t.dtype == torch.float32 and t.shape == (1, 3, 5, 3) and torch.allclose(t, torch.full_like(t, 0.2))
