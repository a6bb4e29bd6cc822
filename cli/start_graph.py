"""Where Imagic's sampling starts, as stock ComfyUI nodes in an API-format prompt (issue 19).

One builder for the headless edit (``cli/edit.py --start``), the benchmark (``bench/edit_quality.py``) and the
tests; ``nodes/starts.py`` does the same inside Imagic Auto Eta. The starts:

* ``noise`` (the paper's): KSampler from an Empty Latent Image, denoise 1;
* ``photo``: KSampler from the input's VAE Encode output, denoise = strength (as SDEdit);
* ``inversion``: BasicScheduler (denoise = strength) -> FlipSigmas -> SamplerCustom (euler, no noise, cfg 1,
  e_opt) runs the input's latent backwards to that noise level with the fine-tuned model; SamplerCustom (no
  noise) samples the edit forward from there with the same sigmas.
"""
from __future__ import annotations

from dataclasses import dataclass

from ..core import defaults

INVERSION_SAMPLER = "euler"  # nodes/starts.py's: the deterministic first-order step


@dataclass(frozen=True)
class Start:
    """A start and its strength (how far the photo is noised or inverted; 1 = pure noise). ``guided``: the
    inversion runs at the sampler's cfg against the negative instead of cfg 1 (measured worse; the benchmark's)."""
    kind: str = defaults.START
    strength: float = defaults.STRENGTH
    guided: bool = False

    def __post_init__(self):
        if self.kind not in defaults.STARTS:
            raise ValueError(f"unknown start {self.kind!r}; expected one of {', '.join(defaults.STARTS)}")
        if not 0.0 < self.strength <= 1.0:
            raise ValueError(f"strength {self.strength:g} is outside (0, 1]")

    @classmethod
    def parse(cls, text: str) -> Start:
        """``noise``, ``photo:0.8``, ``inversion``, ``inversion:0.8``, ``inversion_cfg[:S]`` (guided)."""
        kind, _, strength = text.partition(":")
        guided = kind == "inversion_cfg"
        return cls("inversion" if guided else kind, float(strength) if strength else 1.0, guided)

    @property
    def label(self) -> str:
        """'' for the paper's start, else e.g. 'photo 0.8' (the benchmark's row labels)."""
        if self.kind == "noise":
            return ""
        return f"{'inversion (guided)' if self.guided else self.kind} {self.strength:g}"


@dataclass(frozen=True)
class Sampling:
    """The sampler settings of the edit (as KSampler's)."""
    seed: int
    steps: int
    cfg: float
    sampler_name: str
    scheduler: str
    finish: str | None = None  # a second sampler for the last ``finish_steps`` steps (KSamplerAdvanced pair)
    finish_steps: int = 0
    centred: bool = False  # Imagic Centred Noise on the model first (the start noise without its channel means)
    low_frequencies: int = 0  # ... and without its coarsest waves (the node's input)


def _finished(prompt: dict, s: Sampling, latent, denoise: float, *, model, positive, negative, prefix: str) -> str:
    """KSampler's sampling (``denoise`` of ``s.steps``) as two stock KSamplerAdvanced nodes: ``s.sampler_name`` up
    to the last ``s.finish_steps`` steps, ``s.finish`` for those (the same sigmas and added noise as KSampler)."""
    total = s.steps if denoise >= 1.0 else int(s.steps / denoise)
    first, split = total - s.steps, total - min(s.finish_steps, s.steps)
    common = {"model": model, "noise_seed": s.seed, "steps": total, "cfg": s.cfg, "scheduler": s.scheduler,
              "positive": positive, "negative": negative}
    prompt[f"{prefix}k"] = {"class_type": "KSamplerAdvanced", "inputs": {
        **common, "add_noise": "enable", "sampler_name": s.sampler_name, "latent_image": latent,
        "start_at_step": first, "end_at_step": split, "return_with_leftover_noise": "enable"}}
    prompt[f"{prefix}t"] = {"class_type": "KSamplerAdvanced", "inputs": {
        **common, "add_noise": "disable", "sampler_name": s.finish, "latent_image": [f"{prefix}k", 0],
        "start_at_step": split, "end_at_step": 10000, "return_with_leftover_noise": "disable"}}
    return f"{prefix}t"


