"""Imagic Auto Eta: sample the edit at several eta from one fine-tune, score each with the frozen model, pick one."""
from __future__ import annotations

import json
import math

import torch

import comfy.samplers
from comfy_api.latest import io, ui

from ..core import defaults
from ..core.auto_eta import (
    DEFAULT_RULE,
    RULES,
    choose,
    eta_candidates,
    rule_help,
    score_edits,
    score_table,
    scores_json,
)
from ..core.grid import labelled_row, pil_to_tensor, tensor_to_pils
from . import starts
from .comfy_model import check_channels, check_width, clean_latent, context_width
from .conditioning_io import model_entries
from .errors import fail
from .families import check_family, family_name
from .interpolate_conditioning import interpolated
from .training_run import frozen_denoiser

NODE_ID = "ImagicAutoEta"
ANY_START = "every start"
START_TOOLTIP = ("Where each candidate's sampling starts: noise (the paper's: an empty latent), photo (the input's "
                 "latent noised to strength, as KSampler's denoise) or inversion (the input run backwards to "
                 f"strength's noise level by the fine-tuned model with e_opt). '{ANY_START}': every eta from each "
                 "of the three, scored together. Measured on the shapes benchmark (bench/RESULTS.md).")


def score(model, latent: dict, outputs: list[torch.Tensor], etas: list[float], target, optimized, seed, draws):
    """``core.auto_eta.score_edits`` on the frozen ``model`` (ComfyUI's latents converted to the model's space)."""
    with torch.inference_mode(False), torch.no_grad():
        denoiser = frozen_denoiser(model)
        device = model.load_device
        x_input = clean_latent(denoiser.base, latent, device)
        xs = [clean_latent(denoiser.base, {"samples": x}, device) for x in outputs]
        return score_edits(denoiser, x_input, xs, etas, model_entries(target, device),
                           model_entries(optimized, device), seed=seed, draws=draws)


def _width(conditioning) -> int | None:
    return conditioning[0][0].shape[-1] if conditioning else None


def check_fit(model, finetuned_model, conditionings: dict, latent: dict, vae) -> None:
    """Refuse, before any sampling, inputs that do not belong together: a text encoding, model or VAE of another
    family, a latent that is no photo (constant, e.g. all zeros: an Empty Latent Image), or the two models swapped."""
    family, tuned_family = family_name(model), family_name(finetuned_model)
    if tuned_family != family and _width(conditionings["target"]) == context_width(finetuned_model) \
            != context_width(model):  # the scoring model is the odd one out
        raise fail(NODE_ID, f"model is a {family} model but finetuned_model and the target conditioning are "
                            f"{tuned_family}", "connect the base model the fine-tune was trained from (the one "
                                               "given to Imagic Optimize Embedding) to model")
    check_family(NODE_ID, model, conditionings["target"])
    for name, conditioning in conditionings.items():
        check_width(NODE_ID, model, name, conditioning, f"the {name} text")
    if tuned_family != family:
        raise fail(NODE_ID, f"finetuned_model is a {tuned_family} model but model is {family}",
                   "connect Imagic Finetune UNet's model output, trained from this model, to finetuned_model")
    if not finetuned_model.patches:
        swapped = " while model carries one: the two inputs are swapped" if model.patches else ""
        raise fail(NODE_ID, f"finetuned_model carries no fine-tune (no weight patches){swapped}",
                   "connect the base model to model and Imagic Finetune UNet's model output (or the saved fine-tune "
                   "through a LoRA loader) to finetuned_model")
    samples = latent["samples"]
    check_channels(NODE_ID, model, "latent", samples.shape[1])
    check_channels(NODE_ID, model, "vae", getattr(vae, "latent_channels", None))
    if samples.numel() and bool(samples.max() == samples.min()):
        what = ("all zeros (an Empty Latent Image" if not torch.any(samples)
                else f"constant (every value {samples.flatten()[0].item():g}")
        raise fail(NODE_ID, f"the latent is {what}), not the input photo",
                   "connect the VAE Encode output of the input photo (the latent Imagic trained on)")


