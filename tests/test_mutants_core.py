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
    s = _scores([-0.1, 0.0, 0.05], distances=[0.0, 0.0, 0.1])  # 0.0 - 0.0 would beat 0.05 - 0.1
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
    # no gain over the smallest eta's, listed from the largest eta down: the best gain as max_gain picks it
    backwards = list(reversed(_scores([0.3, 0.1, 0.3])))
    assert auto.choose(backwards, "half_gain") == auto.choose(backwards, "max_gain") == 0


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
    assert auto.score_table([], 0) == "   eta   text gain   distance"  # nothing scored: the header alone
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
    monkeypatch.setattr(precision, "trains_in_bf16", lambda device: asked.append(device) or True)
    device = torch.device("cpu")
    assert precision.Precision.for_device(device, mixed=True).half == torch.bfloat16
    assert asked == [device]


def test_autocast_uses_the_precisions_own_half_type():
    fp16 = precision.Precision(torch.float16)
    with fp16.autocast(torch.device("cpu")):
        assert (torch.randn(2, 4) @ torch.randn(4, 4)).dtype == torch.float16


@pytest.mark.parametrize("supported", [True, False])
def test_cuda_trains_in_bf16_only_with_bf16_units_not_emulation(monkeypatch, supported):
    asked = []
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda **kw: asked.append(kw) or supported)
    assert precision.trains_in_bf16(torch.device("cuda")) is supported
    assert asked == [{"including_emulation": False}]


def test_other_devices_never_train_in_bf16(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda **kw: True)  # a CUDA answer must not leak
    for name in ("cpu", "mps", "meta"):
        assert precision.trains_in_bf16(torch.device(name)) is False


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


# ---------------------------------------------------------------------------------------------------------------
# core/finetune_format.py

fmt = sub("core.finetune_format")
fpr = sub("core.fingerprint")


def _problem_and_fix(call, *args, **kwargs) -> tuple[str, str]:
    with pytest.raises(fmt.FormatError) as e:
        call(*args, **kwargs)
    assert str(e.value) == f"{e.value.problem}. Fix: {e.value.fix}"
    return e.value.problem, e.value.fix


SAVE_AGAIN = "the file is damaged: save the fine-tune again"
EDITED = "the file is damaged or was edited: save the fine-tune again"
CONNECT_LORA = "connect the 'lora' output of Imagic Finetune UNet"


def test_format_errors_say_the_problem_and_the_fix():
    e = fmt.FormatError("it broke", "mend it")
    assert (e.problem, e.fix, str(e)) == ("it broke", "mend it", "it broke. Fix: mend it")