def add_start(prompt: dict, start: Start, sampling: Sampling, *, model, positive, negative, optimized, photo,
              empty, prefix: str) -> str:
    """Add to ``prompt`` the stock nodes that sample the edit from ``start`` (ids ``prefix`` + a letter) and return
    the id of the node whose output 0 is the edit's latent. ``model`` is the fine-tuned model, ``positive`` the
    interpolated embedding, ``optimized`` e_opt, ``photo`` the input's latent, ``empty`` an empty latent of its
    size (links: [node id, output])."""
    s = sampling
    if s.centred:
        prompt[f"{prefix}n"] = {"class_type": "ImagicCentredNoise",
                                "inputs": {"model": model, "low_frequencies": s.low_frequencies}}
        model = [f"{prefix}n", 0]
    if start.kind in ("noise", "photo"):
        latent, denoise = (empty, 1.0) if start.kind == "noise" else (photo, start.strength)
        if s.finish and s.finish_steps:
            return _finished(prompt, s, latent, denoise, model=model, positive=positive, negative=negative,
                             prefix=prefix)
        prompt[f"{prefix}k"] = {"class_type": "KSampler", "inputs": {
            "model": model, "positive": positive, "negative": negative, "latent_image": latent, "seed": s.seed,
            "steps": s.steps, "cfg": s.cfg, "sampler_name": s.sampler_name, "scheduler": s.scheduler,
            "denoise": denoise}}
        return f"{prefix}k"
    prompt[f"{prefix}s"] = {"class_type": "BasicScheduler", "inputs": {
        "model": model, "scheduler": s.scheduler, "steps": s.steps, "denoise": start.strength}}
    prompt[f"{prefix}f"] = {"class_type": "FlipSigmas", "inputs": {"sigmas": [f"{prefix}s", 0]}}
    prompt[f"{prefix}e"] = {"class_type": "KSamplerSelect", "inputs": {"sampler_name": INVERSION_SAMPLER}}
    prompt[f"{prefix}i"] = {"class_type": "SamplerCustom", "inputs": {
        "model": model, "add_noise": False, "noise_seed": s.seed, "cfg": s.cfg if start.guided else 1.0,
        "positive": optimized, "negative": negative, "sampler": [f"{prefix}e", 0], "sigmas": [f"{prefix}f", 0],
        "latent_image": photo}}
    prompt[f"{prefix}a"] = {"class_type": "KSamplerSelect", "inputs": {"sampler_name": s.sampler_name}}
    prompt[f"{prefix}o"] = {"class_type": "SamplerCustom", "inputs": {
        "model": model, "add_noise": False, "noise_seed": s.seed, "cfg": s.cfg, "positive": positive,
        "negative": negative, "sampler": [f"{prefix}a", 0], "sigmas": [f"{prefix}s", 0],
        "latent_image": [f"{prefix}i", 0]}}
    return f"{prefix}o"


# ---------------------------------------------------------------------------------------------------------------
# A workflow's start: found, and replaced (``cli/edit.py --start``, ``--eta auto``).

SAMPLERS = ("KSampler", "SamplerCustom")


def _link(value) -> str | None:
    return str(value[0]) if isinstance(value, list) and len(value) == 2 else None


def _only(prompt: dict, class_type: str) -> str:
    found = [k for k, v in prompt.items() if v["class_type"] == class_type]
    if len(found) != 1:
        raise ValueError(f"the workflow needs exactly one {class_type} node, it has {len(found)}")
    return found[0]


@dataclass(frozen=True)
class EditSampling:
    """How a workflow samples the edit: the node whose output 0 is the edit's latent, every node of that start
    (``nodes``, the ones a new start replaces), the start, the sampler settings and the links it takes."""
    node: str
    nodes: tuple
    start: Start
    sampling: Sampling
    links: dict  # model, positive, negative, optimized, photo, empty (None: no Empty Latent Image)


