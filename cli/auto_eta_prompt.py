"""``--eta auto``: the edit workflow with Imagic Auto Eta in place of Interpolate Conditioning + the start's sampling
(cli/start_graph.py) + VAE Decode.

Whatever took the decoded edit (Save Image, a labelled grid) takes the chosen edit instead; a second Save Image
writes the grid of every eta tried. The sampler settings, the negative prompt and the VAE are the workflow's, and
so is the sampler's model (the fine-tune, through Imagic Centred Noise where the workflow has it).
"""
from __future__ import annotations

import copy

from ..core import defaults
from ..core.auto_eta import DEFAULT_RULE
from . import start_graph
from .edit_prompt import PromptError, nodes_of, one

AUTO_ETA = "ImagicAutoEta"


def _fed_by(prompt: dict, source: str, class_type: str) -> str:
    """The one ``class_type`` node with an input linked to ``source``."""
    found = [n for n in nodes_of(prompt, class_type)
             if any(isinstance(v, list) and len(v) == 2 and str(v[0]) == source
                    for v in prompt[n]["inputs"].values())]
    if len(found) != 1:
        raise PromptError(f"--eta auto needs exactly one {class_type} fed by node {source}, the workflow has "
                          f"{len(found)}")
    return found[0]


def use_auto_eta(prompt: dict, prefix: str) -> dict:
    """A copy of ``prompt`` that samples Imagic Auto Eta's default etas from the workflow's start and keeps the
    one it chooses."""
    out = copy.deepcopy(prompt)
    optimize = one(out, "ImagicOptimizeEmbedding")
    one(out, "ImagicFinetuneUNet")  # exactly one fine-tune: the sampler's model comes from it
    mix = one(out, "ImagicInterpolateConditioning")
    try:
        found = start_graph.find(out)
    except ValueError as e:
        raise PromptError(f"--eta auto: {e}") from e
    sampler, s, start = found.node, found.sampling, found.start
    decode = _fed_by(out, sampler, "VAEDecode")
    o = out[optimize]["inputs"]
    node = str(max(int(k) for k in out if k.isdigit()) + 1)
    out[node] = {"class_type": AUTO_ETA, "_meta": {"title": "Imagic Auto Eta"}, "inputs": {
        "model": o["model"], "finetuned_model": found.links["model"], "optimized": [optimize, 0],
        "target": o["conditioning"], "negative": found.links["negative"], "latent": o["latent"],
        "vae": out[decode]["inputs"]["vae"], **defaults.AUTO_ETA,
        "rule": DEFAULT_RULE, "seed": s.seed, "steps": s.steps, "cfg": s.cfg,
        "sampler_name": s.sampler_name, "scheduler": s.scheduler, "start": start.kind,
        "strength": start.strength}}
    # the decoded edit -> the chosen image; its latent -> latent; the eta Interpolate output -> the chosen eta
    moved = {(decode, 0): [node, 0], (sampler, 0): [node, 1], (mix, 1): [node, 3]}
    for other in out.values():
        for name, value in other["inputs"].items():
            if isinstance(value, list) and len(value) == 2 and (str(value[0]), value[1]) in moved:
                other["inputs"][name] = list(moved[(str(value[0]), value[1])])
    out = start_graph.without_start(out, found)
    for gone in (mix, decode):
        del out[gone]
    for saver in nodes_of(out, "ImagicSaveFinetune"):
        out[saver]["inputs"]["suggested_eta"] = [node, 3]  # the chosen eta
    out[str(int(node) + 1)] = {"class_type": "SaveImage",
                               "inputs": {"images": [node, 2], "filename_prefix": f"{prefix}_grid"}}
    return out


def score_table(outputs: dict) -> str | None:
    """The score table Imagic Auto Eta showed (its UI text), from the executor's UI outputs."""
    for node_output in outputs.values():
        text = node_output.get("text")
        if text:
            return text[0]
    return None