def test_a_target_text_over_the_limit_is_refused_in_bytes_not_characters():
    fmt.check_text("x" * fmt.MAX_TEXT_BYTES)
    fmt.check_text("é" * (fmt.MAX_TEXT_BYTES // 2))
    problem, fix = _problem_and_fix(fmt.check_text, "é" * (fmt.MAX_TEXT_BYTES // 2 + 1))
    assert problem == (f"the target text is {fmt.MAX_TEXT_BYTES + 2} bytes; a fine-tune file stores at most "
                       f"{fmt.MAX_TEXT_BYTES} bytes of text")
    assert fix == "shorten target_text (a prompt is usually a few hundred bytes)"
    fmt.check_text("\ud800")  # a lone surrogate (from JSON) is counted, not an encoding error


def test_conditioning_errors_name_the_entry_and_the_fix():
    assert _problem_and_fix(fmt.conditioning_to_tensors, [[torch.zeros(1, 2, 3), {}], (torch.zeros(1), {}, 1)]) == (
        "e_opt entry 1 is not a [tensor, dict] pair", "connect the 'optimized' output of Imagic Optimize Embedding")
    for bad in ([torch.zeros(1), {}], [[torch.zeros(1)], {}], [torch.zeros(1), []], "ab", [torch.zeros(1)]):
        with pytest.raises(fmt.FormatError, match="not a \\[tensor, dict\\] pair"):
            fmt.conditioning_to_tensors([bad] if bad != [torch.zeros(1), {}] else [(torch.zeros(1), {}, 1)])
    nan = [[torch.zeros(1, 2, 3), {"pooled_output": torch.tensor([float("nan")])}]]
    assert _problem_and_fix(fmt.conditioning_to_tensors, nan) == (
        "e_opt has NaN or infinite values (in 'imagic.e_opt.0.pooled_output')",
        "run Imagic Optimize Embedding again with a lower learning_rate")
    assert _problem_and_fix(fmt.conditioning_from_tensors, {}, [{"tensors": ["cross_attn"]}]) == (
        "the e_opt tensor 'imagic.e_opt.0.cross_attn' listed in the metadata is missing", SAVE_AGAIN)
    flat = {"imagic.e_opt.0.cross_attn": torch.zeros(2, 3)}
    assert _problem_and_fix(fmt.conditioning_from_tensors, flat, [{"tensors": ["cross_attn"]}]) == (
        "e_opt entry 0 has no 'cross_attn' tensor of shape (batch, tokens, width)", SAVE_AGAIN)
    pooled_only = {"imagic.e_opt.0.pooled_output": torch.zeros(1, 3)}
    with pytest.raises(fmt.FormatError, match="no 'cross_attn' tensor"):
        fmt.conditioning_from_tensors(pooled_only, [{"tensors": ["pooled_output"]}])


def test_conditioning_without_plain_values_round_trips_to_an_entry_without_them():
    tensors, layout, dropped = fmt.conditioning_to_tensors([[torch.ones(1, 2, 3), {"hook": object()}]])
    assert dropped == ["0.hook"] and layout == [{"tensors": ["cross_attn"], "values": {}}]
    back = fmt.conditioning_from_tensors(tensors, [{"tensors": ["cross_attn"]}])  # no "values" key at all
    assert back[0][1] == {} and torch.equal(back[0][0], torch.ones(1, 2, 3))


def test_plain_values_of_an_entry_are_stored_as_json_and_others_reported():
    values = {"n": None, "b": True, "i": 3, "f": 0.5, "s": "x", "t": (1, [2, "y"]), "d": {"k": (1, 2)}}
    cond = [[torch.zeros(1, 2, 3), {**values, "obj": object(), "int_keys": {1: 2}, "deep": [object()],
                                    "deep_dict": {"k": object()}}]]
    _, layout, dropped = fmt.conditioning_to_tensors(cond)
    assert layout[0]["values"] == {"n": None, "b": True, "i": 3, "f": 0.5, "s": "x", "t": [1, [2, "y"]],
                                   "d": {"k": [1, 2]}}
    assert dropped == ["0.obj", "0.int_keys", "0.deep", "0.deep_dict"]
    with pytest.raises(TypeError, match="^object$"):
        fmt._json_value(object())


def test_unet_key_checks_say_what_is_wrong_and_the_fix():
    assert _problem_and_fix(fmt.check_unet_keys, {"diffusion_model.a.diff": torch.zeros(1),
                                                  "diffusion_model.a.weight": torch.zeros(1),
                                                  "x.lora_up.weight": torch.zeros(1)}) == (
        "the fine-tune has 2 key(s) that are not UNet LoRA/diff weights (e.g. 'diffusion_model.a.weight')",
        CONNECT_LORA)
    assert _problem_and_fix(fmt.check_unet_keys, {"diffusion_model.b.diff": torch.tensor([float("inf")]),
                                                  "diffusion_model.a.diff": torch.zeros(1)}) == (
        "the fine-tune has NaN or infinite values (in 'diffusion_model.b.diff')",
        "train again with a lower learning_rate")
    assert _problem_and_fix(fmt.method_of, ["imagic.e_opt.0.cross_attn"]) == (
        "the fine-tune holds no UNet weights (no 'diffusion_model.' keys)", CONNECT_LORA)
    assert fmt.method_of(["diffusion_model.a.diff_b", "diffusion_model.a.lora_up.weight"]) == "full"
    assert fmt.method_of(["diffusion_model.a.diff", "diffusion_model.a.lora_up.weight"]) == "full"
    assert fmt.method_of(["diffusion_model.a.alpha", "diffusion_model.a.lora_up.weight"]) == "lora"
    assert fmt.lora_rank_of({"diffusion_model.a.diff": torch.zeros(2, 2)}) is None
    assert fmt.lora_rank_of({"diffusion_model.a.lora_down.weight": torch.zeros(2, 4),
                             "diffusion_model.b.lora_down.weight": torch.zeros(5, 4)}) == 5


def test_fit_checks_name_the_weight_and_the_fix():
    fix = "connect the model the fine-tune was trained from (the 'model' input of Imagic Finetune UNet)"
    shapes = {"a.weight": (16, 3, 2, 2), "a.bias": (16,)}
    assert _problem_and_fix(fmt.check_fits, {"diffusion_model.b.diff": torch.zeros(1)}, shapes) == (
        "the fine-tune patches 'b.weight', which this model does not have", fix)
    fmt.check_fits({"diffusion_model.a.lora_down.weight": torch.zeros(4, 3, 2, 2),
                    "diffusion_model.a.lora_up.weight": torch.zeros(16, 4, 1, 1)}, shapes)
    # a down factor whose rows are the kernel's size but of another layout is still one of 12 values per row
    assert _problem_and_fix(fmt.check_fits, {"diffusion_model.a.lora_down.weight": torch.zeros(4, 11)}, shapes) == (
        "'diffusion_model.a.lora_down.weight' has shape (4, 11), which does not fit 'a.weight' (16, 3, 2, 2)", fix)
    with pytest.raises(fmt.FormatError, match="does not fit"):  # a rank-1 down factor of the wrong width
        fmt.check_fits({"diffusion_model.a.lora_down.weight": torch.zeros(1, 11)}, shapes)
    fmt.check_fits({"diffusion_model.a.lora_down.weight": torch.zeros(1, 12)}, shapes)


def _delta_and_cond():
    g = torch.Generator().manual_seed(7)
    full = {"diffusion_model.a.diff": torch.randn(8, 6, generator=g), "diffusion_model.a.diff_b": torch.randn(8)}
    lora = {"diffusion_model.a.lora_up.weight": torch.randn(8, 3, generator=g),
            "diffusion_model.a.lora_down.weight": torch.randn(3, 6, generator=g)}
    cond = [[torch.randn(1, 4, 6, generator=g), {"strength": 0.5, "hook": object()}]]
    return full, lora, cond


FILE_ARGS = dict(svd_rank=2, fingerprint={"architecture": "abc", "sample": [1.0]}, model_family="SD15",
                 target_text="a dog", suggested_eta=0.7)


@pytest.mark.parametrize("kind, storage", [("lora", "svd"), ("full", "exact"), ("full", "svd")])
def test_build_file_stores_the_delta_as_asked_e_opt_and_metadata_that_reads_back(kind, storage):
    full, lora, cond = _delta_and_cond()
    delta = lora if kind == "lora" else full
    steps = []
    tensors, meta, dropped = fmt.build_file(delta, cond, storage=storage, training={"finetune_steps": 9},
                                            on_step=lambda i, n: steps.append((i, n)), **FILE_ARGS)
    e_opt, layout, _ = fmt.conditioning_to_tensors(cond)
    stored = "lora" if kind == "lora" else storage
    unet = fmt.unet_tensors(delta, stored, 2)
    assert tensors.keys() == {**unet, **e_opt}.keys()
    assert all(torch.equal(tensors[k], v) for k, v in {**unet, **e_opt}.items())
    assert dropped == ["0.hook"]
    assert steps == ([(1, 1)] if stored == "svd" else [])
    info = fmt.read_metadata(meta)
    assert (info.method, info.storage) == (kind, stored)
    assert info.fingerprint == FILE_ARGS["fingerprint"] and info.e_opt_layout == layout
    assert (info.model_family, info.target_text, info.suggested_eta) == ("SD15", "a dog", 0.7)
    assert info.digest == fmt.tensors_digest(tensors)
    expected = {"finetune_steps": 9, **({"lora_rank": 3} if kind == "lora" else {}),
                **({"svd_rank": 2} if stored == "svd" else {})}
    assert info.training == expected
    assert fmt.build_file(delta, cond, storage=storage, **FILE_ARGS)[1].get("imagic.finetune_steps") is None


def test_build_file_extracts_with_the_randomised_svd_only_when_asked(monkeypatch):
    full, _, cond = _delta_and_cond()
    asked = []
    real = lora.svd_extract
    monkeypatch.setattr(fmt, "svd_extract", lambda d, r, lowrank=False: asked.append(lowrank) or real(d, r))
    fmt.build_file(full, cond, storage="svd", **FILE_ARGS)
    fmt.build_file(full, cond, storage="svd", lowrank=True, **FILE_ARGS)
    fmt.unet_tensors(full, "svd")
    assert asked == [False, True, False]


def test_svd_storage_keeps_the_deltas_dtype_and_extracts_at_rank_64_by_default():
    delta = {"diffusion_model.a.diff": torch.randn(70, 80).half()}
    out = fmt.unet_tensors(delta, "svd")
    assert out["diffusion_model.a.lora_up.weight"].dtype == torch.float16
    assert out["diffusion_model.a.lora_down.weight"].dtype == torch.float16
    assert out["diffusion_model.a.lora_down.weight"].shape == (64, 80)
    assert out["diffusion_model.a.lora_up.weight"].shape == (70, 64)
    with pytest.raises(ValueError, match=r"^unknown storage 'zip'$"):
        fmt.unet_tensors(delta, "zip")


def test_svd_extract_is_the_exact_truncated_svd_at_rank_1_and_on_1d_kernels():
    g = torch.Generator().manual_seed(8)
    m = torch.randn(10, 7, generator=g)
    up, down = lora.svd_extract(m, 1)
    u, s, vh = torch.linalg.svd(m, full_matrices=False)
    assert up.shape == (10, 1) and down.shape == (1, 7)
    assert torch.allclose(up @ down, s[0] * torch.outer(u[:, 0], vh[0]), atol=1e-5)
    kernel = torch.randn(6, 4, 3, generator=g)  # a 1-d convolution
    up, down = lora.svd_extract(kernel, 2)
    assert up.shape == (6, 2, 1) and down.shape == (2, 4, 3)


def test_lowrank_extraction_is_torchs_randomised_svd_with_10_extra_columns_and_2_iterations():
    g = torch.Generator().manual_seed(9)
    m = torch.randn(40, 30, generator=g)
    torch.manual_seed(0)
    up, down = lora.svd_extract(m, 4, lowrank=True)
    torch.manual_seed(0)
    u, s, v = torch.svd_lowrank(m, q=14, niter=2)
    assert torch.allclose(up, u[:, :4] * s[:4], atol=1e-6) and torch.allclose(down, v.T[:4], atol=1e-6)


def test_the_optional_clamp_is_at_the_quantile_of_both_factors_both_ways():
    g = torch.Generator().manual_seed(10)
    for scale, clamped in ((3.0, 0), (1e-3, 1)):  # large singular values: up is clamped; small ones: down
        m = torch.randn(30, 20, generator=g) * scale
        up0, down0 = lora.svd_extract(m, 5)
        up, down = lora.svd_extract(m, 5, clamp_quantile=0.9)
        hi = torch.quantile(torch.cat([up0.flatten(), down0.flatten()]), 0.9)
        assert torch.equal(up, up0.clamp(-hi, hi)) and torch.equal(down, down0.clamp(-hi, hi))
        factor = (up, down)[clamped]
        assert factor.min() == -hi and factor.max() == hi  # clamped both ways


def _fingerprint(shapes, seed=0):
    g = torch.Generator().manual_seed(seed)
    weights = {k: torch.randn(s, generator=g) for k, s in shapes.items()}
    return fpr.fingerprint(shapes, lambda n: weights[n]), weights


def test_fingerprint_samples_every_matrix_evenly_by_name_from_first_to_last():
    shapes = {f"m{i:02d}.weight": (4, 3) for i in range(5)} | {"v.bias": (4,), "empty.weight": (0, 3)}
    fp, weights = _fingerprint(shapes)
    assert fp["tensors"] == 7 and len(fp["architecture"]) == 32
    expected = []
    for name in sorted(n for n in shapes if n.startswith("m")):  # every matrix (5 < 32), the empty one left out
        flat = weights[name].reshape(-1)
        expected += [float(f"{float(flat[i]):.7g}") for i in fpr._sample_positions(name, 12, fpr.VALUES_PER_TENSOR)]
    assert fp["sample"] == expected
    one, _ = _fingerprint({"only.weight": (2, 2)})
    assert len(one["sample"]) == fpr.VALUES_PER_TENSOR
    many = {f"m{i:03d}.weight": (2, 2) for i in range(100)}
    reads = []
    fpr.fingerprint(many, lambda n: reads.append(n) or torch.zeros(2, 2))
    assert reads[0] == "m000.weight" and reads[-1] == "m099.weight" and len(reads) == fpr.SAMPLED_TENSORS


def test_sample_positions_are_4_byte_little_endian_words_of_the_names_sha256():
    import hashlib

    digest = hashlib.sha256(b"a.weight").digest()
    words = [int.from_bytes(digest[4 * j:4 * j + 4], "little") for j in range(8)]
    assert fpr._sample_positions("a.weight", 1000, 8) == [w % 1000 for w in words]
    assert fpr._sample_positions("a.weight", 2 ** 40, 8) == words  # 4 bytes each: no position beyond 2^32


def test_architecture_hash_covers_names_and_every_dimension():
    base = {"a.weight": (4, 3), "b.weight": (2, 2)}
    arch = fpr.fingerprint(base, lambda n: torch.zeros(base[n]))["architecture"]
    for other in ({"a.weight": (4, 3), "b.weight": (2, 3)}, {"a.weight": (3, 4), "b.weight": (2, 2)},
                  {"a.weight": (43,), "b.weight": (2, 2)}, {"a.weight": (4, 3), "c.weight": (2, 2)}):
        assert fpr.fingerprint(other, lambda n, o=other: torch.zeros(o[n]))["architecture"] != arch
    import hashlib

    assert arch == hashlib.sha256(b"a.weight:4,3\nb.weight:2,2").hexdigest()[:32]


def test_fingerprint_comparison_says_which_case_and_by_how_much():
    saved = {"architecture": "aa", "tensors": 3, "sample": [1.0, 2.0, 2.0]}
    check = fpr.compare_fingerprints(saved, dict(saved, architecture="bb", tensors=4))
    assert (check.same, check.architecture_differs) == (False, True)
    assert check.detail == ("the model has another architecture (weight names/shapes: 4 tensors, hash bb; the file's "
                            "base: 3 tensors, hash aa)")
    assert fpr.compare_fingerprints(saved, dict(saved)) == fpr.FingerprintCheck(True, False, "same weights")
    assert fpr.compare_fingerprints(saved, dict(saved, sample=[1.0])) == fpr.FingerprintCheck(
        False, False, "the weight samples have different lengths")
    assert fpr.compare_fingerprints(saved, {"architecture": "aa", "tensors": 3}) == fpr.FingerprintCheck(
        False, False, "the weight samples have different lengths")
    empty = {"architecture": "aa"}
    assert fpr.compare_fingerprints(empty, dict(empty)) == fpr.FingerprintCheck(
        True, False, "same architecture (no weights to sample)")
    near = fpr.compare_fingerprints(saved, dict(saved, sample=[1.0, 2.0, 2.015]))  # 0.5 % of the norm 3
    assert near == fpr.FingerprintCheck(True, False, "same weights at another precision (sampled values differ by "
                                                     "0.5 %)")
    edge = fpr.compare_fingerprints({"architecture": "aa", "sample": [0.0, 100.0]},
                                    {"architecture": "aa", "sample": [0.0, 101.0]})  # exactly the 1 % tolerance
    assert edge.same and "another precision" in edge.detail
    # compared in double precision: a difference below float32's resolution is still a difference
    fine = fpr.compare_fingerprints({"architecture": "aa", "sample": [1.0]},
                                    {"architecture": "aa", "sample": [1 + 1e-9]})
    assert fine.same and "another precision" in fine.detail
    far = fpr.compare_fingerprints(saved, dict(saved, sample=[1.0, 2.0, 2.6]))
    assert far == fpr.FingerprintCheck(False, False, "same architecture but other weights (sampled values differ by "
                                                     "20 %)")
    zero = {"architecture": "aa", "sample": [0.0, 0.0]}
    tiny = fpr.compare_fingerprints(zero, dict(zero, sample=[0.0, 1e-13]))  # all-zero weights: no division by 0
    assert not tiny.same and "other weights" in tiny.detail


def _meta(**change):
    meta = fmt.build_metadata(method="full", storage="svd", fingerprint={"architecture": "x", "tensors": 2,
                                                                        "sample": [1.0, -2]},
                              model_family="SDXL", target_text="t", suggested_eta=0.5,
                              e_opt_layout=[{"tensors": ["cross_attn", "pooled_output"], "values": {"a": 1}}],
                              digest="d", training={"svd_rank": 8, "embedding_learning_rate": 0.001})
    meta.update(change)
    return {k: v for k, v in meta.items() if v is not None}


def test_metadata_is_compact_json_and_every_field_reads_back():
    meta = _meta()
    assert meta["imagic.base_fingerprint"] == '{"architecture":"x","tensors":2,"sample":[1.0,-2]}'
    assert meta["imagic.e_opt"] == '[{"tensors":["cross_attn","pooled_output"],"values":{"a":1}}]'
    info = fmt.read_metadata(meta)
    assert info == fmt.FinetuneInfo(format_version=1, method="full", storage="svd",
                                    fingerprint={"architecture": "x", "tensors": 2, "sample": [1.0, -2]},
                                    model_family="SDXL", target_text="t", suggested_eta=0.5,
                                    e_opt_layout=[{"tensors": ["cross_attn", "pooled_output"], "values": {"a": 1}}],
                                    digest="d", training={"svd_rank": 8, "embedding_learning_rate": 0.001})
    bare = fmt.read_metadata(_meta(**{"imagic.model_family": None, "imagic.target_text": None}))
    assert bare.model_family == "" and bare.target_text == ""
    older = fmt.read_metadata(_meta(**{"imagic.format_version": "0"}))
    assert older.format_version == 0
    odd = fmt.read_metadata(_meta(**{"imagic.svd_rank": "eight"}))  # an unreadable optional number is left out
    assert odd.training == {"embedding_learning_rate": 0.001}


@pytest.mark.parametrize("change, problem", [
    ({"imagic.format_version": None}, "the Imagic metadata has no valid format_version"),
    ({"imagic.format_version": "one"}, "the Imagic metadata has no valid format_version"),
    ({"imagic.method": None}, "the Imagic metadata is incomplete or invalid (KeyError: 'imagic.method')"),
    ({"imagic.suggested_eta": "high"},
     "the Imagic metadata is incomplete or invalid (ValueError: could not convert string to float: 'high')"),
    ({"imagic.method": "dora"}, "unknown method/storage 'dora'/'svd' in the metadata"),
    ({"imagic.method": "lora", "imagic.unet_storage": "zip"}, "unknown method/storage 'lora'/'zip' in the metadata"),
    ({"imagic.e_opt": "[]"}, "the e_opt layout in the metadata (imagic.e_opt) is invalid"),
    ({"imagic.base_fingerprint": "[]"}, "the base model fingerprint in the metadata (imagic.base_fingerprint) is "
                                        "invalid"),
    ({"imagic.suggested_eta": "nan"}, "the suggested eta in the metadata is nan, not a finite number"),
])
def test_bad_metadata_says_what_is_wrong_and_that_the_file_was_damaged_or_edited(change, problem):
    assert _problem_and_fix(fmt.read_metadata, _meta(**change)) == (problem, EDITED)


def test_a_newer_format_asks_for_an_update():
    assert _problem_and_fix(fmt.read_metadata, _meta(**{"imagic.format_version": "2"})) == (
        "it was saved in Imagic file format version 2; this comfyui-imagic reads version 1 and older",
        "update comfyui-imagic")


@pytest.mark.parametrize("fingerprint, valid", [
    ({"architecture": "x", "sample": []}, True),
    ({"architecture": "x", "tensors": 3, "sample": [1, 2.5]}, True),
    ({"architecture": 1, "sample": []}, False),
    ({"architecture": "x", "tensors": "3", "sample": []}, False),
    ({"architecture": "x", "tensors": True, "sample": []}, False),
    ({"architecture": "x", "sample": "1"}, False),
    ({"architecture": "x", "sample": [True]}, False),
    ({"architecture": "x", "sample": [float("inf")]}, False),
    ({"architecture": "x", "sample": ["1"]}, False),
    ([], False),
])
def test_fingerprint_validation(fingerprint, valid):
    assert fmt._valid_fingerprint(fingerprint) is valid


@pytest.mark.parametrize("layout, valid", [
    ([{"tensors": ["cross_attn"]}], True),
    ([{"tensors": ["cross_attn", "pooled_output"], "values": {"a": 1}}], True),
    ([], False),
    ({"tensors": ["cross_attn"]}, False),
    (["cross_attn"], False),
    ([{"tensors": "cross_attn"}], False),
    ([{"tensors": ["pooled_output"]}], False),
    ([{"tensors": ["cross_attn", ""]}], False),
    ([{"tensors": ["cross_attn", 3]}], False),
    ([{"tensors": ["cross_attn"], "values": []}], False),
    ([{"tensors": ["cross_attn"]}, {"tensors": ["pooled_output"]}], False),
])
def test_layout_validation(layout, valid):
    assert fmt._valid_layout(layout) is valid


def test_split_tensors_names_the_unexpected_key_and_the_fix():
    assert _problem_and_fix(fmt.split_tensors, {"a": torch.zeros(1), "diffusion_model.x.diff": torch.zeros(1),
                                                "b": torch.zeros(1)}) == (
        "the file has 2 unexpected key(s), e.g. 'a'", EDITED)


# ---------------------------------------------------------------------------------------------------------------
# core/lora.py, core/checkpointing.py

lora = sub("core.lora")
checkpointing = sub("core.checkpointing")


@pytest.mark.parametrize("layer, rank", [
    (torch.nn.Linear(3, 10), 3),  # no more than the input width
    (torch.nn.Linear(10, 2), 2),  # no more than the output width
    (torch.nn.Conv2d(2, 6, 3), 6),  # a kernel's input is channels x kernel (18): the outputs (6) bound it
    (torch.nn.Conv2d(1, 8, 2), 4),  # 1 channel x 2 x 2 kernel: 4
    (torch.nn.Linear(12, 12), 8),
])
def test_adapter_rank_is_bounded_by_the_layers_input_and_output_sizes(layer, rank):
    adapter = lora.attach(torch.nn.Sequential(layer), rank=8, seed=0)["0"]
    assert adapter.rank == rank and adapter.up.shape[1] == rank and adapter.down.shape[0] == rank


def test_adapter_up_is_initialised_like_nn_linear_uniform_within_1_over_sqrt_rank():
    adapter = lora.attach(torch.nn.Sequential(torch.nn.Linear(16, 4000)), rank=4, seed=0)["0"]
    bound = 1 / 4 ** 0.5  # kaiming_uniform_ with a = sqrt(5): 1 / sqrt(fan_in), fan_in = rank
    assert adapter.up.abs().max() <= bound and adapter.up.abs().max() > 0.999 * bound


def test_adapters_live_on_the_layers_device():
    layer = torch.nn.Linear(4, 4, device="meta")
    adapter = lora.attach(torch.nn.Sequential(layer), rank=2, seed=0)["0"]
    assert adapter.up.device.type == "meta" and adapter.down.device.type == "meta"


def test_blocks_are_collected_from_every_container_in_order():
    net = torch.nn.Module()
    net.first = torch.nn.ModuleList([torch.nn.Linear(2, 2), torch.nn.Linear(2, 2)])
    net.second = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.ReLU())
    net.head = torch.nn.Linear(2, 1)
    found = checkpointing.blocks(net)
    assert found == [net.first[0], net.first[1], net.second[0], net.head]


# ---------------------------------------------------------------------------------------------------------------
# core/diffusion.py


def test_mean_loss_is_the_average_over_the_conditioning_entries():
    den = ToyDenoiser()
    g = torch.Generator().manual_seed(11)
    x0, noise, sigma = torch.randn(1, 8, generator=g), torch.randn(3, 8, generator=g), torch.tensor([0.3, 1.0, 2.0])
    a, b = torch.randn(1, 8, generator=g), torch.randn(1, 8, generator=g)
    la, lb = (diffusion.denoising_loss(den, x0, c, noise, sigma) for c in (a, b))
    assert torch.allclose(diffusion.mean_loss(den, x0, [a, b], noise, sigma), (la + lb) / 2)


def test_noise_draws_are_one_by_default_in_the_latents_dtype_with_fp32_noise_levels():
    den = ToyDenoiser()
    x0 = torch.zeros(1, 8, dtype=torch.bfloat16)
    noise, sigma = diffusion.NoiseDraws(den, x0, seed=1).draw()
    assert noise.shape == (1, 8) and sigma.shape == (1,)
    assert noise.dtype == torch.bfloat16 and sigma.dtype == torch.float32
    ref, ref_sigma = diffusion.NoiseDraws(den, torch.zeros(1, 8), seed=1).draw()
    assert torch.equal(noise, ref.bfloat16()) and torch.equal(sigma, ref_sigma)


def test_noise_draws_do_not_depend_on_torchs_default_dtype_and_land_on_the_latents_device():
    den = ToyDenoiser()
    ref, _ = diffusion.NoiseDraws(den, torch.zeros(1, 8), seed=2, batch=3).draw()
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        other, _ = diffusion.NoiseDraws(den, torch.zeros(1, 8), seed=2, batch=3).draw()
    finally:
        torch.set_default_dtype(previous)
    assert torch.equal(other, ref)
    noise, sigma = diffusion.NoiseDraws(den, torch.zeros(1, 8, device="meta"), seed=2, batch=3).draw()
    assert noise.device.type == "meta" and sigma.device.type == "meta" and sigma.dtype == torch.float32


def test_the_clamp_of_a_factor_pair_too_large_for_torch_quantile_uses_an_even_subsample():
    """Over 2^24 values (torch.quantile's limit) a strided subsample estimates the quantile (~1.6 s)."""
    m = torch.randn(1, (1 << 24) + 64, generator=torch.Generator().manual_seed(0))  # rank 1: 1 + 2^24 + 64 values
    up0, down0 = lora.svd_extract(m, 1)
    up, down = lora.svd_extract(m, 1, clamp_quantile=0.99)
    values = torch.cat([up0.flatten(), down0.flatten()])
    exact = values.kthvalue(round(0.99 * (values.numel() - 1)) + 1).values
    hi = down.max()
    assert torch.equal(down, down0.clamp(-hi, hi)) and abs(float(hi / exact) - 1) < 0.01, (hi, exact)


# ---------------------------------------------------------------------------------------------------------------
# demo/shapes_world.py

world = sub("demo.shapes_world")


def test_the_centre_is_the_positions_place_plus_the_jitter_and_the_reader_finds_it():
    scene = world.Scene("red", "square", "left", background=0.5, size=0.15, dx=0.03, dy=-0.02)
    assert world.centre(scene) == pytest.approx((0.27 + 0.03, 0.5 - 0.02))
    cx, cy = world.read(world.render(scene)).centre
    assert cx == pytest.approx(0.30, abs=0.01) and cy == pytest.approx(0.48, abs=0.01)


def test_render_paints_8_bit_colours_and_box_filters_the_edges_without_overshoot():
    import numpy as np

    scene = world.Scene("yellow", "circle", "top", background=0.4, size=0.16, dx=0.0, dy=0.0)
    img = world.render(scene, size=64)
    grey = round(0.4 * 255) / 255
    fill = np.array([round(c * 255) / 255 for c in world.COLOURS["yellow"]], dtype=np.float32)
    assert img.dtype == np.float32 and img.shape == (64, 64, 3)
    assert np.allclose(img[0, 0], grey) and np.allclose(img[int(0.27 * 64), 32], fill)
    low, high = np.minimum(grey, fill), np.maximum(grey, fill)
    assert (img >= low - 1e-6).all() and (img <= high + 1e-6).all()  # a box filter only mixes the two
    edges = ((img > low + 1e-3) & (img < high - 1e-3)).any(axis=2).sum()
    assert edges > 0  # anti-aliased: mixed pixels on the outline


def test_render_batch_stacks_the_renders_in_order():
    import numpy as np

    scenes = world.random_scenes(3, 4, world.ALL_COMBOS)
    batch = world.render_batch(scenes, size=32)
    assert batch.shape == (3, 32, 32, 3) and batch.dtype == np.float32
    assert all(np.array_equal(batch[i], world.render(s, 32)) for i, s in enumerate(scenes))
    assert world.render_batch(scenes).shape == (3, world.SIZE, world.SIZE, 3)


def test_random_scenes_are_seeded_and_can_draw_the_first_combination():
    assert world.random_scenes(20, 3) == world.random_scenes(20, 3)
    assert world.random_scenes(20, 3) != world.random_scenes(20, 4)
    combos = world.ALL_COMBOS[:2]
    picked = {(s.colour, s.shape, s.position) for s in world.random_scenes(30, 0, combos)}
    assert picked == set(combos)


def test_a_sampled_scene_jitters_both_ways_within_the_limit():
    import numpy as np

    rng = np.random.default_rng(0)
    scenes = [world.sample_scene("red", "circle", "left", rng) for _ in range(200)]
    for attr in ("dx", "dy"):
        values = [getattr(s, attr) for s in scenes]
        assert min(values) < -world.JITTER / 2 and max(values) > world.JITTER / 2
        assert all(abs(v) <= world.JITTER for v in values)
    assert world.scene_for_seed("red", "circle", "left", 5).shape == "circle"


def test_reader_accuracy_is_a_fraction_of_400_seeded_scenes_by_default(monkeypatch):
    reads = []
    real = world.random_scenes
    monkeypatch.setattr(world, "random_scenes",
                        lambda n, seed, combos: reads.append((n, seed)) or real(n, seed, combos))
    out = world.reader_accuracy(n=10, seed=1)
    assert all(0 < out[k] <= 1 for k in ("colour", "shape", "position"))
    monkeypatch.setattr(world, "read", lambda image: world.Reading(None, None, None, 0.0, 0.0, (0.5, 0.5)))
    none = world.reader_accuracy(n=10, seed=1)
    assert none["colour"] == none["shape"] == none["position"] == 0.0
    monkeypatch.setattr(world, "render", lambda scene, size=0: None)  # the defaults, without rendering 400 scenes
    world.reader_accuracy()
    assert reads[-1] == (400, 12345)


# ---------------------------------------------------------------------------------------------------------------
# core/training.py, and the rest of core/diffusion.py and the fingerprint


def test_adam_without_a_fused_kernel_falls_back_to_the_plain_one_with_the_same_settings(monkeypatch):
    real = torch.optim.Adam

    def no_fused(params, lr, fused=None):
        if fused:
            raise RuntimeError("no fused kernel here")
        return real(params, lr=lr)

    monkeypatch.setattr(torch.optim, "Adam", no_fused)
    p = torch.zeros(2, requires_grad=True)
    opt = training.adam([p], 0.25)
    assert opt.defaults["lr"] == 0.25 and opt.param_groups[0]["params"] == [p] and not opt.defaults.get("fused")


@pytest.mark.parametrize("rate", [0.0, -0.1, float("inf")])
def test_adam_loop_refuses_a_learning_rate_that_is_not_positive_and_finite(rate):
    p = torch.zeros(2, requires_grad=True)
    with pytest.raises(ValueError, match=rf"^learning_rate must be a positive number, got {rate}$"):
        training.adam_loop([p], lambda s: (p ** 2).sum(), steps=1, learning_rate=rate)
    with pytest.raises(ValueError, match=r"^nothing to optimise: no parameter requires a gradient$"):
        training.adam_loop([torch.zeros(2)], lambda s: p.sum(), steps=1, learning_rate=0.1)


def test_adam_loop_returns_and_reports_each_steps_loss_as_a_float():
    p = torch.ones(2, requires_grad=True)
    seen = []
    losses = training.adam_loop([p], lambda s: (p ** 2).sum(), steps=3, learning_rate=0.1,
                                on_step=lambda step, loss: seen.append((step, loss)))
    assert all(isinstance(v, float) for v in losses) and losses[0] == 2.0 and losses[2] < losses[0]
    assert seen == list(enumerate(losses))


def test_denoising_loss_asks_the_output_scale_for_the_predictions_shape():
    class Shaped(ToyDenoiser):
        def output_scale(self, sigma, like):
            return super().output_scale(sigma, like).view((-1,) + (1,) * (like.ndim - 1))

    x0, noise, sigma = torch.randn(1, 8), torch.randn(2, 8), torch.tensor([0.5, 1.5])
    assert torch.allclose(diffusion.denoising_loss(Shaped(), x0, torch.zeros(1, 8), noise, sigma),
                          diffusion.denoising_loss(ToyDenoiser(), x0, torch.zeros(1, 8), noise, sigma))


def test_fingerprint_samples_one_element_matrices_and_both_of_two():
    shapes = {"a.weight": (1, 1), "b.weight": (2, 2)}
    reads = []
    fpr.fingerprint(shapes, lambda n: reads.append(n) or torch.ones(shapes[n]))
    assert reads == ["a.weight", "b.weight"]