def find(prompt: dict) -> EditSampling:
    """The edit's sampling in ``prompt``: the KSampler or SamplerCustom that takes Imagic Interpolate
    Conditioning's output as its positive (noise, photo or inversion, as ``add_start`` builds them)."""
    mix, optimize = _only(prompt, "ImagicInterpolateConditioning"), _only(prompt, "ImagicOptimizeEmbedding")
    found = [k for k, v in prompt.items() if v["class_type"] in SAMPLERS and _link(v["inputs"].get("positive")) == mix]
    if len(found) != 1:
        raise ValueError(f"the workflow needs exactly one sampler fed by Imagic Interpolate Conditioning, it has "
                         f"{len(found)}")
    node = found[0]
    i = prompt[node]["inputs"]
    photo = prompt[optimize]["inputs"]["latent"]
    empties = [k for k, v in prompt.items() if v["class_type"] == "EmptyLatentImage"]
    links = {"model": i["model"], "positive": i["positive"], "negative": i["negative"], "optimized": [optimize, 0],
             "photo": photo, "empty": [empties[0], 0] if len(empties) == 1 else None}
    if prompt[node]["class_type"] == "KSampler":
        sampling = Sampling(i["seed"], i["steps"], i["cfg"], i["sampler_name"], i["scheduler"])
        source = _link(i["latent_image"])
        kind = "noise" if source is not None and prompt[source]["class_type"] == "EmptyLatentImage" else "photo"
        start = Start(kind, 1.0 if kind == "noise" else float(i["denoise"]))
        return EditSampling(node, (node,), start, sampling, links)
    inversion, schedule, chooser = _link(i["latent_image"]), _link(i["sigmas"]), _link(i["sampler"])
    if inversion is None or prompt[inversion]["class_type"] != "SamplerCustom" or schedule is None \
            or prompt[schedule]["class_type"] != "BasicScheduler":
        raise ValueError("the edit's SamplerCustom is not an inversion start (BasicScheduler, and a SamplerCustom "
                         "inverting the photo)")
    s = prompt[schedule]["inputs"]
    sampling = Sampling(i["noise_seed"], s["steps"], i["cfg"], prompt[chooser]["inputs"]["sampler_name"],
                        s["scheduler"])
    inv = prompt[inversion]["inputs"]
    start = Start("inversion", float(s["denoise"]), guided=inv["cfg"] != 1.0)
    nodes = (node, inversion, schedule, chooser, _link(inv["sigmas"]), _link(inv["sampler"]))
    return EditSampling(node, tuple(dict.fromkeys(nodes)), start, sampling, links)


def without_start(prompt: dict, found: EditSampling) -> dict:
    """``prompt`` without the nodes of ``found``'s start that nothing else uses."""
    out = {k: v for k, v in prompt.items() if k not in found.nodes}
    used = {_link(v) for node in out.values() for v in node["inputs"].values()}
    return {**out, **{k: prompt[k] for k in found.nodes if k in used and k != found.node}}


def set_start(prompt: dict, start: Start, empty_size: tuple[int, int] | None = None) -> dict:
    """A copy of ``prompt`` that samples the edit from ``start`` (the workflow's sampler settings kept); whatever
    took the old start's latent takes the new one's. A noise start without an Empty Latent Image in the workflow
    gets one of ``empty_size`` (width, height)."""
    import copy

    out = copy.deepcopy(prompt)
    found = find(out)
    links = dict(found.links)
    out = without_start(out, found)
    if start.kind == "noise" and links["empty"] is None:
        if empty_size is None:
            raise ValueError("a noise start needs the size of the empty latent")
        out[f"{found.node}z"] = {"class_type": "EmptyLatentImage", "inputs": {
            "width": empty_size[0], "height": empty_size[1], "batch_size": 1}}
        links["empty"] = [f"{found.node}z", 0]
    new = add_start(out, start, found.sampling, prefix=found.node, **links)
    for node in out.values():
        for name, value in node["inputs"].items():
            if _link(value) == found.node and value[1] == 0 and node is not out[new]:
                node["inputs"][name] = [new, 0]
    return out