def _range_error(eta_min: float, eta_max: float):
    """What is wrong with the eta range, if anything: typed (told at /prompt time) or linked (when the node runs)."""
    if eta_min > eta_max:
        return fail(NODE_ID, f"eta_min {eta_min} is larger than eta_max {eta_max}", "swap them")
    return None


class ImagicAutoEta(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id=NODE_ID,
            display_name="Imagic Auto Eta",
            category="Imagic",
            description=(
                "Imagic step C with the eta picked for you. Samples the edit at several eta from one fine-tune "
                "(ComfyUI's KSampler), scores each output with the frozen model only: how much better the target "
                "text explains it than e_opt does (the model's own denoising loss on fixed noise draws), against "
                "its distance to the input. Returns the chosen edit, a labelled grid of all, the chosen eta and "
                "the scores. No external model."),
            inputs=[
                io.Model.Input("model", tooltip="The frozen base model (the one given to Imagic Optimize Embedding); "
                                                "scores are computed with it."),
                io.Model.Input("finetuned_model", tooltip="The fine-tuned model (Imagic Finetune UNet's model "
                                                          "output); the edits are sampled with it."),
                io.Conditioning.Input("optimized", tooltip="e_opt, from Imagic Optimize Embedding."),
                io.Conditioning.Input("target", tooltip="e_tgt, the target text encoding."),
                io.Conditioning.Input("negative", tooltip="The sampler's negative conditioning (e.g. an empty "
                                                          "text)."),
                io.Latent.Input("latent", tooltip="The input photo's latent (the one Imagic trained on); the edits "
                                                  "are sampled at its size and compared with it."),
                io.Vae.Input("vae", tooltip="The checkpoint's VAE, to decode the edits."),
                io.Float.Input("eta_min", default=defaults.AUTO_ETA["eta_min"], min=-10.0, max=10.0, step=0.05,
                               tooltip="Smallest eta tried (0 = reconstruct the input)."),
                io.Float.Input("eta_max", default=defaults.AUTO_ETA["eta_max"], min=-10.0, max=10.0, step=0.05,
                               tooltip="Largest eta tried (1 = the target text only)."),
                io.Int.Input("count", default=defaults.AUTO_ETA["count"], min=1, max=32,
                             tooltip="How many etas, evenly spaced from eta_min to eta_max (one sampling each)."),
                io.Combo.Input("rule", options=list(RULES), default=DEFAULT_RULE,
                               tooltip="How the scores choose: " + "; ".join(f"{k}: {rule_help(k)}" for k in RULES)
                               + f". Default {DEFAULT_RULE}: measured best on the shapes benchmark "
                                 "(bench/RESULTS.md)."),
                io.Int.Input("seed", default=0, min=0, max=0xFFFFFFFFFFFFFFFF, control_after_generate=True,
                             tooltip="Sampler seed (the same for every eta) and seed of the scoring draws."),
                io.Int.Input("steps", default=50, min=1, max=10000, tooltip="Sampler steps."),
                io.Float.Input("cfg", default=7.5, min=0.0, max=100.0, step=0.1, round=0.01,
                               tooltip="Classifier-free guidance scale."),
                io.Combo.Input("sampler_name", options=comfy.samplers.KSampler.SAMPLERS, default="ddim",
                               tooltip="Sampler, as in KSampler."),
                io.Combo.Input("scheduler", options=comfy.samplers.KSampler.SCHEDULERS, default="ddim_uniform",
                               tooltip="Scheduler, as in KSampler."),
                io.Int.Input("score_draws", default=32, min=1, max=1024, optional=True,
                             tooltip="Noise draws per score (the same draws for every eta); more is steadier "
                                     "and slower."),
                io.Combo.Input("start", options=[*starts.KINDS, ANY_START], default=defaults.START, optional=True,
                               tooltip=START_TOOLTIP),
                io.Float.Input("strength", default=defaults.STRENGTH, min=0.05, max=1.0, step=0.05, optional=True,
                               tooltip="How far the photo start is noised, or the inversion runs back (1 = all the "
                                       "way to pure noise). Not used by the noise start."),
            ],
            outputs=[
                io.Image.Output(display_name="image", tooltip="The chosen edit, decoded."),
                io.Latent.Output(display_name="latent", tooltip="The chosen edit's latent."),
                io.Image.Output(display_name="grid", tooltip="input | every eta tried, labelled with eta and text "
                                                             "gain; the chosen one marked with *."),
                io.Float.Output(display_name="eta", tooltip="The chosen eta (e.g. for Imagic Save Finetune's "
                                                            "suggested_eta)."),
                io.String.Output(display_name="scores", tooltip="Every eta's scores and the choice, as JSON."),
            ],
        )

    @classmethod
    def validate_inputs(cls, eta_min=None, eta_max=None) -> bool | str:
        """At /prompt time, before the training nodes run: the eta range as typed (linked values: when running)."""
        for name, value in (("eta_min", eta_min), ("eta_max", eta_max)):
            if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))
                                      or not math.isfinite(value)):
                return str(fail(NODE_ID, f"{name} is {value!r}, not a finite number",
                                f"set {name} to a number (eta 0 = the input, 1 = the target text)"))
        error = None if eta_min is None or eta_max is None else _range_error(eta_min, eta_max)
        return str(error) if error else True

    @classmethod
    def execute(cls, model, finetuned_model, optimized, target, negative, latent, vae, eta_min, eta_max, count,
                rule, seed, steps, cfg, sampler_name, scheduler, score_draws=32, start=defaults.START,
                strength=defaults.STRENGTH) -> io.NodeOutput:
        samples = latent.get("samples") if isinstance(latent, dict) else None
        if samples is None or samples.shape[0] != 1:
            raise fail(NODE_ID, "the latent must hold exactly one image (the Imagic input)",
                       "connect the VAE Encode output of the input photo")
        if error := _range_error(eta_min, eta_max):
            raise error
        check_fit(model, finetuned_model, {"target": target, "optimized": optimized, "negative": negative}, latent,
                  vae)
        candidates = [(where, eta) for where in (starts.KINDS if start == ANY_START else (start,))
                      for eta in eta_candidates(eta_min, eta_max, count)]
        outputs = [starts.sample(where, strength, finetuned_model, interpolated(optimized, target, eta), negative,
                                 optimized, latent, seed, steps, cfg, sampler_name, scheduler)
                   for where, eta in candidates]
        scores = score(model, latent, outputs, [eta for _, eta in candidates], target, optimized, seed, score_draws)
        chosen = choose(scores, rule)
        images = vae.decode(torch.cat(outputs))
        images = images.reshape((-1,) + tuple(images.shape[-3:]))
        tiles = tensor_to_pils(torch.cat([vae.decode(samples).reshape((-1,) + tuple(images.shape[-3:])), images]))
        named = start == ANY_START  # the start in each label when there are several
        labels = ["input"] + [f"{'*' if i == chosen else ''}{candidates[i][0] + ' ' if named else ''}"
                              f"eta {s.eta:.2f} {s.text_gain:+.3f}" for i, s in enumerate(scores)]
        grid = pil_to_tensor(labelled_row(tiles, labels))
        report = {**scores_json(scores, chosen, rule), "start": candidates[chosen][0], "strength": strength,
                  "starts": [where for where, _ in candidates]}
        shown = {**ui.PreviewImage(grid, cls=cls).as_dict(), "text": (score_table(scores, chosen),),
                 "imagic_auto_eta": [report]}  # the chart on the node (js/imagic_auto_eta_chart.js)
        return io.NodeOutput(images[chosen:chosen + 1], {"samples": outputs[chosen]}, grid, scores[chosen].eta,
                             json.dumps(report), ui=shown)
