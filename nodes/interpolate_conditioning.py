"""Imagic step C: e = eta * e_tgt + (1 - eta) * e_opt (eta outside [0, 1] extrapolates)."""
from __future__ import annotations

import torch

from comfy_api.latest import io

from ..core import defaults
from ..core.conditioning import interpolate
from .errors import fail

NODE_ID = "ImagicInterpolateConditioning"


def _pairs(optimized: list, target: list):
    if not optimized or not target:
        raise fail(NODE_ID, "a conditioning input is an empty list", "connect both e_opt and the target text encoding")
    if len(optimized) != len(target) and 1 not in (len(optimized), len(target)):
        raise fail(NODE_ID, f"optimized has {len(optimized)} entries and target {len(target)}",
                   "encode the target text the same way it was encoded for Imagic Optimize Embedding")
    n = max(len(optimized), len(target))
    return [(optimized[min(i, len(optimized) - 1)], target[min(i, len(target) - 1)]) for i in range(n)]


def _mix(name: str, t: torch.Tensor, o: torch.Tensor, eta: float) -> torch.Tensor:
    if t.shape[-1:] != o.shape[-1:]:
        raise fail(NODE_ID, f"{name} widths differ: target is {t.shape[-1]} wide, optimized {o.shape[-1]} (text "
                            "encoders of different model families)",
                   "encode the target text with the CLIP of the checkpoint e_opt was made with")
    if t.shape != o.shape:
        raise fail(NODE_ID, f"{name} shapes differ: target {tuple(t.shape)} vs optimized {tuple(o.shape)} "
                            "(a longer target text gives more tokens)",
                   "use a target text of the same token length (75 tokens or fewer), or re-run Imagic Optimize "
                   "Embedding with this text")
    return interpolate(t, o, eta).to(t.dtype)


class ImagicInterpolateConditioning(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id=NODE_ID,
            display_name="Imagic Interpolate Conditioning",
            category="Imagic",
            description=(
                "Imagic step C. Mixes the optimised embedding and the target text: eta * target + (1 - eta) * "
                "optimized, on the token embeddings and on pooled_output. eta 0 reconstructs the input image, eta 1 "
                "follows the text; the paper uses 0.6-0.8 sampling from an empty latent. Values outside [0, 1] "
                "extrapolate. Other keys come from the target. Where sampling starts matters as much (issue 19): "
                f"the default eta ({defaults.ETA:g}) was measured sampling from the photo's latent (KSampler on "
                f"the photo's VAE Encode, denoise {defaults.STRENGTH:g})."),
            inputs=[
                io.Conditioning.Input("optimized", tooltip="e_opt, from Imagic Optimize Embedding."),
                io.Conditioning.Input("target", tooltip="e_tgt, the target text encoding (it may be a new text of the "
                                                        "same token length)."),
                io.Float.Input("eta", default=defaults.ETA, min=-10.0, max=10.0, step=0.01,
                               tooltip="0 = reconstruct the input, 1 = the target text, above 1 goes past it. "
                                       f"Default {defaults.ETA:g} with the KSampler starting from the photo's latent "
                                       f"(denoise {defaults.STRENGTH:g}); the paper: 0.6-0.8 from an empty latent."),
            ],
            outputs=[io.Conditioning.Output(tooltip="eta * target + (1 - eta) * optimized, for the sampler's positive "
                                                    "input."),
                     io.Float.Output(display_name="eta", tooltip="The eta used, e.g. for Imagic Labelled Grid's eta "
                                                                 "input: a label written '{eta}' then follows this "
                                                                 "widget.")],
        )

    @classmethod
    def execute(cls, optimized, target, eta) -> io.NodeOutput:
        return io.NodeOutput(interpolated(optimized, target, eta), eta)


def interpolated(optimized: list, target: list, eta: float) -> list:
    """The CONDITIONING eta * target + (1 - eta) * optimized (also used by Imagic Auto Eta)."""
    out = []
    for (o_tensor, o_extras), (t_tensor, t_extras) in _pairs(optimized, target):
        extras = t_extras.copy()
        tokens = _mix("token embedding", t_tensor, o_tensor, eta)  # first: it names the cause best
        o_pooled, t_pooled = o_extras.get("pooled_output"), t_extras.get("pooled_output")
        if isinstance(o_pooled, torch.Tensor) and isinstance(t_pooled, torch.Tensor):
            extras["pooled_output"] = _mix("pooled_output", t_pooled, o_pooled, eta)
        out.append([tokens, extras])
    return out
